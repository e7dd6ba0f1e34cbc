//! picolm against llama.cpp on the same GGUF files.
//!
//! The fixtures in `testdata/oracle/` were written by `tools/oracle.py` from llama.cpp (through
//! llama-cpp-python) on models made by `tools/gen-model.py`. This test regenerates the same
//! models (byte-identical: their SHA-256 is checked against the fixture), runs picolm on the
//! same token ids and compares:
//!
//! - logits at every prompt position (a strided sample and the top 8) and the full last row,
//!   within the tolerance below;
//! - 64 greedy steps, teacher-forced with llama.cpp's tokens: picolm's argmax must equal
//!   llama.cpp's at every step where llama.cpp's top-2 margin exceeds the tolerance;
//! - the prompt's token ids, from picolm's own tokenizer.
//!
//! Tolerance. Both engines quantize activations to the same `vec_dot_type` with the same
//! rounding and dot the same quantized weights, so the remaining differences are float
//! summation order (≈1e-6 relative per dot), llama.cpp's f16 rounding of the attention
//! probabilities before its K·Q·V product (2^-11 relative per probability), its SIMD `expf`
//! and SiLU, and the rare activation that sits on a quantization rounding boundary and moves
//! by one step. Through two layers onto logits with a standard deviation of ~5, measured
//! worst cases are listed in `TOLERANCE`; the bound is about 3× the worst observed difference
//! and well below the typical top-2 margin (~0.5), so a real error (wrong RoPE pairing, a
//! wrong bias, a mis-decoded block) fails by orders of magnitude.
//!
//! `PICOLM_ORACLE_DIR` points the test at fresh llama.cpp outputs instead of the checked-in
//! ones (CI does this after running tools/oracle.py); `PICOLM_TEST_MODELS` at a model cache.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failure should panic loudly

use std::path::{Path, PathBuf};
use std::sync::Arc;

mod support;

use picolm::tokenizer::Tokenizer;
use picolm::{GgufFile, Model, Session};
use serde_json::Value;
use sha2::{Digest, Sha256};

fn fixtures_dir() -> PathBuf {
    std::env::var_os("PICOLM_ORACLE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/oracle"))
}

