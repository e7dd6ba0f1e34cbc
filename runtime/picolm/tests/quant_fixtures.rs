//! The scalar dequantizers against gguf-py's reference (`gguf.quants.dequantize`) on the same
//! random block bytes, and the Q8_0 activation quantizer against `gguf.quants.quantize`.
//! Fixtures: runtime/picolm/testdata/quant/, written by tools/quant-fixtures.py.
//!
//! Dequantization must be bit-identical: both sides decode f16 exactly and perform the same
//! f32 operations in the same order (`d * q`, `(d * sc) * q - dmin * m`, ...), each correctly
//! rounded, so there is no legitimate source of a 1-ulp difference.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use picolm::quant::{GgmlType, dequantize, quantize_activation};
use serde_json::Value;
use std::path::PathBuf;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/quant")
}

fn read(name: &str) -> Vec<u8> {
    let p = dir().join(name);
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (run tools/quant-fixtures.py)", p.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn manifest() -> Value {
    serde_json::from_slice(&read("manifest.json")).expect("manifest.json is JSON")
}

fn type_named(name: &str) -> GgmlType {
    GgmlType::ALL
        .into_iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("type {name}"))
}

#[test]
fn dequantizers_match_gguf_py_bit_for_bit() {
    let m = manifest();
    let entries = m["dequantize"].as_array().expect("dequantize entries");
    let mut seen = Vec::new();
    for e in entries {
        let ty = type_named(e["type"].as_str().unwrap());
        let n = e["n"].as_u64().unwrap() as usize;
        let src = read(e["blocks"].as_str().unwrap());
        let want = f32s(&read(e["values"].as_str().unwrap()));
        assert_eq!(want.len(), n, "{ty}");
        let mut got = vec![0.0f32; n];
        dequantize(ty, &src, &mut got).unwrap_or_else(|err| panic!("{ty}: {err}"));
        let mismatches: Vec<String> = got
            .iter()
            .zip(&want)
            .enumerate()
            .filter(|(_, (g, w))| g.to_bits() != w.to_bits())
            .take(5)
            .map(|(i, (g, w))| format!("[{i}] {g:e} vs {w:e}"))
            .collect();
        assert!(
            mismatches.is_empty(),
            "{ty}: differs from gguf-py: {mismatches:?}"
        );
        seen.push(ty);
    }
    // Every format picolm supports, plus Q2_K/Q3_K, is covered by the fixtures.
    for ty in GgmlType::ALL.into_iter().filter(|t| t.is_supported()) {
        assert!(seen.contains(&ty), "no fixture for {ty}");
    }
}

#[test]
fn q8_0_quantizer_matches_gguf_py_up_to_rounding_ties() {
    let m = manifest();
    let q = &m["quantize_q8_0"];
    let n = q["n"].as_u64().unwrap() as usize;
    let x = f32s(&read(q["input"].as_str().unwrap()));
    let want = read(q["output"].as_str().unwrap());
    assert_eq!(x.len(), n);
    let mut got = vec![0u8; GgmlType::Q8_0.row_bytes(n).unwrap()];
    quantize_activation(GgmlType::Q8_0, &x, &mut got).unwrap();
    assert_eq!(got.len(), want.len());

    // gguf-py reproduces llama.cpp's portable reference (x · (1/d), round half away from
    // zero); picolm reproduces llama.cpp's x86 path (x · (127/amax), round half to even).
    // Scales must be identical; a quant may differ by one only where x/d lies within a few
    // ulps of a .5 boundary, which we check from the input.
    let mut differing = 0;
    for (b, ((g, w), x)) in got
        .chunks_exact(34)
        .zip(want.chunks_exact(34))
        .zip(x.chunks_exact(32))
        .enumerate()
    {
        assert_eq!(g[..2], w[..2], "block {b}: scale differs");
        let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for j in 0..32 {
            let (gq, wq) = (g[2 + j] as i8, w[2 + j] as i8);
            if gq == wq {
                continue;
            }
            let steps = f64::from(x[j]) * 127.0 / f64::from(amax);
            let frac = (steps.abs() - steps.abs().floor() - 0.5).abs();
            assert!(
                (i32::from(gq) - i32::from(wq)).abs() == 1 && frac < 1e-5,
                "block {b}[{j}]: x={} → {gq}, gguf-py {wq} (x/d = {steps})",
                x[j]
            );
            differing += 1;
        }
    }
    assert!(
        differing <= 4,
        "{differing} quants differ: more than rounding ties explain"
    );
}
