//! Encrypted models (`.enc`) through picolm in every decryption mode: the same logits and
//! greedy tokens as the plaintext model (streaming mode stages each layer through the
//! decrypting source), tampering refused before any token, a chunk edited after load failing
//! the forward pass with an error that names it, no plaintext file outside file mode, and the
//! resident set of streaming decryption near one layer. Then the same through the real binary
//! (`keygen`, `encrypt`, `run --decrypt ...`).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic loudly

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use a3s_power::encrypted::{self, DecryptionMode, OpenOptions};
use picolm::{GgufFile, Model, Session};
use power_attest::model_crypt::{self, HEADER_LEN, ModelKey, StaticKeyProvider, TAG_LEN};

mod support;

const MODES: [DecryptionMode; 3] = [
    DecryptionMode::File,
    DecryptionMode::Memory,
    DecryptionMode::Streaming,
];
const PROMPT: [u32; 7] = [1, 15, 300, 42, 7, 99, 250];

/// The first position's logits and `n` greedy tokens after `PROMPT`.
fn greedy(model: &Model, n: usize) -> picolm::Result<(Vec<f32>, Vec<u32>)> {
    let mut s = Session::new(model, 64)?;
    let logits = s.eval(&PROMPT)?.to_vec();
    let mut t = picolm::sampler::argmax(&logits);
    let mut out = vec![t];
    for _ in 1..n {
        t = picolm::sampler::argmax(s.eval(&[t])?);
        out.push(t);
    }
    Ok((logits, out))
}

fn options(mode: DecryptionMode, tmp: &Path) -> OpenOptions {
    OpenOptions {
        mode,
        pin: None,
        signing_key: None,
        tmp_dir: tmp.to_path_buf(),
    }
}

fn encrypt(src: &Path, dst: &Path, key: &ModelKey, chunk: u32) -> [u8; 32] {
    model_crypt::encrypt_file(src, dst, key, chunk).unwrap().1
}

