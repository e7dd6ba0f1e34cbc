//! x86_64 kernels: feature detection and the AVX2 / AVX-512 kernel tables.
//!
//! The tables hold safe function pointers that call `#[target_feature]` functions; that is
//! sound only because [`kernels`] hands a table out after checking, at run time, every
//! feature its kernels are compiled for. Nothing else in the crate can reach the tables.
#![allow(unsafe_code)]

mod avx2;
mod avx512;
mod gemm512;

use super::blocks::{
    BlockQ4_1, BlockQ5_1, BlockQ8_0, BlockQ8_1, BlockQ8K, as_blocks, as_blocks_mut,
};
use super::types::TYPE_COUNT;
use super::{
    DotFn, GemmFn, GgmlType, Isa, Kernels, Line, MULTI_MAX, MultiFn, MultiRowsFn, PrepareFn,
    QuantFn,
};
use std::sync::LazyLock;

fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

pub(super) fn has_avx512() -> bool {
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

/// How far ahead of the current weight step the per-row (decode) dot asks for weight bytes.
/// Decode streams every weight once from DRAM, and the hardware prefetchers alone left the
/// per-row kernels stalled on their first load of each line (1536 B ahead gained nothing,
/// 4 KiB +5-10 %, 8 KiB +10-25 % decode on the llama1b/qwen0.5b-like files, 16 KiB no more).
pub(super) const PREFETCH_AHEAD: usize = 8192;

/// Defines, inside an ISA module, the `Tile` trait its block kernels implement and the
/// driver built on it: `multi` (one weight row, `N` activation rows) and, as `multi::<K, 1>`,
/// the per-row dot.
/// (Decode of 1-7 sequences goes through the AVX-512 `multi_rows` kernels, with activations
/// prepared once per product; the other ISAs through `multi` row by row.)
///
/// A kernel is split so that work is shared across a tile: `decode` unpacks a step of weight
/// blocks into registers once per step for all activations, `act` prepares a step of
/// activation blocks once for all weight rows, and `dot` combines the two into an
/// accumulator. `finish` reduces the accumulator and adds the blocks past the last whole step.
/// Each block's integer sum is exact, so every driver and tile size gives the per-row result up
/// to the order of f32 additions.
macro_rules! tile_drivers {
    ($feat:literal) => {
        /// A block format's kernel in the parts the drivers below combine (see
        /// `super::tile_drivers`). Every method is compiled for a subset of this module's
        /// features and is only called from the drivers, which are compiled for all of them.
        pub(crate) trait Tile {
            /// Weight block.
            type W: super::super::blocks::Block;
            /// Activation block.
            type A: super::super::blocks::Block;
            /// Blocks per step.
            const STEP: usize;
            type Dec: Copy;
            type Act: Copy;
            type Acc: Copy;
            /// # Safety
            /// The CPU must have this module's features.
            unsafe fn zero() -> Self::Acc;
            /// # Safety
            /// As [`Tile::zero`]; `w` holds `STEP` blocks.
            unsafe fn decode(w: &[Self::W]) -> Self::Dec;
            /// # Safety
            /// As [`Tile::zero`]; `a` holds `STEP` blocks.
            unsafe fn act(a: &[Self::A]) -> Self::Act;
            /// # Safety
            /// As [`Tile::zero`].
            unsafe fn dot(w: &Self::Dec, a: &Self::Act, acc: Self::Acc) -> Self::Acc;
            /// The row's dot: `acc` reduced plus the dot of the (fewer than `STEP`) blocks
            /// `w` and `a` left after the last whole step.
            ///
            /// # Safety
            /// As [`Tile::zero`].
            unsafe fn finish(acc: Self::Acc, w: &[Self::W], a: &[Self::A]) -> f32;
        }

        /// `[w · ys[j] for j in 0..N]`, decoding each weight step once. `ys[j]` must hold at
        /// least `w.len()` blocks.
        #[target_feature(enable = $feat)]
        pub(crate) fn multi<K: Tile, const N: usize>(w: &[K::W], ys: [&[K::A]; N]) -> [f32; N] {
            let nb = w.len();
            let steps = nb / K::STEP;
            let mut ys = ys;
            for y in &mut ys {
                *y = &y[..nb];
            }
            // SAFETY: `K: Tile` of this module, whose methods need a subset of the features
            // this function is compiled for (and its caller has detected).
            unsafe {
                let mut acc = [K::zero(); N];
                // Every tile streams its weight row once (decode: one activation; a few
                // sequences together: up to 8). Past the row's end the prefetch reaches the
                // next row (rows are contiguous); a prefetch never faults, so a wrapping
                // pointer is fine.
                let step_bytes = K::STEP * std::mem::size_of::<K::W>();
                for s in 0..steps {
                    let r = s * K::STEP..(s + 1) * K::STEP;
                    let p = w[r.start..].as_ptr().cast::<i8>();
                    for k in (0..step_bytes).step_by(64) {
                        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T1 }>(
                            p.wrapping_add(super::PREFETCH_AHEAD + k),
                        );
                    }
                    let dec = K::decode(&w[r.clone()]);
                    for j in 0..N {
                        acc[j] = K::dot(&dec, &K::act(&ys[j][r.clone()]), acc[j]);
                    }
                }
                let body = steps * K::STEP;
                let mut out = [0.0; N];
                for j in 0..N {
                    out[j] = K::finish(acc[j], &w[body..], &ys[j][body..]);
                }
                out
            }
        }
    };
}
pub(super) use tile_drivers;