fn sha256_file(p: &Path) -> String {
    let bytes = std::fs::read(p).unwrap();
    hex(&Sha256::digest(&bytes))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Worst allowed |picolm - llama.cpp| on a logit, by weight format (see the module docs).
fn tolerance(ty: &str) -> f32 {
    match ty {
        "f32" => 0.02,
        "f16" => 0.05,
        "bf16" => 0.2,
        _ => 0.6,
    }
}

/// Before the first rounding flip the engines agree to float precision: the first positions
/// must match this closely (they exercise every kernel, the KV cache and RoPE).
fn leading_tolerance(ty: &str) -> f32 {
    match ty {
        "f16" => 0.01,
        "bf16" => 0.05,
        _ => 1e-3,
    }
}
const LEADING_POSITIONS: usize = 1;

struct Outcome {
    max_diff: f32,
    close_positions: usize,
    n_positions: usize,
    greedy_checked: usize,
    greedy_skipped: usize,
}

fn check(preset: &str, ty: &str) -> Outcome {
    let fixture_path = fixtures_dir().join(format!("{preset}-{ty}.json"));
    let fx: Value = serde_json::from_slice(
        &std::fs::read(&fixture_path).unwrap_or_else(|e| panic!("{}: {e}", fixture_path.display())),
    )
    .unwrap();
    let model_path = support::model_path(preset, ty);
    let digest = sha256_file(&model_path);
    assert_eq!(
        digest,
        fx["model_sha256"].as_str().unwrap(),
        "{}: the generated model differs from the one llama.cpp measured; regenerate the fixtures with tools/oracle.py",
        model_path.display()
    );
    let file = Arc::new(GgufFile::open(&model_path).unwrap());
    let model = Model::load(file.clone()).unwrap();
    let nv = model.config.n_vocab;
    assert_eq!(nv as u64, fx["n_vocab"].as_u64().unwrap());
    let tokens: Vec<u32> = fx["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();

    // Our tokenizer must produce llama.cpp's ids for the prompt.
    let tok = Tokenizer::from_metadata(file.metadata()).unwrap();
    let ours = tok
        .encode(fx["prompt"].as_str().unwrap(), true, false)
        .unwrap();
    assert_eq!(
        ours, tokens,
        "{preset}-{ty}: prompt token ids differ from llama.cpp's"
    );

    let tol = tolerance(ty);
    let mut session = Session::new(&model, 256).unwrap();
    let all = session.eval_all(&tokens).unwrap();
    let mut max_diff = 0f32;
    let mut close_positions = 0;
    let mut worst = String::new();
    let mut note = |d: f32, what: String| {
        if d > max_diff {
            max_diff = d;
            worst = what;
        }
    };
    for (p, pos) in fx["positions"].as_array().unwrap().iter().enumerate() {
        let row = &all[p * nv..(p + 1) * nv];
        for (j, v) in pos["strided"].as_array().unwrap().iter().enumerate() {
            let id = j * 16;
            note(
                (row[id] - v.as_f64().unwrap() as f32).abs(),
                format!("position {p}, token {id}"),
            );
        }
        let mut m = 0f32;
        for (j, v) in pos["strided"].as_array().unwrap().iter().enumerate() {
            m = m.max((row[j * 16] - v.as_f64().unwrap() as f32).abs());
        }
        if m <= leading_tolerance(ty) {
            close_positions += 1;
        }
        if p < LEADING_POSITIONS {
            assert!(
                m <= leading_tolerance(ty),
                "{preset}-{ty}: position {p} differs by {m} (leading positions must agree within {})",
                leading_tolerance(ty)
            );
        }
        for t in pos["top"].as_array().unwrap() {
            let id = t[0].as_u64().unwrap() as usize;
            note(
                (row[id] - t[1].as_f64().unwrap() as f32).abs(),
                format!("position {p}, top token {id}"),
            );
        }
    }
    let last = &all[(tokens.len() - 1) * nv..];
    for (id, v) in fx["last_logits"].as_array().unwrap().iter().enumerate() {
        note(
            (last[id] - v.as_f64().unwrap() as f32).abs(),
            format!("last position, token {id}"),
        );
    }
    assert!(
        max_diff <= tol,
        "{preset}-{ty}: logits differ from llama.cpp by {max_diff} at {worst} (tolerance {tol})"
    );

    // Greedy, teacher-forced with llama.cpp's tokens.
    let mut logits = last.to_vec();
    let (mut checked, mut skipped) = (0, 0);
    for (step, g) in fx["greedy"].as_array().unwrap().iter().enumerate() {
        let want = g["token"].as_u64().unwrap() as u32;
        let margin = g["margin"].as_f64().unwrap() as f32;
        let got = picolm::sampler::argmax(&logits);
        if margin > 2.0 * tol {
            assert_eq!(
                got, want,
                "{preset}-{ty}: greedy step {step}: picolm chose {got}, llama.cpp {want} (margin {margin})"
            );
            let d = (logits[want as usize] - g["top1"].as_f64().unwrap() as f32).abs();
            assert!(
                d <= tol,
                "{preset}-{ty}: greedy step {step}: top-1 logit differs by {d}"
            );
            checked += 1;
        } else {
            skipped += 1;
        }
        logits = session.eval(&[want]).unwrap().to_vec();
    }
    assert!(
        checked >= 16,
        "{preset}-{ty}: only {checked} of 64 greedy steps had a decisive margin"
    );
    Outcome {
        max_diff,
        close_positions,
        n_positions: tokens.len(),
        greedy_checked: checked,
        greedy_skipped: skipped,
    }
}

const TYPES: &[&str] = &[
    "f32", "f16", "bf16", "q4_0", "q4_1", "q5_0", "q5_1", "q8_0", "q4_k", "q5_k", "q6_k", "q4_k_m",
];

fn run_preset(preset: &str) {
    let mut failures = vec![];
    for ty in TYPES {
        match std::panic::catch_unwind(|| check(preset, ty)) {
            Ok(o) => eprintln!(
                "{preset}-{ty}: max |Δlogit| {:.5} (tolerance {}); {}/{} positions within {}; greedy {} steps agree, {} skipped for margin",
                o.max_diff,
                tolerance(ty),
                o.close_positions,
                o.n_positions,
                leading_tolerance(ty),
                o.greedy_checked,
                o.greedy_skipped
            ),
            Err(e) => failures.push(format!(
                "{preset}-{ty}: {}",
                e.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "oracle failures:\n{}",
        failures.join("\n")
    );
}

#[test]
fn llama_matches_llama_cpp() {
    run_preset("tiny-llama");
}

#[test]
fn qwen2_matches_llama_cpp() {
    run_preset("tiny-qwen2");
}