/// Files under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(files_under(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn every_mode_gives_the_plaintext_models_logits_and_tokens() {
    let d = support::scratch("enc-modes");
    let tmp = d.join("tmp");
    let key = ModelKey::generate();
    let keys = StaticKeyProvider::new(key.clone());
    for (preset, ty) in [("tiny-qwen2", "q8_0"), ("tiny-llama", "q4_k_m")] {
        let src = support::model(preset, ty);
        let plain = Model::load(Arc::new(GgufFile::open(&src).unwrap())).unwrap();
        let (want_logits, want) = greedy(&plain, 12).unwrap();
        let (l2, t2) = greedy(&plain.with_layer_streaming(true), 12).unwrap();
        assert!(l2 == want_logits && t2 == want, "mmap layer streaming");
        // 4 KiB chunks: every layer starts and ends inside a chunk; 1 MiB: a few chunks.
        for chunk in [4096u32, model_crypt::DEFAULT_CHUNK] {
            let enc = d.join(format!("{preset}-{ty}-{chunk}.gguf.enc"));
            let digest = encrypt(&src, &enc, &key, chunk);
            for mode in MODES {
                let mut o = options(mode, &tmp);
                o.pin = Some(digest);
                let opened = encrypted::open_path(&enc, &keys, &o).unwrap();
                assert_eq!(opened.plaintext_sha256, digest);
                let model = Model::load(Arc::new(opened.file)).unwrap();
                assert_eq!(model.is_staged(), mode == DecryptionMode::Streaming);
                assert_eq!(model.layer_streaming, mode == DecryptionMode::Streaming);
                let (logits, toks) = greedy(&model, 12).unwrap();
                // Same bytes, same arithmetic: bit-identical logits, not merely close ones.
                assert!(
                    logits == want_logits,
                    "{preset}-{ty} chunk {chunk} {mode:?}: logits differ"
                );
                assert_eq!(toks, want, "{preset}-{ty} chunk {chunk} {mode:?}");
                let in_tmp = files_under(&tmp);
                match mode {
                    DecryptionMode::File => assert_eq!(in_tmp.len(), 1, "{in_tmp:?}"),
                    _ => assert!(in_tmp.is_empty(), "{mode:?} wrote {in_tmp:?}"),
                }
                drop(model);
                drop(opened.temp);
                assert!(files_under(&tmp).is_empty(), "temporary plaintext removed");
            }
        }
    }
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn tampered_files_are_refused_before_any_token() {
    let d = support::scratch("enc-tamper");
    let tmp = d.join("tmp");
    let key = ModelKey::generate();
    let keys = StaticKeyProvider::new(key.clone());
    let src = support::model("tiny-qwen2", "q8_0");
    let enc = d.join("m.gguf.enc");
    let digest = encrypt(&src, &enc, &key, 65536);
    let orig = std::fs::read(&enc).unwrap();
    let chunk = 65536 + TAG_LEN;
    let mut swapped = orig.clone();
    swapped[HEADER_LEN + chunk..HEADER_LEN + 2 * chunk]
        .copy_from_slice(&orig[HEADER_LEN + 2 * chunk..HEADER_LEN + 3 * chunk]);
    swapped[HEADER_LEN + 2 * chunk..HEADER_LEN + 3 * chunk]
        .copy_from_slice(&orig[HEADER_LEN + chunk..HEADER_LEN + 2 * chunk]);
    let mut flipped = orig.clone();
    flipped[orig.len() - 100] ^= 1;
    let wrong = StaticKeyProvider::new(ModelKey::generate());
    /// What was done to the file, the bytes, the key, the pin, what the error must say.
    type Case<'a> = (
        &'a str,
        Vec<u8>,
        &'a StaticKeyProvider,
        Option<[u8; 32]>,
        &'a str,
    );
    let cases: Vec<Case<'_>> = vec![
        ("wrong key", orig.clone(), &wrong, None, "needs key id"),
        (
            "truncated",
            orig[..orig.len() - 1000].to_vec(),
            &keys,
            None,
            "truncated or extended",
        ),
        (
            "reordered chunks",
            swapped,
            &keys,
            None,
            "chunk 1 of 45 (file offset 65616, plaintext bytes 65536..131072) fails authentication",
        ),
        ("last chunk edited", flipped, &keys, None, "chunk 44 of 45"),
        (
            "pin mismatch",
            orig.clone(),
            &keys,
            Some([7; 32]),
            "differs from the pinned",
        ),
    ];
    assert_eq!(
        (orig.len() - HEADER_LEN).div_ceil(chunk),
        45,
        "the test model's chunk count changed; update the expected messages"
    );
    for (what, bytes, keys, pin, expect) in cases {
        let p = d.join("t.gguf.enc");
        std::fs::write(&p, &bytes).unwrap();
        for mode in MODES {
            let mut o = options(mode, &tmp);
            o.pin = pin;
            let e = encrypted::open_path(&p, keys, &o)
                .expect_err(what)
                .to_string();
            assert!(
                e.contains(expect) && e.contains("t.gguf.enc"),
                "{what} {mode:?}: {e}"
            );
            assert!(files_under(&tmp).is_empty(), "{what} {mode:?} left a file");
        }
    }
    // The untouched file with the right pin still opens.
    let mut o = options(DecryptionMode::Streaming, &tmp);
    o.pin = Some(digest);
    assert!(encrypted::open_path(&enc, &keys, &o).is_ok());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_chunk_edited_after_load_fails_the_forward_pass_naming_it() {
    let d = support::scratch("enc-late");
    let key = ModelKey::generate();
    let keys = StaticKeyProvider::new(key.clone());
    let src = support::model("tiny-qwen2", "q8_0");
    let enc = d.join("m.gguf.enc");
    let cs = 4096u64;
    encrypt(&src, &enc, &key, cs as u32);
    let opened =
        encrypted::open_path(&enc, &keys, &options(DecryptionMode::Streaming, &d)).unwrap();
    let model = Model::load(Arc::new(opened.file)).unwrap();
    let (_, before) = greedy(&model, 3).unwrap();
    assert_eq!(before.len(), 3);
    // Edit a ciphertext byte inside layer 1's attention weights, in place (same inode).
    let i = model.layers[1].wq.offset as u64 / cs + 1;
    let mut bytes = std::fs::read(&enc).unwrap();
    bytes[HEADER_LEN + (i * (cs + TAG_LEN as u64)) as usize + 7] ^= 0x40;
    std::fs::write(&enc, &bytes).unwrap();
    let e = greedy(&model, 3).expect_err("tampered chunk").to_string();
    assert!(
        e.starts_with("model source: ") && e.contains(&format!("chunk {i} of ")),
        "{e}"
    );
    assert!(
        e.contains("m.gguf.enc") && e.contains("fails authentication"),
        "{e}"
    );
    std::fs::remove_dir_all(&d).ok();
}