/// Four little-endian bytes (two f16) → f32 lanes 0 and 1.
///
/// Only lane 0 or 1 of a scale conversion is used, so LLVM narrows the load to a 16-bit
/// `vpinsrw` that merges into whatever register it likes; when that is the accumulator, every
/// block waits for the previous one (Q8_0 ran at a third of its speed). An empty `asm!` that
/// takes the whole vector makes every lane demanded, so it is built with a full-width `vmovd`.
#[inline(always)]
fn f16x2_bits(b: [u8; 4]) -> std::arch::x86_64::__m128 {
    use std::arch::x86_64::*;
    // SAFETY: only reached from kernels of the AVX2 and AVX-512 tiers, which are only called
    // after their features (a superset of SSE2 and F16C) have been detected. The asm template
    // is empty: the register is returned unchanged, no memory, stack or flags are touched.
    unsafe {
        let mut v = _mm_cvtsi32_si128(i32::from_le_bytes(b));
        std::arch::asm!("/* {0} */", inout(xmm_reg) v, options(pure, nomem, nostack, preserves_flags));
        _mm_cvtph_ps(v)
    }
}

/// The per-row, multi-activation and multi-row entry points for `$m::Tile` kernel `$k` over
/// `$len`-element blocks, as table entries.
macro_rules! tile_fns {
    ($m:ident, $k:ty, $len:expr) => {{
        type W = <$k as $m::Tile>::W;
        type A = <$k as $m::Tile>::A;
        fn dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
            debug_assert!(n.is_multiple_of($len));
            let nb = n / $len;
            let (w, a) = (as_blocks::<W>(w, nb), as_blocks::<A>(a, nb));
            // SAFETY: reachable only through a table `kernels` returned after detecting the
            // features `$m` is compiled for.
            unsafe { $m::multi::<$k, 1>(w, [a])[0] }
        }
        fn multi_n<const N: usize>(
            nb: usize,
            w: &[u8],
            acts: &[u8],
            stride: usize,
            out: &mut [f32],
        ) {
            let w = as_blocks::<W>(w, nb);
            let ys: [&[A]; N] =
                std::array::from_fn(|j| as_blocks::<A>(&acts[j.saturating_mul(stride)..], nb));
            // SAFETY: as in `dot`.
            out.copy_from_slice(&unsafe { $m::multi::<$k, N>(w, ys) });
        }
        fn multi(n: usize, w: &[u8], acts: &[u8], stride: usize, out: &mut [f32]) {
            debug_assert!(n.is_multiple_of($len));
            let nb = n / $len;
            match out.len() {
                1 => multi_n::<1>(nb, w, acts, stride, out),
                2 => multi_n::<2>(nb, w, acts, stride, out),
                3 => multi_n::<3>(nb, w, acts, stride, out),
                4 => multi_n::<4>(nb, w, acts, stride, out),
                5 => multi_n::<5>(nb, w, acts, stride, out),
                6 => multi_n::<6>(nb, w, acts, stride, out),
                7 => multi_n::<7>(nb, w, acts, stride, out),
                8 => multi_n::<8>(nb, w, acts, stride, out),
                m => panic!("vec_dot_multi: {m} activation rows (1..=8 allowed)"),
            }
        }
        (Some(dot as DotFn), Some(multi as MultiFn))
    }};
}

