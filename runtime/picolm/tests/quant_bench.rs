//! Micro-benchmark of the fused dot kernels, per format and ISA, over a weight matrix larger
//! than the last-level cache slice a core gets. Not a timed test; run with
//!
//!     cargo test --release -p picolm --test quant_bench -- --ignored --nocapture
//!
//! `QUANT_BENCH=Q4_K,Q8_0` limits the run to those formats; `QUANT_BENCH_KB=512` shrinks the
//! matrix from 48 MiB to one that stays in L2.
//!
//! Columns (GB/s of weight bytes; higher is better):
//! * `dot`: `vec_dot` over every row with one activation row (decode's mat-vec).
//! * `mrows1`, `mrows4`: `vec_dot_multi_rows` (decode of 1 and of 4 sequences) over 64 weight
//!   rows per call; the `mrows4` figure is weight bytes × 4 ÷ time (1× `mrows1` = no gain).
//! * `dot×8`, `multi4`, `multi8`: 8 activation rows (prefill), as `vec_dot` looped over the
//!   8 per weight row, or `vec_dot_multi` tiles of 4 or 8; the figure is weight bytes × 8 ÷
//!   time, so it compares with `dot` as "how much faster than decoding each row 8 times".

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use picolm::quant::{
    GgmlType, Isa, PreparedActs, available_isas, prepare_acts_isa, quantize_activation,
    vec_dot_isa, vec_dot_multi_isa, vec_dot_multi_rows_isa,
};
use std::hint::black_box;
use std::time::{Duration, Instant};

/// Runs `pass` (one sweep over the matrix) for at least 300 ms; returns seconds per pass.
fn time(mut pass: impl FnMut() -> f32) -> f64 {
    let mut passes = 0u32;
    let mut sink = 0.0f32;
    let start = Instant::now();
    while passes < 2 || start.elapsed() < Duration::from_millis(300) {
        sink += pass();
        passes += 1;
    }
    black_box(sink);
    start.elapsed().as_secs_f64() / f64::from(passes)
}

fn bench(ty: GgmlType, isa: Isa, n: usize, w: &[u8], acts: &[u8]) -> [f64; 6] {
    let row = ty.row_bytes(n).unwrap();
    let ab = ty.vec_dot_type().row_bytes(n).unwrap();
    let bytes = w.len() as f64;
    let gbs = |secs: f64, acts: f64| bytes * acts / secs / 1e9;
    let dot = time(|| {
        w.chunks_exact(row)
            .map(|r| vec_dot_isa(isa, ty, n, r, &acts[..ab]).unwrap())
            .sum()
    });
    let mrows = |m: usize| {
        const ROWS: usize = 64;
        let mut prepared = PreparedActs::default();
        prepare_acts_isa(isa, ty, n, acts, ab, m, &mut prepared).unwrap();
        let mut out = vec![0.0f32; ROWS * m];
        time(|| {
            let mut s = 0.0;
            for r in w.chunks_exact(ROWS * row) {
                vec_dot_multi_rows_isa(isa, ty, n, r, row, ROWS, acts, ab, m, &prepared, &mut out)
                    .unwrap();
                s += out[0];
            }
            s
        })
    };
    let (mrows1, mrows4) = (mrows(1), mrows(4));
    let dot8 = time(|| {
        let mut s = 0.0;
        for r in w.chunks_exact(row) {
            for a in acts.chunks_exact(ab) {
                s += vec_dot_isa(isa, ty, n, r, a).unwrap();
            }
        }
        s
    });
    let multi = |m: usize| {
        time(|| {
            let mut out = [0.0f32; 8];
            let mut s = 0.0;
            for r in w.chunks_exact(row) {
                for a in acts.chunks_exact(m * ab) {
                    vec_dot_multi_isa(isa, ty, n, r, a, ab, &mut out[..m]).unwrap();
                    s += out[0];
                }
            }
            s
        })
    };
    let (m4, m8) = (multi(4), multi(8));
    [
        gbs(dot, 1.0),
        gbs(mrows1, 1.0),
        gbs(mrows4, 4.0),
        gbs(dot8, 8.0),
        gbs(m4, 8.0),
        gbs(m8, 8.0),
    ]
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn vec_dot_throughput() {
    use GgmlType::*;
    let n = 2048; // llama1b-like hidden size (896 for Q5_0/Q8_0 in the qwen0.5b-like mix)
    // `QUANT_BENCH_KB` sets the matrix size: the default streams from DRAM; a few hundred KB
    // stay in L2 and show the kernels' compute speed.
    let matrix_bytes = std::env::var("QUANT_BENCH_KB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(48 << 10)
        << 10;
    println!(
        "{:<6} {:>6} {:>5} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "format", "isa", "n", "dot", "mrows1", "mrows4", "dot×8", "multi4", "multi8"
    );
    for (ty, n) in [
        (Q4_K, n),
        (Q5_K, n),
        (Q6_K, n),
        (Q8_0, n),
        (Q8_0, 896),
        (Q5_0, 896),
        (Q4_0, n),
        (Q4_1, n),
        (Q5_1, n),
        (F16, n),
        (BF16, n),
        (F32, n),
    ] {
        if let Ok(only) = std::env::var("QUANT_BENCH")
            && !only.split(',').any(|t| t.trim() == ty.name())
        {
            continue;
        }
        let row = ty.row_bytes(n).unwrap();
        let rows = (matrix_bytes / row).max(64) / 64 * 64;
        // Deterministic bytes; f16 scale fields come out finite enough for timing purposes.
        let w: Vec<u8> = (0..rows * row)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0x3B)
            .collect();
        let vdt = ty.vec_dot_type();
        let ab = vdt.row_bytes(n).unwrap();
        let mut acts = vec![0u8; 8 * ab];
        for (j, a) in acts.chunks_exact_mut(ab).enumerate() {
            let x: Vec<f32> = (0..n)
                .map(|i| (((i + 13 * j) * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            quantize_activation(vdt, &x, a).unwrap();
        }
        for isa in available_isas() {
            let r = bench(ty, isa, n, &w, &acts);
            println!(
                "{:<6} {:>6} {:>5} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
                ty.name(),
                isa.name(),
                n,
                r[0],
                r[1],
                r[2],
                r[3],
                r[4],
                r[5]
            );
        }
    }
}
