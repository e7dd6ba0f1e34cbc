//! x86_64 kernels: feature detection and the AVX2 / AVX-512 kernel tables.
//!
//! The tables hold safe function pointers that call `#[target_feature]` functions; that is
//! sound only because [`kernels`] hands a table out after checking, at run time, every
//! feature its kernels are compiled for. Nothing else in the crate can reach the tables.
#![allow(unsafe_code)]

mod avx2;
mod avx512;

use super::blocks::{
    BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8_1,
    BlockQ8K, as_blocks,
};
use super::types::TYPE_COUNT;
use super::{DotFn, GgmlType, Isa, Kernels};
use std::sync::LazyLock;

fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

fn has_avx512() -> bool {
    has_avx2()
        && is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512vnni")
}

/// The table for `isa` if this CPU has every feature its kernels need.
pub(super) fn kernels(isa: Isa) -> Option<&'static Kernels> {
    match isa {
        Isa::Avx2 if has_avx2() => Some(&AVX2),
        Isa::Avx512 if has_avx512() => Some(&AVX512),
        _ => None,
    }
}

/// A [`DotFn`] over blocks for the target-feature kernel `$f`.
macro_rules! simd_block_dot {
    ($wb:ty, $ab:ty, $len:expr, $f:path) => {{
        fn dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
            debug_assert!(n.is_multiple_of($len));
            let nb = n / $len;
            let (w, a) = (as_blocks::<$wb>(w, nb), as_blocks::<$ab>(a, nb));
            // SAFETY: reachable only through a table `kernels` returned after detecting the
            // features `$f` is compiled for.
            unsafe { $f(w, a) }
        }
        Some(dot as DotFn)
    }};
}

/// A [`DotFn`] over plain element rows for the target-feature kernel `$f`.
macro_rules! simd_flat_dot {
    ($f:path) => {{
        fn dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
            // SAFETY: as in `simd_block_dot`.
            unsafe { $f(n, w, a) }
        }
        Some(dot as DotFn)
    }};
}

static AVX2: LazyLock<Kernels> = LazyLock::new(|| {
    use GgmlType::*;
    let mut dot: [Option<DotFn>; TYPE_COUNT] = [None; TYPE_COUNT];
    dot[Q4_0 as usize] = simd_block_dot!(BlockQ4_0, BlockQ8_0, 32, avx2::dot_q4_0);
    dot[Q4_1 as usize] = simd_block_dot!(BlockQ4_1, BlockQ8_1, 32, avx2::dot_q4_1);
    dot[Q5_0 as usize] = simd_block_dot!(BlockQ5_0, BlockQ8_0, 32, avx2::dot_q5_0);
    dot[Q5_1 as usize] = simd_block_dot!(BlockQ5_1, BlockQ8_1, 32, avx2::dot_q5_1);
    dot[Q8_0 as usize] = simd_block_dot!(BlockQ8_0, BlockQ8_0, 32, avx2::dot_q8_0);
    dot[Q4_K as usize] = simd_block_dot!(BlockQ4K, BlockQ8K, 256, avx2::dot_q4_k);
    dot[Q5_K as usize] = simd_block_dot!(BlockQ5K, BlockQ8K, 256, avx2::dot_q5_k);
    dot[Q6_K as usize] = simd_block_dot!(BlockQ6K, BlockQ8K, 256, avx2::dot_q6_k);
    dot[F16 as usize] = simd_flat_dot!(avx2::dot_f16);
    dot[BF16 as usize] = simd_flat_dot!(avx2::dot_bf16);
    dot[F32 as usize] = simd_flat_dot!(avx2::dot_f32_bytes);
    fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as in `simd_block_dot`.
        unsafe { avx2::dot_f32(a, b) }
    }
    fn dot_f16_f32(a: &[half::f16], b: &[f32]) -> f32 {
        // SAFETY: as in `simd_block_dot`.
        unsafe { avx2::dot_f16_f32(a, b) }
    }
    fn axpy_f16(acc: &mut [f32], alpha: f32, x: &[half::f16]) {
        // SAFETY: as in `simd_block_dot`.
        unsafe { avx2::axpy_f16(acc, alpha, x) }
    }
    Kernels {
        isa: Isa::Avx2,
        dot,
        dot_f32,
        dot_f16_f32,
        axpy_f16,
    }
});

static AVX512: LazyLock<Kernels> = LazyLock::new(|| {
    use GgmlType::*;
    // Formats without an AVX-512 kernel keep the AVX2 one (the AVX-512 set includes AVX2).
    let mut dot = AVX2.dot;
    dot[Q4_0 as usize] = simd_block_dot!(BlockQ4_0, BlockQ8_0, 32, avx512::dot_q4_0);
    dot[Q5_0 as usize] = simd_block_dot!(BlockQ5_0, BlockQ8_0, 32, avx512::dot_q5_0);
    dot[Q8_0 as usize] = simd_block_dot!(BlockQ8_0, BlockQ8_0, 32, avx512::dot_q8_0);
    dot[Q4_K as usize] = simd_block_dot!(BlockQ4K, BlockQ8K, 256, avx512::dot_q4_k);
    dot[Q5_K as usize] = simd_block_dot!(BlockQ5K, BlockQ8K, 256, avx512::dot_q5_k);
    dot[Q6_K as usize] = simd_block_dot!(BlockQ6K, BlockQ8K, 256, avx512::dot_q6_k);
    dot[F16 as usize] = simd_flat_dot!(avx512::dot_f16);
    fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
        // SAFETY: as in `simd_block_dot`.
        unsafe { avx512::dot_f32(a, b) }
    }
    fn dot_f16_f32(a: &[half::f16], b: &[f32]) -> f32 {
        // SAFETY: as in `simd_block_dot`.
        unsafe { avx512::dot_f16_f32(a, b) }
    }
    fn axpy_f16(acc: &mut [f32], alpha: f32, x: &[half::f16]) {
        // SAFETY: as in `simd_block_dot`.
        unsafe { avx512::axpy_f16(acc, alpha, x) }
    }
    Kernels {
        isa: Isa::Avx512,
        dot,
        dot_f32,
        dot_f16_f32,
        axpy_f16,
    }
});