// --- peak RSS of streaming decryption (child process per mode, as in picolm's streaming_rss) ---

const MIB: u64 = 1 << 20;

fn vm_hwm() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace()
        .nth(1)
        .unwrap()
        .parse::<u64>()
        .unwrap()
        * 1024
}

#[test]
fn rss_child() {
    let (Ok(mode), Ok(enc), Ok(key)) = (
        std::env::var("A3S_RSS_CHILD"),
        std::env::var("A3S_RSS_ENC"),
        std::env::var("A3S_RSS_KEY"),
    ) else {
        return; // only meaningful when re-executed by the parent test below
    };
    let keys = StaticKeyProvider::new(ModelKey::from_hex("key", &key).unwrap());
    let mode = if mode == "memory" {
        DecryptionMode::Memory
    } else {
        DecryptionMode::Streaming
    };
    let opened = encrypted::open_path(
        Path::new(&enc),
        &keys,
        &options(mode, Path::new("/nonexistent")),
    )
    .unwrap();
    let model = Model::load(Arc::new(opened.file)).unwrap();
    let mut s = Session::new(&model, 512).unwrap();
    let prompt: Vec<u32> = (0..64).map(|i| 100 + i * 37).collect();
    let mut t = picolm::sampler::argmax(s.eval(&prompt).unwrap());
    for _ in 0..16 {
        t = picolm::sampler::argmax(s.eval(&[t]).unwrap());
    }
    println!("PEAK_RSS={} TOKEN={t}", vm_hwm());
}

fn measure(mode: &str, enc: &Path, key: &ModelKey) -> (u64, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "rss_child", "--nocapture", "--test-threads=1"])
        .env("A3S_RSS_CHILD", mode)
        .env("A3S_RSS_ENC", enc)
        .env("A3S_RSS_KEY", key.to_hex().as_str())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{mode} child failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find_map(|l| l.find("PEAK_RSS=").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no PEAK_RSS in {text}"));
    let mut parts = line.split_whitespace();
    let rss = parts.next().unwrap()["PEAK_RSS=".len()..].parse().unwrap();
    (rss, parts.next().unwrap().to_string())
}