/// The [`PrepareFn`] and [`MultiRowsFn`] of the AVX-512 `Tile4` kernel `$k` over
/// `$len`-element blocks.
macro_rules! multi_rows_fns {
    ($k:ty, $len:expr) => {{
        type A = <$k as avx512::Tile>::A;
        /// The first `n_acts` activation rows as blocks.
        fn rows_of(nb: usize, acts: &[u8], stride: usize, n_acts: usize) -> [&[A]; MULTI_MAX] {
            let mut ys: [&[A]; MULTI_MAX] = [&[]; MULTI_MAX];
            for (j, y) in ys.iter_mut().enumerate().take(n_acts) {
                *y = as_blocks::<A>(&acts[j.saturating_mul(stride)..], nb);
            }
            ys
        }
        fn prepare(n: usize, acts: &[u8], stride: usize, n_acts: usize, buf: &mut Vec<Line>) {
            debug_assert!(n.is_multiple_of($len));
            let nb = n / $len;
            let ys = rows_of(nb, acts, stride, n_acts);
            // SAFETY: reachable only through the AVX-512 table, which `kernels` returns after
            // detecting the features `avx512` is compiled for.
            unsafe { avx512::prepare::<$k>(nb, &ys[..n_acts], buf) }
        }
        #[allow(clippy::too_many_arguments)]
        fn multi_rows(
            n: usize,
            w: &[u8],
            rb: usize,
            rows: usize,
            acts: &[u8],
            stride: usize,
            n_acts: usize,
            prepared: &[Line],
            out: &mut [f32],
        ) {
            debug_assert!(n.is_multiple_of($len));
            let nb = n / $len;
            let ys = rows_of(nb, acts, stride, n_acts);
            // SAFETY: as in `prepare`.
            unsafe { avx512::multi_rows::<$k>(nb, w, rb, rows, &ys[..n_acts], prepared, out) }
        }
        (Some(prepare as PrepareFn), Some(multi_rows as MultiRowsFn))
    }};
}

/// A [`GemmFn`] for the packed-tile kernel of module `$m` over the format `$k`.
macro_rules! gemm_fn {
    ($m:ident, $k:ident) => {{
        fn gemm(
            n: usize,
            w: &[u8],
            rb: usize,
            acts: &[u8],
            stride: usize,
            rows: usize,
            out: &mut [&mut [f32]],
        ) {
            // SAFETY: reachable only through a table `kernels` returned after detecting the
            // features `$m` is compiled for.
            unsafe { $m::gemm::<super::gemm::$k>(n, w, rb, acts, stride, rows, out) }
        }
        Some(gemm as GemmFn)
    }};
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
    let mut multi: [Option<MultiFn>; TYPE_COUNT] = [None; TYPE_COUNT];
    for (ty, (d, m)) in [
        (Q4_0, tile_fns!(avx2, avx2::Q4_0T, 32)),
        (Q5_0, tile_fns!(avx2, avx2::Q5_0T, 32)),
        (Q8_0, tile_fns!(avx2, avx2::Q8_0T, 32)),
        (Q4_K, tile_fns!(avx2, avx2::Q4KT, 256)),
        (Q5_K, tile_fns!(avx2, avx2::Q5KT, 256)),
        (Q6_K, tile_fns!(avx2, avx2::Q6KT, 256)),
    ] {
        (dot[ty as usize], multi[ty as usize]) = (d, m);
    }
    dot[Q4_1 as usize] = simd_block_dot!(BlockQ4_1, BlockQ8_1, 32, avx2::dot_q4_1);
    dot[Q5_1 as usize] = simd_block_dot!(BlockQ5_1, BlockQ8_1, 32, avx2::dot_q5_1);
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
        attn_scores: None,
        attn_values: None,
        attn_softmax: None,
        silu_mul: None,
        dot,
        multi,
        multi_rows: [None; TYPE_COUNT],
        prepare: [None; TYPE_COUNT],
        // A GEMM here needs the tiles' canonical f32 order (see `avx512::canon`) first.
        gemm: [None; TYPE_COUNT],
        quantize: [None; TYPE_COUNT],
        dot_f32,
        dot_f16_f32,
        axpy_f16,
    }
});

