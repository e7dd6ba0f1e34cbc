//! `a3s-power run` and `inspect` as a user runs them: the real binary on a generated model.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_a3s-power"))
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn model(preset: &str, ty: &str) -> PathBuf {
    let dir = std::env::var_os("PICOLM_TEST_MODELS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("models"));
    let path = dir.join(format!("{preset}-{ty}.gguf"));
    if !path.exists() {
        let ok = Command::new("python3")
            .arg(repo().join("tools/gen-model.py"))
            .args(["--preset", preset, "--types", ty, "--out"])
            .arg(&dir)
            .output()
            .expect("python3 tools/gen-model.py (pip install -r tools/requirements.txt)")
            .status
            .success();
        assert!(ok, "generating {preset}-{ty} failed");
    }
    path
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = bin().args(args).output().expect("run a3s-power");
    (
        out.status.success(),
        String::from_utf8(out.stdout).expect("utf-8 stdout"),
        String::from_utf8(out.stderr).expect("utf-8 stderr"),
    )
}

#[test]
fn greedy_text_is_llama_cpps_continuation() {
    // llama.cpp's greedy tokens for the oracle prompt, detokenized by llama.cpp's vocabulary
    // rules, must be what `a3s-power run -t 0` prints (f32: the engines agree to 1e-3).
    let fx: Value = serde_json::from_slice(
        &std::fs::read(repo().join("runtime/picolm/testdata/oracle/tiny-llama-f32.json")).unwrap(),
    )
    .unwrap();
    let m = model("tiny-llama", "f32");
    let file = picolm::GgufFile::open(&m).unwrap();
    let tok = picolm::tokenizer::Tokenizer::from_metadata(file.metadata()).unwrap();
    let ids: Vec<u32> = fx["greedy"].as_array().unwrap()[..12]
        .iter()
        .map(|g| g["token"].as_u64().unwrap() as u32)
        .collect();
    let expected = tok.decode(&ids, false).unwrap();
    let prompt = fx["prompt"].as_str().unwrap();
    let (ok, out, err) = run(&[
        "run",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        prompt,
        "-n",
        "12",
        "-t",
        "0",
        "--ignore-eos",
    ]);
    assert!(ok, "{err}");
    assert_eq!(
        out.trim_end_matches('\n'),
        expected,
        "stdout must carry exactly the generated text"
    );
    assert!(err.contains("generated 12 tokens"), "{err}");
}

#[test]
fn seeded_sampling_is_reproducible_and_ignore_eos_counts_exactly() {
    let m = model("tiny-qwen2", "q4_k_m");
    let args = [
        "run",
        "--model",
        m.to_str().unwrap(),
        "--chat",
        "--prompt",
        "Hello there",
        "-n",
        "20",
        "--seed",
        "11",
        "--temperature",
        "1.0",
        "--ignore-eos",
    ];
    let (ok1, out1, err1) = run(&args);
    let (ok2, out2, _) = run(&args);
    assert!(ok1 && ok2, "{err1}");
    assert_eq!(out1, out2);
    assert!(err1.contains("generated 20 tokens"), "{err1}");
    let mut other = args;
    assert_eq!(other[8], "--seed");
    other[9] = "12";
    let (ok3, out3, _) = run(&other);
    assert!(ok3);
    assert_ne!(out1, out3, "a different seed should give different text");
}

#[test]
fn errors_name_the_problem() {
    let (ok, out, err) = run(&["run", "--model", "/nonexistent/model.gguf", "--prompt", "x"]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("/nonexistent/model.gguf"), "{err}");

    let dir = tempdir();
    let bad = dir.join("bad.gguf");
    std::fs::write(
        &bad,
        b"GGUF\x03\x00\x00\x00\xff\xff\xff\xff\xff\xff\xff\xff",
    )
    .unwrap();
    let (ok, _, err) = run(&["inspect", bad.to_str().unwrap()]);
    assert!(!ok);
    assert!(
        err.contains("byte offset") && err.contains("bad.gguf"),
        "{err}"
    );

    let m = model("tiny-llama", "q8_0");
    let (ok, _, err) = run(&[
        "run",
        "--model",
        m.to_str().unwrap(),
        "--prompt",
        "x",
        "--top-p",
        "0",
    ]);
    assert!(!ok && err.contains("top_p"), "{err}");
}

#[test]
fn inspect_describes_the_model() {
    let m = model("tiny-qwen2", "q4_k_m");
    let (ok, out, err) = run(&["inspect", m.to_str().unwrap()]);
    assert!(ok, "{err}");
    for want in [
        "architecture:  qwen2",
        "n_embd 256",
        "heads 4 (kv 2)",
        "Q4_K",
        "tied to token_embd",
        "Bpe (qwen2)",
        "KV cache",
    ] {
        assert!(out.contains(want), "inspect output lacks {want:?}:\n{out}");
    }
}

fn tempdir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("cli-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