#[test]
fn streaming_decryption_keeps_about_one_layer_resident() {
    let d = support::scratch("enc-rss");
    let src = support::model("small-llama", "q4_k_m");
    let key = ModelKey::generate();
    let enc = d.join("small.gguf.enc");
    encrypt(&src, &enc, &key, model_crypt::DEFAULT_CHUNK);
    let plain = Model::load(Arc::new(GgufFile::open(&src).unwrap())).unwrap();
    let layer = plain
        .layers
        .iter()
        .map(|l| l.weights().iter().map(|w| w.size as u64).sum::<u64>())
        .max()
        .unwrap();
    let kv = plain.config.kv_bytes(512) as u64;
    let size = std::fs::metadata(&src).unwrap().len();
    drop(plain);
    let (memory, tok_a) = measure("memory", &enc, &key);
    let (streaming, tok_b) = measure("streaming", &enc, &key);
    assert_eq!(
        tok_a, tok_b,
        "streaming decryption must not change the result"
    );
    eprintln!(
        "model {} MiB, largest layer {} MiB, KV {} MiB: peak RSS memory mode {} MiB, streaming {} MiB",
        size / MIB,
        layer / MIB,
        kv / MIB,
        memory / MIB,
        streaming / MIB
    );
    assert!(memory > size * 9 / 10, "memory mode holds the plaintext");
    // One staged layer (or head slice), the KV cache, scratch, the runtime: as for mmap
    // streaming (picolm's streaming_rss), plus a chunk-sized edge buffer.
    let bound = layer + kv + 48 * MIB + model_crypt::DEFAULT_CHUNK as u64;
    assert!(
        streaming <= bound,
        "streaming peak {} MiB exceeds {} MiB",
        streaming / MIB,
        bound / MIB
    );
    std::fs::remove_dir_all(&d).ok();
}

// --- the real binary ---

#[test]
fn cli_encrypt_then_run_in_every_mode_matches_plaintext() {
    let d = support::scratch("enc-cli");
    let src = support::model("tiny-qwen2", "q8_0");
    let key = d.join("model.key");
    let (ok, _, err) = support::run(&["keygen", "--kind", "model", "--out", key.to_str().unwrap()]);
    assert!(ok, "{err}");
    let enc = d.join("m.gguf.enc");
    let (ok, out, err) = support::run(&[
        "encrypt",
        src.to_str().unwrap(),
        "--key",
        key.to_str().unwrap(),
        "--out",
        enc.to_str().unwrap(),
        "--chunk-size",
        "8192",
    ]);
    assert!(ok, "{err}");
    let plain_digest = format!(
        "sha256:{}",
        hex::encode(power_attest::model_seal::sha256_file(&src).unwrap())
    );
    assert_eq!(
        out.trim(),
        plain_digest,
        "encrypt prints the plaintext digest"
    );
    let args = |model: &Path| -> Vec<String> {
        [
            "run",
            "--model",
            model.to_str().unwrap(),
            "--prompt",
            "Confidential computing is",
            "-n",
            "16",
            "-t",
            "0",
            "--ignore-eos",
        ]
        .map(String::from)
        .to_vec()
    };
    let as_str = |v: &[String]| v.iter().map(String::as_str).collect::<Vec<_>>().join(" ");
    let (ok, want, err) = support::run(&args(&src).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(ok && !want.trim().is_empty(), "{err}");
    for mode in ["memory", "streaming", "file"] {
        let mut a = args(&enc);
        a.extend(["--key", key.to_str().unwrap(), "--decrypt", mode].map(String::from));
        let (ok, got, err) = support::run(&a.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(ok, "{}: {err}", as_str(&a));
        assert_eq!(got, want, "--decrypt {mode}");
        assert!(err.contains("generated 16 tokens"), "{err}");
    }
    // A wrong key: a clear error, nothing generated.
    let wrong = d.join("wrong.key");
    assert!(
        support::run(&[
            "keygen",
            "--kind",
            "model",
            "--out",
            wrong.to_str().unwrap()
        ])
        .0
    );
    let mut a = args(&enc);
    a.extend(["--key", wrong.to_str().unwrap(), "--decrypt", "streaming"].map(String::from));
    let (ok, out, err) = support::run(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && out.is_empty(), "{out}");
    assert!(
        err.contains("m.gguf.enc") && err.contains("needs key id"),
        "{err}"
    );
    // An encrypted model without --key.
    let (ok, out, err) = support::run(&args(&enc).iter().map(String::as_str).collect::<Vec<_>>());
    assert!(!ok && out.is_empty() && err.contains("pass --key"), "{err}");
    std::fs::remove_dir_all(&d).ok();
}
