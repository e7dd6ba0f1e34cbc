//! Layer streaming keeps the resident set near one layer plus the KV cache, whatever the
//! file size. Each mode runs in a fresh child process (this test binary re-executed), so its
//! peak RSS (VmHWM) is its own.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic loudly

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

mod support;

use picolm::{GgufFile, Model, Session};

const MIB: u64 = 1 << 20;

fn model_path() -> PathBuf {
    support::model_path("small-llama", "q4_k_m")
}

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

const N_CTX: usize = 512;

/// The workload measured in the child: a 64-token prompt and 32 decoded tokens.
#[test]
fn child_workload() {
    let Ok(mode) = std::env::var("PICOLM_RSS_CHILD") else {
        return; // only meaningful when re-executed by the parent test below
    };
    let file = Arc::new(GgufFile::open(model_path()).unwrap());
    let model = Model::load(file)
        .unwrap()
        .with_layer_streaming(mode == "streaming");
    let mut s = Session::new(&model, N_CTX).unwrap();
    let prompt: Vec<u32> = (0..64).map(|i| 100 + i * 37).collect();
    let mut t = picolm::sampler::argmax(s.eval(&prompt).unwrap());
    for _ in 0..32 {
        t = picolm::sampler::argmax(s.eval(&[t]).unwrap());
    }
    println!("PEAK_RSS={} TOKEN={t}", vm_hwm());
}

fn measure(mode: &str) -> (u64, String) {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_workload",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("PICOLM_RSS_CHILD", mode)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{mode} child failed: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The harness may print "test child_workload ... " on the same line first.
    let line = text
        .lines()
        .find_map(|l| l.find("PEAK_RSS=").map(|i| &l[i..]))
        .unwrap_or_else(|| panic!("no PEAK_RSS in {text}"));
    let mut parts = line.split_whitespace();
    let rss = parts.next().unwrap()["PEAK_RSS=".len()..].parse().unwrap();
    (rss, parts.next().unwrap().to_string())
}

#[test]
fn streaming_peak_rss_is_about_one_layer() {
    let path = model_path();
    let file_size = std::fs::metadata(&path).unwrap().len();
    let file = Arc::new(GgufFile::open(&path).unwrap());
    let model = Model::load(file).unwrap();
    let layer = model
        .layers
        .iter()
        .map(|l| l.weights().iter().map(|w| w.size as u64).sum::<u64>())
        .max()
        .unwrap();
    let kv = model.config.kv_bytes(N_CTX) as u64;
    drop(model);

    let (resident, tok_a) = measure("resident");
    let (streaming, tok_b) = measure("streaming");
    assert_eq!(tok_a, tok_b, "streaming must not change the result");
    eprintln!(
        "file {} MiB, largest layer {} MiB, KV {} MiB: peak RSS resident {} MiB, streaming {} MiB",
        file_size / MIB,
        layer / MIB,
        kv / MIB,
        resident / MIB,
        streaming / MIB
    );
    // Resident mode maps the whole file; streaming keeps about one layer, the KV cache, the
    // scratch buffers and the runtime (bounded here by a 48 MiB allowance).
    assert!(
        resident > file_size * 9 / 10,
        "resident mode should hold the file ({resident} vs {file_size})"
    );
    let bound = layer + kv + 48 * MIB;
    assert!(
        streaming <= bound,
        "streaming peak {} MiB exceeds one layer + KV + 48 MiB = {} MiB",
        streaming / MIB,
        bound / MIB
    );
    // What streaming saves, against the same workload in the same binary: both peaks include
    // the test executable's own mapped pages, which vary with the page cache (a freshly linked
    // binary is mapped in larger folios), so the saving is the robust measure.
    assert!(
        resident.saturating_sub(streaming) > file_size / 2,
        "streaming peak {} MiB saves less than half the file ({} MiB) over resident {} MiB",
        streaming / MIB,
        file_size / MIB,
        resident / MIB
    );
}