static AVX512: LazyLock<Kernels> = LazyLock::new(|| {
    use GgmlType::*;
    // Formats without an AVX-512 kernel keep the AVX2 one (the AVX-512 set includes AVX2).
    let (mut dot, mut multi) = (AVX2.dot, AVX2.multi);
    for (ty, (d, m)) in [
        (Q4_0, tile_fns!(avx512, avx512::Q4_0T, 32)),
        (Q5_0, tile_fns!(avx512, avx512::Q5_0T, 32)),
        (Q8_0, tile_fns!(avx512, avx512::Q8_0T, 32)),
        (Q4_K, tile_fns!(avx512, avx512::Q4KT, 256)),
        (Q5_K, tile_fns!(avx512, avx512::Q5KT, 256)),
        (Q6_K, tile_fns!(avx512, avx512::Q6KT, 256)),
    ] {
        (dot[ty as usize], multi[ty as usize]) = (d, m);
    }
    dot[F16 as usize] = simd_flat_dot!(avx512::dot_f16);
    let mut multi_rows: [Option<MultiRowsFn>; TYPE_COUNT] = [None; TYPE_COUNT];
    let mut prepare: [Option<PrepareFn>; TYPE_COUNT] = [None; TYPE_COUNT];
    for (ty, (p, m)) in [
        (Q4_0, multi_rows_fns!(avx512::Q4_0T, 32)),
        (Q5_0, multi_rows_fns!(avx512::Q5_0T, 32)),
        (Q8_0, multi_rows_fns!(avx512::Q8_0T, 32)),
        (Q4_K, multi_rows_fns!(avx512::Q4KT, 256)),
        (Q5_K, multi_rows_fns!(avx512::Q5KT, 256)),
        (Q6_K, multi_rows_fns!(avx512::Q6KT, 256)),
    ] {
        (prepare[ty as usize], multi_rows[ty as usize]) = (p, m);
    }
    let mut gemm: [Option<GemmFn>; TYPE_COUNT] = [None; TYPE_COUNT];
    gemm[Q4_K as usize] = gemm_fn!(gemm512, Q4KPack);
    gemm[Q5_K as usize] = gemm_fn!(gemm512, Q5KPack);
    gemm[Q6_K as usize] = gemm_fn!(gemm512, Q6KPack);
    for (ty, f) in [
        (Q4_0, gemm512::gemm_legacy::<gemm512::Q4_0G> as GemmFn),
        (Q5_0, gemm512::gemm_legacy::<gemm512::Q5_0G>),
        (Q8_0, gemm512::gemm_legacy::<gemm512::Q8_0G>),
    ] {
        gemm[ty as usize] = Some(f);
    }
    let mut quantize: [Option<QuantFn>; TYPE_COUNT] = AVX2.quantize;
    fn quantize_q8_k(x: &[f32], dst: &mut [u8]) {
        let nb = x.len() / 256;
        // SAFETY: as in `simd_block_dot`.
        unsafe { avx512::quantize_q8_k(x, as_blocks_mut::<BlockQ8K>(dst, nb)) }
    }
    quantize[Q8_K as usize] = Some(quantize_q8_k as QuantFn);
    fn quantize_q8_0(x: &[f32], dst: &mut [u8]) {
        let nb = x.len() / 32;
        // SAFETY: as in `simd_block_dot`.
        unsafe { avx512::quantize_q8_0(x, as_blocks_mut::<BlockQ8_0>(dst, nb)) }
    }
    quantize[Q8_0 as usize] = Some(quantize_q8_0 as QuantFn);
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
    fn attn_scores(k: &[half::f16], stride: usize, n: usize, q: &[f32], hd: usize, o: &mut [f32]) {
        // SAFETY: as in `simd_block_dot`.
        unsafe { avx512::attn_scores(k, stride, n, q, hd, o) }
    }
    #[allow(clippy::too_many_arguments)]
    fn attn_values(
        probs: &mut [f32],
        inv: &[f32],
        v: &[half::f16],
        stride: usize,
        n: usize,
        hd: usize,
        o: &mut [f32],
    ) {
        // SAFETY: as in `simd_block_dot`.
        unsafe { avx512::attn_values(probs, inv, v, stride, n, hd, o) }
    }
    fn silu_mul(gate: &mut [f32], up: &[f32]) {
        // SAFETY: as in `simd_block_dot`.
        unsafe { avx512::silu_mul(gate, up) }
    }
    fn attn_softmax(scores: &mut [f32], scale: f32) -> f32 {
        // SAFETY: as in `simd_block_dot`.
        unsafe { avx512::attn_softmax(scores, scale) }
    }
    Kernels {
        isa: Isa::Avx512,
        attn_scores: Some(attn_scores),
        attn_values: Some(attn_values),
        attn_softmax: Some(attn_softmax),
        silu_mul: Some(silu_mul),
        dot,
        multi,
        multi_rows,
        prepare,
        gemm,
        quantize,
        dot_f32,
        dot_f16_f32,
        axpy_f16,
    }
});
