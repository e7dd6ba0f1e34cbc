//! Micro-benchmark of the fused dot kernels: weight bytes streamed per second, per format and
//! ISA, over a matrix larger than the last-level cache slice a core gets (a mat-vec in decode).
//! Not a timed test; run with
//!
//!     cargo test --release -p picolm --test quant_bench -- --ignored --nocapture

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use picolm::quant::{GgmlType, available_isas, quantize_activation, vec_dot_isa};
use std::hint::black_box;
use std::time::{Duration, Instant};

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn vec_dot_throughput() {
    use GgmlType::*;
    let n = 4096; // a 1B-class model's hidden size
    let matrix_bytes = 64 << 20;
    println!(
        "{:<6} {:>8} {:>10} {:>12}",
        "format", "isa", "GB/s", "ns/row"
    );
    for ty in [
        Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K, F16, BF16, F32,
    ] {
        let row = ty.row_bytes(n).unwrap();
        let rows = (matrix_bytes / row).max(1);
        // Deterministic bytes; f16 scale fields come out finite enough for timing purposes.
        let w: Vec<u8> = (0..rows * row)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8 & 0x3B)
            .collect();
        let x: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let vdt = ty.vec_dot_type();
        let mut act = vec![0u8; vdt.row_bytes(n).unwrap()];
        quantize_activation(vdt, &x, &mut act).unwrap();
        for isa in available_isas() {
            let mut passes = 0u32;
            let start = Instant::now();
            let mut sink = 0.0f32;
            while passes < 2 || start.elapsed() < Duration::from_millis(400) {
                for r in w.chunks_exact(row) {
                    sink += vec_dot_isa(isa, ty, n, r, &act).unwrap();
                }
                passes += 1;
            }
            black_box(sink);
            let secs = start.elapsed().as_secs_f64();
            let gbs = (rows * row) as f64 * f64::from(passes) / secs / 1e9;
            let ns_row = secs * 1e9 / (f64::from(passes) * rows as f64);
            println!(
                "{:<6} {:>8} {:>10.2} {:>12.1}",
                ty.name(),
                isa.name(),
                gbs,
                ns_row
            );
        }
    }
}
