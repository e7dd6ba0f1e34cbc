//! AVX-512 (F, BW, VL, VNNI) kernels for the formats that dominate real models: Q4_0, Q5_0,
//! Q8_0, Q4_K, Q5_K, Q6_K and F16, plus the f32/f16 attention helpers. Q4_1, Q5_1 and BF16 use
//! the AVX2 kernels on this ISA.
//!
//! Block formats implement the module's `Tile` trait (decode a weight step, prepare an
//! activation step, dot them; see `super::tile_drivers`), which gives the per-row dot, the
//! prefill tile (`multi`, one decoded weight step for up to 8 activation rows) and the decode
//! tile (`rows`). Block sums are exact integers, as in the scalar reference:
//! * Q4_0, Q5_0, Q8_0 (four blocks per step): weights as unsigned bytes u = q + o (o = 8, 16,
//!   or 128 for Q8_0's signed quants), the activations signed, one `vpdpbusd` per 64 elements
//!   starting from -o·Σy (prepared with the activation step), so Σ (u - o)·y is exact; the
//!   four block sums are reduced together and added in the pair order of `legacy_pair`.
//! * Q4_K, Q5_K, Q6_K: unsigned quants × activations with `vpdpbusd` (sums of four products,
//!   |sum| ≤ 4·63·127 < 2^15), two results packed to i16 and weighted by the sub-block scales
//!   with one `vpdpwssd`; mins (Q4_K/Q5_K) and Q6_K's -32 offset through Q8_K's bsums.
//!   Q4_K/Q5_K quants come out of the block in "nibble order" (two 64-byte loads, a mask or a
//!   shift each), and the activations are brought into that order once per product. The
//!   four-row decode tile of Q4_K uses a layout of its own ([`Q4KDec4`]) in which each i32
//!   lane sums one sub-block over all 256 elements, which only 4-bit quants keep within i16.
//!
//! Every function here is compiled for `avx512f,avx512bw,avx512vl,avx512vnni` on top of the
//! AVX2 set and must only be called once those features have been detected.
#![allow(unsafe_code)]

use super::super::Line;
use super::super::blocks::{
    BlockQ4_0, BlockQ4K, BlockQ5_0, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8K, as_blocks,
    k4_scales_mins,
};
use super::avx2::{self, f16_bits, load128, load256};
use half::f16;
use std::arch::x86_64::*;

/// Loads the first 64 bytes of `s` (bounds-checked).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load512<T: Copy>(s: &[T]) -> __m512i {
    let s = &s[..64 / size_of::<T>()];
    // SAFETY: `s` spans exactly 64 bytes; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_si512(s.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn load_ps512(s: &[f32]) -> __m512 {
    let s = &s[..16];
    // SAFETY: `s` holds 16 f32; `loadu` has no alignment requirement.
    unsafe { _mm512_loadu_ps(s.as_ptr()) }
}

/// `[lo | hi]` as one 512-bit vector.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn join(lo: __m256i, hi: __m256i) -> __m512i {
    _mm512_inserti64x4::<1>(_mm512_castsi256_si512(lo), hi)
}

super::tile_drivers!("avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c");

/// Four f16 scales → f32 lanes 0..4.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn scales_4(d: [[u8; 2]; 4]) -> __m128 {
    let bits = d.iter().rev().fold(0u64, |acc, b| {
        (acc << 16) | u64::from(u16::from_le_bytes(*b))
    });
    _mm_cvtph_ps(_mm_cvtsi64_si128(bits as i64))
}

/// Four legacy (32-element) weight blocks as unsigned bytes u = q + o (`o` the format's
/// offset: the stored quant for Q4_0/Q5_0, q + 128 for Q8_0), with their scales.
///
/// Split in halves: `u[0]` holds elements 0..16 of each block, `u[1]` elements 16..32, block
/// b in 128-bit lane b of both (the nibble layout of Q4_0/Q5_0, whose byte i holds elements
/// i and i + 16). Activations are laid out alike ([`quads`]), so one `vpdpbusd` per half,
/// accumulating into the same register, leaves block b's four partial sums in lane b.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LegacyDec {
    u: [__m512i; 2],
    d: __m128,
}

/// Four 16-byte pieces as the four 128-bit lanes of one vector.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn quads<T: Copy>(p: [&[T]; 4]) -> __m512i {
    let v = _mm512_castsi128_si512(load128(p[0]));
    let v = _mm512_inserti32x4::<1>(v, load128(p[1]));
    let v = _mm512_inserti32x4::<2>(v, load128(p[2]));
    _mm512_inserti32x4::<3>(v, load128(p[3]))
}

/// Four Q8_0 blocks' quants split in halves as [`LegacyDec`] lays out weights.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_halves(a: [&BlockQ8_0; 4]) -> [__m512i; 2] {
    [
        quads([
            &a[0].qs[..16],
            &a[1].qs[..16],
            &a[2].qs[..16],
            &a[3].qs[..16],
        ]),
        quads([
            &a[0].qs[16..],
            &a[1].qs[16..],
            &a[2].qs[16..],
            &a[3].qs[16..],
        ]),
    ]
}

/// Block b of `v[j]` (lane b: four partial sums) summed into lane 4b + j (exact): a 4 × 4
/// transpose-and-add inside every 128-bit lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn transpose_sum4(v: [__m512i; 4]) -> __m512i {
    let a01 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(v[0], v[1]),
        _mm512_unpackhi_epi32(v[0], v[1]),
    );
    let a23 = _mm512_add_epi32(
        _mm512_unpacklo_epi32(v[2], v[3]),
        _mm512_unpackhi_epi32(v[2], v[3]),
    );
    _mm512_add_epi32(
        _mm512_unpacklo_epi64(a01, a23),
        _mm512_unpackhi_epi64(a01, a23),
    )
}

/// Σ u·y of four blocks in halves (`u`, `y` as [`LegacyDec`]), starting from `init`: lane b
/// holds four partial sums of block b.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn dot_halves(init: __m512i, u: &[__m512i; 2], y: &[__m512i; 2]) -> __m512i {
    _mm512_dpbusd_epi32(_mm512_dpbusd_epi32(init, u[0], y[0]), u[1], y[1])
}

/// Four Q8_0 activation blocks prepared for one weight format: the signed bytes, the offset
/// correction -o·Σy spread over each block's lanes (so a block's lanes sum to Σ u·y - o·Σ y
/// = Σ (u - o)·y), and the scales.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Q8Act {
    y: [__m512i; 2],
    corr: __m512i,
    d: __m128,
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_0_act<const O: u8>(a: &[BlockQ8_0]) -> Q8Act {
    let a = &a[..4];
    let y = q8_halves([&a[0], &a[1], &a[2], &a[3]]);
    let zero = _mm512_setzero_si512();
    let o = _mm512_set1_epi8(O as i8);
    Q8Act {
        corr: _mm512_sub_epi32(zero, dot_halves(zero, &[o, o], &y)),
        y,
        d: scales_4([a[0].d, a[1].d, a[2].d, a[3].d]),
    }
}

/// Σ of the eight i32 lanes (exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn hsum_epi32_256(v: __m256i) -> i32 {
    let x = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b01_00_11_10>(x));
    let x = _mm_add_epi32(x, _mm_shuffle_epi32::<0b10_11_00_01>(x));
    _mm_cvtsi128_si32(x)
}

/// Adds one block's exact integer dot `i` scaled by `d_w · d_a` to `acc` with one fused
/// multiply-add: the canonical order of the K-quant formats, which every path of a format with
/// a GEMM kernel follows (`gemm512`), so that a row's result does not depend on which kernel
/// computed it (a sequence's tokens must not depend on its batch neighbours).
#[inline(always)]
fn canon(acc: f32, i: i32, dw: f32, da: f32) -> f32 {
    (i as f32).mul_add(dw * da, acc)
}

/// The canonical f32 order of the legacy formats (Q4_0, Q5_0, Q8_0), which every path with a
/// GEMM kernel follows (`gemm512::legacy_kernel`): per pair of blocks, t = i₁·s₁ + i₀·s₀
/// (s = d_w·d_a rounded; one product and one fused multiply-add), then acc + t; an odd last
/// block adds its own product. A row's accumulator waits on one addition per 64 elements,
/// not on a fused multiply-add per 32 (which bound the per-row decode of these formats).
#[inline(always)]
fn legacy_pair(acc: f32, i0: f32, s0: f32, i1: f32, s1: f32) -> f32 {
    acc + i1.mul_add(s1, i0 * s0)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn legacy_dot(w: &LegacyDec, a: &Q8Act, acc: f32) -> f32 {
    // 128-bit lane k of t: four partial sums of block k (exact in i32); then each lane's
    // element 0 its sum.
    let t = dot_halves(a.corr, &w.u, &a.y);
    let t = _mm512_add_epi32(t, _mm512_shuffle_epi32::<0b01_00_11_10>(t));
    let t = _mm512_add_epi32(t, _mm512_shuffle_epi32::<0b10_11_00_01>(t));
    let idx = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 12, 8, 4, 0);
    // |i| < 2^24: exact in f32.
    let i = _mm512_castps512_ps128(_mm512_permutexvar_ps(idx, _mm512_cvtepi32_ps(t)));
    // d_w · d_a of the four blocks, each rounded as in the GEMM.
    let dd = _mm_mul_ps(w.d, a.d);
    let f = |v: __m128| _mm_cvtss_f32(v);
    let acc = legacy_pair(
        acc,
        f(i),
        f(dd),
        f(_mm_movehdup_ps(i)),
        f(_mm_movehdup_ps(dd)),
    );
    let (i, dd) = (_mm_movehl_ps(i, i), _mm_movehl_ps(dd, dd));
    legacy_pair(
        acc,
        f(i),
        f(dd),
        f(_mm_movehdup_ps(i)),
        f(_mm_movehdup_ps(dd)),
    )
}

/// One block's exact Σ (u - o)·y, for the blocks past the last whole step.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn legacy_block_sum<const O: u8>(u: __m256i, y: &BlockQ8_0) -> f32 {
    let y = load256(&y.qs);
    let zero = _mm256_setzero_si256();
    let s = _mm256_sub_epi32(
        _mm256_dpbusd_epi32(zero, u, y),
        _mm256_dpbusd_epi32(zero, _mm256_set1_epi8(O as i8), y),
    );
    hsum_epi32_256(s) as f32
}

/// Implements `Tile` for a legacy format from its four-block decoder, its one-block decoder
/// (for the blocks past the last whole step) and its offset.
macro_rules! legacy_tile {
    ($name:ident, $wb:ty, $decode4:ident, $decode1:ident, $o:expr) => {
        #[derive(Debug)]
        pub(crate) struct $name;
        impl Tile for $name {
            type W = $wb;
            type A = BlockQ8_0;
            const STEP: usize = 4;
            type Dec = LegacyDec;
            type Act = Q8Act;
            type Acc = f32;
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn zero() -> f32 {
                0.0
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn decode(w: &[$wb]) -> LegacyDec {
                let w = &w[..4];
                LegacyDec {
                    u: $decode4(w),
                    d: scales_4([w[0].d, w[1].d, w[2].d, w[3].d]),
                }
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn act(a: &[BlockQ8_0]) -> Q8Act {
                q8_0_act::<{ $o }>(a)
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn dot(w: &LegacyDec, a: &Q8Act, acc: f32) -> f32 {
                legacy_dot(w, a, acc)
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn finish(acc: f32, w: &[$wb], a: &[BlockQ8_0]) -> f32 {
                // 0..4 blocks after the last whole step: pairs, then an odd last block.
                let part = |x: &$wb, y: &BlockQ8_0| {
                    let s = f16::from_le_bytes(x.d).to_f32() * f16::from_le_bytes(y.d).to_f32();
                    (legacy_block_sum::<{ $o }>($decode1(x), y), s)
                };
                let mut acc = acc;
                let mut k = 0;
                while k + 2 <= w.len().min(a.len()) {
                    let (i0, s0) = part(&w[k], &a[k]);
                    let (i1, s1) = part(&w[k + 1], &a[k + 1]);
                    acc = legacy_pair(acc, i0, s0, i1, s1);
                    k += 2;
                }
                if k < w.len().min(a.len()) {
                    let (i0, s0) = part(&w[k], &a[k]);
                    acc += i0 * s0;
                }
                acc
            }
        }
    };
}

legacy_tile!(Q4_0T, BlockQ4_0, q4_0_decode4, q4_0_decode1, 8);
legacy_tile!(Q5_0T, BlockQ5_0, q5_0_decode4, q5_0_decode1, 16);
legacy_tile!(Q8_0T, BlockQ8_0, q8_0_decode4, q8_0_decode1, 128);

/// Four blocks' 16 packed-nibble bytes → their low nibbles (elements 0..16 of each block)
/// and high nibbles (16..32), block b in 128-bit lane b ([`LegacyDec`]'s halves).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles_4x32(qs: [&[u8; 16]; 4]) -> [__m512i; 2] {
    let v = quads([&qs[0][..], &qs[1][..], &qs[2][..], &qs[3][..]]);
    let m = _mm512_set1_epi8(0xF);
    [
        _mm512_and_si512(v, m),
        _mm512_and_si512(_mm512_srli_epi16::<4>(v), m),
    ]
}

/// One block's 16 packed-nibble bytes → 32 nibbles in element order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles_32(qs: &[u8; 16]) -> __m256i {
    let t = load128(qs);
    let v = _mm256_set_m128i(_mm_srli_epi16::<4>(t), t);
    _mm256_and_si256(v, _mm256_set1_epi8(0xF))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_0_decode4(w: &[BlockQ4_0]) -> [__m512i; 2] {
    nibbles_4x32([&w[0].qs, &w[1].qs, &w[2].qs, &w[3].qs])
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4_0_decode1(w: &BlockQ4_0) -> __m256i {
    nibbles_32(&w.qs)
}

/// Bit j of `qh` is the fifth bit of element j: the low (`h = 0`) or high 16 bits of four
/// blocks' `qh`, block b's at bit 16b, pair byte i of a half ([`nibbles_4x32`]) with bit i.
#[inline(always)]
fn qh_mask(w: &[BlockQ5_0], h: usize) -> u64 {
    w[..4].iter().rev().fold(0u64, |m, b| {
        (m << 16) | u64::from(u16::from_le_bytes([b.qh[2 * h], b.qh[2 * h + 1]]))
    })
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q5_0_decode4(w: &[BlockQ5_0]) -> [__m512i; 2] {
    let [a, b] = nibbles_4x32([&w[0].qs, &w[1].qs, &w[2].qs, &w[3].qs]);
    let sixteen = _mm512_set1_epi8(16);
    [
        _mm512_mask_add_epi8(a, qh_mask(w, 0), a, sixteen),
        _mm512_mask_add_epi8(b, qh_mask(w, 1), b, sixteen),
    ]
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q5_0_decode1(w: &BlockQ5_0) -> __m256i {
    let q = nibbles_32(&w.qs);
    _mm256_mask_add_epi8(q, u32::from_le_bytes(w.qh), q, _mm256_set1_epi8(16))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_0_decode4(w: &[BlockQ8_0]) -> [__m512i; 2] {
    // q ^ 0x80 = q + 128 as an unsigned byte.
    let bias = _mm512_set1_epi8(-128);
    q8_halves([&w[0], &w[1], &w[2], &w[3]]).map(|h| _mm512_xor_si512(h, bias))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_0_decode1(w: &BlockQ8_0) -> __m256i {
    _mm256_xor_si256(load256(&w.qs), _mm256_set1_epi8(-128))
}

// ---------------------------------------------------------------------------------------------
// K-quants: per 64 elements, vpdpbusd (unsigned quants × activations); pairs of results
// packed to i16 and weighted by the sub-block scales with vpdpwssd.
// ---------------------------------------------------------------------------------------------

/// A Q8_K activation block in registers (or, for single-sequence Q4_K/Q5_K decode, prepared
/// in the [`Line`]s of a `PreparedActs` by [`k4_prepare1`]).
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Q8KAct {
    y: [__m512i; 4],
    bsums: __m256i,
    /// Explicit, so that the block has no implicit padding (see [`Prep`]).
    pad: __m256i,
    d: __m512,
}
// SAFETY: SIMD vectors only; `#[repr(C)]`, 384 bytes at 64-byte alignment.
unsafe impl Prep for Q8KAct {}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8k_act(a: &BlockQ8K) -> Q8KAct {
    Q8KAct {
        y: q8k_qs(a),
        bsums: load256(&a.bsums),
        pad: _mm256_setzero_si256(),
        d: _mm512_set1_ps(a.d()),
    }
}

/// [`q8k_act`] with the quants in the nibble order of [`q4k_decode`].
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn k4_act(a: &BlockQ8K) -> Q8KAct {
    Q8KAct {
        y: nibble_order(q8k_qs(a)),
        ..q8k_act(a)
    }
}

/// 256 elements in order (64 per vector) → the order in which a Q4_K block's nibbles come out
/// of two 64-byte loads: `[0..32 | 64..96]`, `[32..64 | 96..128]`, then the same for 128..256.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibble_order(y: [__m512i; 4]) -> [__m512i; 4] {
    [
        _mm512_shuffle_i64x2::<0b01_00_01_00>(y[0], y[1]),
        _mm512_shuffle_i64x2::<0b11_10_11_10>(y[0], y[1]),
        _mm512_shuffle_i64x2::<0b01_00_01_00>(y[2], y[3]),
        _mm512_shuffle_i64x2::<0b11_10_11_10>(y[2], y[3]),
    ]
}

/// vpermw indices that spread sub-block scales over the i16 lanes of two packed `vpdpbusd`
/// results. `vpdpbusd` of 64 elements gives 16 i32 lanes of four products each (|sum| ≤
/// 4·63·127 < 2^15), and `vpackssdw(p0, p1)` puts, in each 128-bit lane L, four lanes of p0
/// and then four of p1: i16 lane i = 8L + k comes from p0 (k < 4) or p1 (k ≥ 4), i32 lane
/// 4L + k % 4.
///
/// Q4_K/Q5_K (rows 0, 1: vector pair 2P, 2P + 1 in nibble order, see [`q4k_decode`]): p_v's
/// lanes 0..8 are sub-block 4P + (v % 2), lanes 8..16 sub-block 4P + (v % 2) + 2, so lane i
/// takes scale 4P + (k ≥ 4) + 2·(L ≥ 2). Row 2 takes min `j / 2` (from lane 8 of the
/// scale/min vector on) for bsums `j`.
static K4_IDX: [[u16; 32]; 3] = {
    let mut t = [[0u16; 32]; 3];
    let mut i = 0;
    while i < 32 {
        let (l, k) = (i / 8, i % 8);
        let sb = (k >= 4) as usize + 2 * (l >= 2) as usize;
        t[0][i] = sb as u16;
        t[1][i] = (4 + sb) as u16;
        t[2][i] = (8 + (i % 16) / 2) as u16;
        i += 1;
    }
    t
};
/// Q6_K (groups 2P, 2P + 1 of 64 elements): p_g's lanes 4r..4r + 4 are sub-block 4g + r, so
/// lane i takes scale 8P + 4·(k ≥ 4) + L.
static Q6_IDX: [[u16; 32]; 2] = {
    let mut t = [[0u16; 32]; 2];
    let mut i = 0;
    while i < 32 {
        let (l, k) = (i / 8, i % 8);
        let sb = 4 * (k >= 4) as usize + l;
        t[0][i] = sb as u16;
        t[1][i] = (8 + sb) as u16;
        i += 1;
    }
    t
};

/// Σ over four 64-element groups of quants `q` (unsigned, < 64) times activations `y`, each
/// sub-block weighted by its scale: `vpdpbusd` per group, pairs of results packed to i16
/// (exact, see [`K4_IDX`]), and one `vpdpwssd` per pair against `sc`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn scaled_dot4(q: &[__m512i; 4], y: &[__m512i; 4], sc: &[__m512i; 2], init: __m512i) -> __m512i {
    let zero = _mm512_setzero_si512();
    let p = |g: usize| _mm512_dpbusd_epi32(zero, q[g], y[g]);
    let lo = _mm512_packs_epi32(p(0), p(1));
    let hi = _mm512_packs_epi32(p(2), p(3));
    _mm512_dpwssd_epi32(_mm512_dpwssd_epi32(init, lo, sc[0]), hi, sc[1])
}

/// A Q4_K or Q5_K block in registers: quants per 64-element chunk, each chunk's two scales
/// spread over its i16 pair lanes, the mins per bsum, and the f16 scales.
#[derive(Clone, Copy, Debug)]
pub(crate) struct K4Dec {
    q: [__m512i; 4],
    sc: [__m512i; 2],
    mins: __m256i,
    /// The eight mins as i16 in every 128-bit quarter (for [`k4_dot4`]).
    mins8: __m512i,
    d: __m512,
    dmin: __m512,
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn k4_dec(q: [__m512i; 4], scales: &[u8; 12], d: [u8; 2], dmin: [u8; 2]) -> K4Dec {
    let (sc, m) = k4_scales_mins(scales);
    let v = _mm256_cvtepu8_epi16(_mm_set_epi64x(
        i64::from_le_bytes(m),
        i64::from_le_bytes(sc),
    ));
    let v = _mm512_castsi256_si512(v);
    let perm = |k: usize| _mm512_permutexvar_epi16(load512(&K4_IDX[k]), v);
    let dd = super::f16x2_bits([d[0], d[1], dmin[0], dmin[1]]);
    K4Dec {
        q,
        sc: [perm(0), perm(1)],
        mins: _mm512_castsi512_si256(perm(2)),
        mins8: _mm512_broadcast_i32x4(_mm512_extracti32x4_epi32::<1>(v)),
        d: _mm512_broadcastss_ps(dd),
        dmin: _mm512_broadcastss_ps(_mm_movehdup_ps(dd)),
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn k4_dot(w: &K4Dec, a: &Q8KAct, acc: f32) -> f32 {
    // The block's exact integer sums, then the canonical f32 steps (see `canon`).
    let sumi = _mm512_reduce_add_epi32(scaled_dot4(&w.q, &a.y, &w.sc, _mm512_setzero_si512()));
    let summ = hsum_epi32_256(_mm256_madd_epi16(a.bsums, w.mins));
    let ad = _mm512_cvtss_f32(a.d);
    let acc = canon(acc, sumi, _mm512_cvtss_f32(w.d), ad);
    (-(summ as f32)).mul_add(_mm512_cvtss_f32(w.dmin) * ad, acc)
}

macro_rules! kquant_tile {
    ($name:ident, $wb:ty, $decode:ident, $act:ident, $dot:ident, $dec:ty) => {
        #[derive(Debug)]
        pub(crate) struct $name;
        impl Tile for $name {
            type W = $wb;
            type A = BlockQ8K;
            const STEP: usize = 1;
            type Dec = $dec;
            type Act = Q8KAct;
            type Acc = f32;
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn zero() -> f32 {
                0.0
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn decode(w: &[$wb]) -> $dec {
                $decode(&w[0])
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn act(a: &[BlockQ8K]) -> Q8KAct {
                $act(&a[0])
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn dot(w: &$dec, a: &Q8KAct, acc: f32) -> f32 {
                $dot(w, a, acc)
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn finish(acc: f32, _: &[$wb], _: &[BlockQ8K]) -> f32 {
                acc
            }
        }
    };
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4k_decode(x: &BlockQ4K) -> K4Dec {
    // 32 bytes hold sub-block 2c in the low nibbles and 2c + 1 in the high ones. Two 64-byte
    // loads and a mask or a shift each give the nibble order (sub-blocks 0|2, 1|3, 4|6, 5|7),
    // which the activations are brought into once ([`k4_act`], [`k4_prepare1`], [`k4_prep`]).
    let q = nibbles_128(&x.qs);
    k4_dec(q, &x.scales, x.d, x.dmin)
}

/// 128 bytes of Q4_K/Q5_K nibbles → 256 quants in nibble order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles_128(qs: &[u8; 128]) -> [__m512i; 4] {
    let m = _mm512_set1_epi8(0xF);
    let (l0, l1) = (load512(&qs[..]), load512(&qs[64..]));
    [
        _mm512_and_si512(l0, m),
        _mm512_and_si512(_mm512_srli_epi16::<4>(l0), m),
        _mm512_and_si512(l1, m),
        _mm512_and_si512(_mm512_srli_epi16::<4>(l1), m),
    ]
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q5k_decode(x: &BlockQ5K) -> K4Dec {
    // Bit 2c of qh[l] is the fifth bit of element 64c + l, bit 2c + 1 that of 64c + 32 + l;
    // in nibble order vector v holds elements 128·(v / 2) + 32·(v % 2) + [0..32 | 64..96].
    let qh = _mm512_broadcast_i64x4(load256(&x.qh));
    let sixteens = _mm512_set1_epi8(16);
    let mut q = nibbles_128(&x.qs);
    for (v, q) in q.iter_mut().enumerate() {
        let bit = 4 * (v / 2) + v % 2;
        let bits = join(
            _mm256_set1_epi8((1u8 << bit) as i8),
            _mm256_set1_epi8((4u8 << bit) as i8),
        );
        *q = _mm512_mask_add_epi8(*q, _mm512_test_epi8_mask(qh, bits), *q, sixteens);
    }
    k4_dec(q, &x.scales, x.d, x.dmin)
}

kquant_tile!(Q4KT, BlockQ4K, q4k_decode, k4_act, k4_dot, K4Dec);
kquant_tile!(Q5KT, BlockQ5K, q5k_decode, k4_act, k4_dot, K4Dec);

/// A Q6_K block in registers: unsigned quants (0..64) per 64 elements, the sixteen scales
/// spread over the i16 pair lanes, -32 · scales for the offset, and d.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Q6Dec {
    q: [__m512i; 4],
    sc: [__m512i; 2],
    off: __m256i,
    d: __m512,
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q6k_decode(x: &BlockQ6K) -> Q6Dec {
    let m4 = _mm512_set1_epi8(0xF);
    let m3 = _mm512_set1_epi8(3);
    let m30 = _mm512_set1_epi8(0x30);
    let mut q = [_mm512_setzero_si512(); 4];
    for h in 0..2 {
        // ql[64h..64h + 64] = [ql1 | ql2]; pair it with [qh | qh >> 2] so that one set of
        // shifts and masks yields elements 0..64 (low nibbles) and 64..128 (high nibbles).
        let ql = load512(&x.ql[64 * h..]);
        let qh = load256(&x.qh[32 * h..]);
        let qh2 = join(qh, _mm256_srli_epi16::<2>(qh));
        q[2 * h] = _mm512_or_si512(
            _mm512_and_si512(ql, m4),
            _mm512_slli_epi16::<4>(_mm512_and_si512(qh2, m3)),
        );
        q[2 * h + 1] = _mm512_or_si512(
            _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
            _mm512_and_si512(qh2, m30),
        );
    }
    let sc16 = _mm256_cvtepi8_epi16(load128(&x.scales));
    let v = _mm512_castsi256_si512(sc16);
    let perm = |g: usize| _mm512_permutexvar_epi16(load512(&Q6_IDX[g]), v);
    // The last two bytes before `d` are scales 14 and 15: convert all four, keep lane 1.
    let dv = super::f16x2_bits([x.scales[14] as u8, x.scales[15] as u8, x.d[0], x.d[1]]);
    Q6Dec {
        q,
        sc: [perm(0), perm(1)],
        off: _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16::<5>(sc16)),
        d: _mm512_broadcastss_ps(_mm_movehdup_ps(dv)),
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q6k_dot(w: &Q6Dec, a: &Q8KAct, acc: f32) -> f32 {
    // The quants are used unsigned; -32 · Σ_k scale_k · bsum_k takes the offset back off
    // (|32 · scale| ≤ 4096 fits an i16).
    let off = _mm512_zextsi256_si512(_mm256_madd_epi16(a.bsums, w.off));
    let sumi = _mm512_reduce_add_epi32(scaled_dot4(&w.q, &a.y, &w.sc, off));
    canon(acc, sumi, _mm512_cvtss_f32(w.d), _mm512_cvtss_f32(a.d))
}

kquant_tile!(Q6KT, BlockQ6K, q6k_decode, q8k_act, q6k_dot, Q6Dec);

// ---------------------------------------------------------------------------------------------
// Few-sequence decode (`multi_rows`): a run of weight rows against up to eight activation rows.
// The activations are prepared once for the run in groups of four, and each weight step's
// per-block integer sums of a group are reduced together (one transposed tree instead of four
// horizontal sums) and scaled with 128-bit lane j = activation j, in the canonical f32 order of
// the per-row kernels, so every result is bit-identical to `multi::<K, 1>`'s.
// ---------------------------------------------------------------------------------------------

/// A [`Tile4`]'s prepared activation step, stored in the [`Line`]s of a `PreparedActs`.
///
/// # Safety
/// Implementors hold only SIMD vectors (every bit pattern is a valid value, all zeros
/// included), with alignment at most 64 and a size that is a multiple of 64.
pub(crate) unsafe trait Prep: Copy {}

/// `len` zeroed preps over `buf` (resized to hold exactly them).
fn preps_mut<P: Prep>(buf: &mut Vec<Line>, len: usize) -> &mut [P] {
    const { assert!(align_of::<P>() <= 64 && size_of::<P>().is_multiple_of(64)) };
    buf.clear();
    buf.resize(len * (size_of::<P>() / 64), Line([0; 64]));
    // SAFETY: `buf` holds `len · size_of::<P>()` bytes at 64-byte alignment (≥ P's), every bit
    // pattern is a valid `P` (`Prep`'s contract), and the result borrows `buf` mutably.
    unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<P>(), len) }
}

/// The preps stored in `buf` by [`preps_mut`].
fn preps<P: Prep>(buf: &[Line]) -> &[P] {
    const { assert!(align_of::<P>() <= 64 && size_of::<P>().is_multiple_of(64)) };
    let len = buf.len() / (size_of::<P>() / 64);
    // SAFETY: as in `preps_mut`, for `len` whole preps within `buf`, borrowed shared.
    unsafe { std::slice::from_raw_parts(buf.as_ptr().cast::<P>(), len) }
}

/// A block format whose activation steps can be prepared four rows at a time.
pub(crate) trait Tile4: Tile<Acc = f32> {
    type Prep: Prep;
    /// A weight step as [`Tile4::dot4`] reads it (most formats: the per-row `Dec`).
    type Dec4: Copy;
    /// # Safety
    /// As [`Tile4::prep`]; `w` holds `STEP` blocks.
    unsafe fn decode4(w: &[Self::W]) -> Self::Dec4;
    /// The per-row `Dec` of the step `w` that `d4` was decoded from (for a fifth row).
    ///
    /// # Safety
    /// As [`Tile4::decode4`].
    unsafe fn dec_of(w: &[Self::W], d4: &Self::Dec4) -> Self::Dec;
    /// Step `s` of the activation rows `ys` (each at least `(s + 1) · STEP` blocks).
    ///
    /// # Safety
    /// The CPU must have this module's features.
    unsafe fn prep(ys: [&[Self::A]; 4], s: usize) -> Self::Prep;
    /// `acc` plus the dot of a decoded weight step with the same step of four activation rows
    /// as prepared in `p` (lane j: row j), each lane in the canonical order of [`Tile::dot`].
    ///
    /// # Safety
    /// As [`Tile4::prep`].
    unsafe fn dot4(w: &Self::Dec4, p: &Self::Prep, acc: __m128) -> __m128;
    /// Prepares the one activation row of single-sequence decode (`nb` blocks) into `buf`.
    ///
    /// # Safety
    /// As [`Tile4::prep`].
    unsafe fn prepare1(nb: usize, y: &[Self::A], buf: &mut Vec<Line>);
    /// `out[i]` = row i of `w` (rows `rb` bytes apart, `nb` blocks each) · `y`, with `y`
    /// prepared into `prepared` by [`Tile4::prepare1`].
    ///
    /// # Safety
    /// As [`Tile4::prep`].
    unsafe fn rows1(
        nb: usize,
        w: &[u8],
        rb: usize,
        rows: usize,
        y: &[Self::A],
        prepared: &[Line],
        out: &mut [f32],
    );
}

/// [`Tile4::rows1`] one row at a time through the per-row dot.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn rows1_per_row<K: Tile>(
    nb: usize,
    w: &[u8],
    rb: usize,
    rows: usize,
    y: &[K::A],
    _: &[Line],
    out: &mut [f32],
) {
    for (i, o) in out[..rows].iter_mut().enumerate() {
        let wr = as_blocks::<K::W>(&w[i.saturating_mul(rb)..], nb);
        *o = multi::<K, 1>(wr, [y])[0];
    }
}

/// Quarter j of the result: four partial sums of all 16 lanes of `v[j]` (exact).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn reduce_quarters4(v: [__m512i; 4]) -> __m512i {
    // [x: 8 lanes | y: 8 lanes].
    let pair = |x: __m512i, y: __m512i| {
        _mm512_add_epi32(
            _mm512_shuffle_i32x4::<0b01_00_01_00>(x, y),
            _mm512_shuffle_i32x4::<0b11_10_11_10>(x, y),
        )
    };
    halves_to_quarters(pair(v[0], v[1]), pair(v[2], v[3]))
}

/// `[x₀ | x₁]` and `[y₀ | y₁]` (8 lanes each) → quarters x₀, x₁, y₀, y₁ of four partial sums.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn halves_to_quarters(x: __m512i, y: __m512i) -> __m512i {
    _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0b10_00_10_00>(x, y),
        _mm512_shuffle_i32x4::<0b11_01_11_01>(x, y),
    )
}

/// Lanes 0, 4, 8, 12 of `v` (as f32) in lanes 0..4: one sum per quarter.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn quarter_heads(v: __m512) -> __m512 {
    let idx = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 14, 10, 6, 2, 12, 8, 4, 0);
    // Lanes 4..8 get lanes 2, 6, 10, 14 (the second sum of a quarter where there is one).
    _mm512_permutexvar_ps(idx, v)
}

/// Four activation rows' step of four Q8_0 blocks, for the legacy formats.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct LegacyPrep {
    /// Activation j's four blocks in halves ([`LegacyDec`]): `y[2j]`, `y[2j + 1]`.
    y: [__m512i; 8],
    /// o·Σy of block b of activation j in lane 4b + j.
    corr: __m512i,
    /// d of block b of activation j in lane 4b + j.
    d: __m512,
}
// SAFETY: SIMD vectors only; `#[repr(C)]` with 64-byte-aligned members.
unsafe impl Prep for LegacyPrep {}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn legacy_prep<const O: u8>(ys: [&[BlockQ8_0]; 4], s: usize) -> LegacyPrep {
    let a = ys.map(|y| &y[4 * s..4 * s + 4]);
    let h = [
        q8_halves([&a[0][0], &a[0][1], &a[0][2], &a[0][3]]),
        q8_halves([&a[1][0], &a[1][1], &a[1][2], &a[1][3]]),
        q8_halves([&a[2][0], &a[2][1], &a[2][2], &a[2][3]]),
        q8_halves([&a[3][0], &a[3][1], &a[3][2], &a[3][3]]),
    ];
    let y = [
        h[0][0], h[0][1], h[1][0], h[1][1], h[2][0], h[2][1], h[3][0], h[3][1],
    ];
    let (zero, o) = (_mm512_setzero_si512(), _mm512_set1_epi8(O as i8));
    let mut d = [0u16; 16];
    for (b, d) in d.chunks_exact_mut(4).enumerate() {
        for (j, d) in d.iter_mut().enumerate() {
            *d = u16::from_le_bytes(a[j][b].d);
        }
    }
    LegacyPrep {
        corr: transpose_sum4(h.map(|h| dot_halves(zero, &[o, o], &h))),
        y,
        d: _mm512_cvtph_ps(load256(&d)),
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn legacy_dot4(w: &LegacyDec, p: &LegacyPrep, acc: __m128) -> __m128 {
    let zero = _mm512_setzero_si512();
    // Written out: closures around target-feature calls were not always inlined.
    let v = [
        dot_halves(zero, &w.u, &[p.y[0], p.y[1]]),
        dot_halves(zero, &w.u, &[p.y[2], p.y[3]]),
        dot_halves(zero, &w.u, &[p.y[4], p.y[5]]),
        dot_halves(zero, &w.u, &[p.y[6], p.y[7]]),
    ];
    // Block b of activation j in lane 4b + j: Σ u·y - o·Σ y = Σ (u - o)·y, exact; |i| < 2^24.
    let i = _mm512_cvtepi32_ps(_mm512_sub_epi32(transpose_sum4(v), p.corr));
    // d_w · d_a per block, rounded as in `legacy_dot`.
    let bcast = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    let s = _mm512_mul_ps(
        _mm512_permutexvar_ps(bcast, _mm512_castps128_ps512(w.d)),
        p.d,
    );
    // `legacy_pair` on every lane: quarters 0 and 2 of t are blocks (0, 1) and (2, 3).
    let t = _mm512_fmadd_ps(
        _mm512_shuffle_f32x4::<0b11_11_01_01>(i, i),
        _mm512_shuffle_f32x4::<0b11_11_01_01>(s, s),
        _mm512_mul_ps(i, s),
    );
    let acc = _mm_add_ps(acc, _mm512_castps512_ps128(t));
    _mm_add_ps(acc, _mm512_extractf32x4_ps::<2>(t))
}

macro_rules! legacy_tile4 {
    ($name:ident, $o:expr) => {
        impl Tile4 for $name {
            type Prep = LegacyPrep;
            type Dec4 = LegacyDec;
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn decode4(w: &[<Self as Tile>::W]) -> LegacyDec {
                // SAFETY: the caller's contract.
                unsafe { <Self as Tile>::decode(w) }
            }
            #[inline]
            unsafe fn dec_of(_: &[<Self as Tile>::W], d4: &LegacyDec) -> LegacyDec {
                *d4
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn prep(ys: [&[BlockQ8_0]; 4], s: usize) -> LegacyPrep {
                legacy_prep::<{ $o }>(ys, s)
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn dot4(w: &LegacyDec, p: &LegacyPrep, acc: __m128) -> __m128 {
                legacy_dot4(w, p, acc)
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn prepare1(nb: usize, y: &[BlockQ8_0], buf: &mut Vec<Line>) {
                legacy_prepare1::<{ $o }>(nb, y, buf)
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn rows1(
                nb: usize,
                w: &[u8],
                rb: usize,
                rows: usize,
                y: &[BlockQ8_0],
                prepared: &[Line],
                out: &mut [f32],
            ) {
                legacy_rows1::<$name>(nb, w, rb, rows, y, prepared, out)
            }
        }
    };
}

/// Sixteen blocks (four steps) of one row against the same blocks of one prepared
/// activation row (a [`LegacyPrep`] whose "rows" are the four steps): the block sums of the
/// four steps reduced in one transposed tree, the pair products on all lanes at once, and
/// then the eight additions of `legacy_pair` in block order, so the result is bit-identical
/// to four `legacy_dot` steps.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn legacy_dot16(w: &[LegacyDec; 4], p: &LegacyPrep, acc: f32, steps: usize) -> f32 {
    let zero = _mm512_setzero_si512();
    let v = [
        dot_halves(zero, &w[0].u, &[p.y[0], p.y[1]]),
        dot_halves(zero, &w[1].u, &[p.y[2], p.y[3]]),
        dot_halves(zero, &w[2].u, &[p.y[4], p.y[5]]),
        dot_halves(zero, &w[3].u, &[p.y[6], p.y[7]]),
    ];
    // Block 4j + b (step j) in lane 4b + j.
    let i = _mm512_cvtepi32_ps(_mm512_sub_epi32(transpose_sum4(v), p.corr));
    // The weight scales, lane 4j + b, moved to lane 4b + j.
    let dw = _mm512_insertf32x4::<3>(
        _mm512_insertf32x4::<2>(
            _mm512_insertf32x4::<1>(_mm512_castps128_ps512(w[0].d), w[1].d),
            w[2].d,
        ),
        w[3].d,
    );
    let tr = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    let s = _mm512_mul_ps(_mm512_permutexvar_ps(tr, dw), p.d);
    // Quarter 0, lane j: i₁·s₁ + i₀·s₀ of blocks 4j, 4j + 1; quarter 2: blocks 4j + 2, 4j + 3.
    let t = _mm512_fmadd_ps(
        _mm512_shuffle_f32x4::<0b11_11_01_01>(i, i),
        _mm512_shuffle_f32x4::<0b11_11_01_01>(s, s),
        _mm512_mul_ps(i, s),
    );
    // The eight pair sums in block order.
    let order = _mm512_set_epi32(0, 0, 0, 0, 0, 0, 0, 0, 11, 3, 10, 2, 9, 1, 8, 0);
    let mut u = [0f32; 16];
    // SAFETY: `u` holds 16 f32; `storeu` has no alignment requirement.
    unsafe { _mm512_storeu_ps(u.as_mut_ptr(), _mm512_permutexvar_ps(order, t)) };
    u[..2 * steps].iter().fold(acc, |acc, &t| acc + t)
}

/// Four zero blocks: the activation steps past a row's end in its last, partial group of
/// [`legacy_rows1`] (their lanes are computed and never added).
static ZERO_Q8_0: [BlockQ8_0; 4] = [BlockQ8_0 {
    d: [0; 2],
    qs: [0; 32],
}; 4];

/// [`Tile4::prepare1`] for the legacy formats: the activation row sixteen blocks at a time,
/// as the four rows of a [`LegacyPrep`]; the last group may hold fewer whole steps (the rest
/// zero blocks), the blocks after the last whole step are left to `finish`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn legacy_prepare1<const O: u8>(nb: usize, y: &[BlockQ8_0], buf: &mut Vec<Line>) {
    let y = &y[..nb];
    let steps = nb / 4;
    let step_y = |s: usize| {
        if s < steps {
            &y[4 * s..]
        } else {
            &ZERO_Q8_0[..]
        }
    };
    for (g, p) in preps_mut::<LegacyPrep>(buf, steps.div_ceil(4))
        .iter_mut()
        .enumerate()
    {
        let s = 4 * g;
        *p = legacy_prep::<O>([step_y(s), step_y(s + 1), step_y(s + 2), step_y(s + 3)], 0);
    }
}

/// [`Tile4::rows1`] for the legacy formats: each row streamed through [`legacy_dot16`]
/// against the groups [`legacy_prepare1`] made.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn legacy_rows1<K>(
    nb: usize,
    w: &[u8],
    rb: usize,
    rows: usize,
    y: &[BlockQ8_0],
    prepared: &[Line],
    out: &mut [f32],
) where
    K: Tile<A = BlockQ8_0, Dec = LegacyDec, Acc = f32>,
{
    let y = &y[..nb];
    let steps = nb / 4;
    // Whole groups of four steps, then at most one partial group.
    let (full, groups) = (steps / 4, steps.div_ceil(4));
    let prep = preps::<LegacyPrep>(prepared);
    assert_eq!(
        prep.len(),
        groups,
        "vec_dot_multi_rows: activations prepared for another row"
    );
    let step_bytes = 4 * std::mem::size_of::<K::W>();
    let zero = LegacyDec {
        u: [_mm512_setzero_si512(); 2],
        d: _mm_setzero_ps(),
    };
    // SAFETY: `K` is a tile of this module, whose methods need a subset of the features this
    // function is compiled for.
    unsafe {
        for (i, o) in out[..rows].iter_mut().enumerate() {
            let wr = as_blocks::<K::W>(&w[i.saturating_mul(rb)..], nb);
            let mut acc = 0f32;
            for (g, p) in prep[..full].iter().enumerate() {
                let b = 16 * g;
                // As in `multi`: the weight rows stream once from DRAM.
                let pw = wr[b..].as_ptr().cast::<i8>();
                for k in (0..4 * step_bytes).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T1>(pw.wrapping_add(super::PREFETCH_AHEAD + k));
                }
                let dec = [
                    K::decode(&wr[b..b + 4]),
                    K::decode(&wr[b + 4..b + 8]),
                    K::decode(&wr[b + 8..b + 12]),
                    K::decode(&wr[b + 12..b + 16]),
                ];
                acc = legacy_dot16(&dec, p, acc, 4);
            }
            if let Some(p) = prep.get(full) {
                let n = steps - 4 * full;
                let mut dec = [zero; 4];
                for (j, d) in dec.iter_mut().enumerate().take(n) {
                    let b = 16 * full + 4 * j;
                    let pw = wr[b..].as_ptr().cast::<i8>();
                    for k in (0..step_bytes).step_by(64) {
                        _mm_prefetch::<_MM_HINT_T1>(pw.wrapping_add(super::PREFETCH_AHEAD + k));
                    }
                    *d = K::decode(&wr[b..b + 4]);
                }
                acc = legacy_dot16(&dec, p, acc, n);
            }
            *o = K::finish(acc, &wr[4 * steps..], &y[4 * steps..]);
        }
    }
}

legacy_tile4!(Q4_0T, 8);
legacy_tile4!(Q5_0T, 16);
legacy_tile4!(Q8_0T, 128);

/// Four activation rows' Q8_K block, for Q4_K and Q5_K: the bsums summed in pairs (one per
/// 32-element sub-block, |Σ| ≤ 32·127 fits an i16), quarter j for activation j, and the
/// scales.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct K4Prep {
    /// Activation j's 256 quants in `y[4j..4j + 4]`, in nibble order ([`k4_act`]; copied:
    /// the kernel then reads one contiguous prepared block, with no per-row pointer or bounds
    /// arithmetic).
    y: [__m512i; 16],
    bsum32: __m512i,
    d: __m128,
}
// SAFETY: SIMD vectors only; `#[repr(C)]` with 64-byte-aligned members.
unsafe impl Prep for K4Prep {}

/// Four activation rows' Q8_K block, for Q6_K: the sixteen bsums of rows 0|1 and 2|3, and the
/// scales.
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Q6Prep {
    /// As in [`K4Prep`].
    y: [__m512i; 16],
    bsums: [__m512i; 2],
    d: __m128,
}
// SAFETY: SIMD vectors only; `#[repr(C)]` with 64-byte-aligned members.
unsafe impl Prep for Q6Prep {}

fn q8k_scales4(a: [&BlockQ8K; 4]) -> __m128 {
    let d = a.map(BlockQ8K::d);
    // SAFETY: SSE is part of the x86_64 baseline.
    unsafe { _mm_set_ps(d[3], d[2], d[1], d[0]) }
}

/// The quants of four Q8_K blocks, four vectors each.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8k_qs4(a: [&BlockQ8K; 4]) -> [__m512i; 16] {
    let q = [q8k_qs(a[0]), q8k_qs(a[1]), q8k_qs(a[2]), q8k_qs(a[3])];
    std::array::from_fn(|k| q[k / 4][k % 4])
}

/// The sixteen signed activation loads of a Q8_K block.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8k_qs(a: &BlockQ8K) -> [__m512i; 4] {
    [
        load512(&a.qs[..]),
        load512(&a.qs[64..]),
        load512(&a.qs[128..]),
        load512(&a.qs[192..]),
    ]
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn k4_dot4(w: &K4Dec, p: &K4Prep, acc: __m128) -> __m128 {
    let zero = _mm512_setzero_si512();
    // Written out: a closure mapped over `ys` was not inlined.
    let y = |j: usize| [p.y[4 * j], p.y[4 * j + 1], p.y[4 * j + 2], p.y[4 * j + 3]];
    let t = reduce_quarters4([
        scaled_dot4(&w.q, &y(0), &w.sc, zero),
        scaled_dot4(&w.q, &y(1), &w.sc, zero),
        scaled_dot4(&w.q, &y(2), &w.sc, zero),
        scaled_dot4(&w.q, &y(3), &w.sc, zero),
    ]);
    // Σ bsum32 · min, quarter j for activation j: four partial sums each.
    let m = _mm512_madd_epi16(p.bsum32, w.mins8);
    // Per quarter [Σt, Σt, Σm, Σm].
    let x = _mm512_add_epi32(_mm512_unpacklo_epi64(t, m), _mm512_unpackhi_epi64(t, m));
    let x = _mm512_add_epi32(x, _mm512_shuffle_epi32::<0b10_11_00_01>(x));
    // Lanes 0..4: sumi of activations 0..4; lanes 4..8: summ. Exact in f32 (< 2^24).
    let f = quarter_heads(_mm512_cvtepi32_ps(x));
    let (sumi, summ) = (_mm512_castps512_ps128(f), _mm512_extractf32x4_ps::<1>(f));
    // `k4_dot`'s two fused multiply-adds on every lane.
    let acc = _mm_fmadd_ps(sumi, _mm_mul_ps(_mm512_castps512_ps128(w.d), p.d), acc);
    _mm_fnmadd_ps(summ, _mm_mul_ps(_mm512_castps512_ps128(w.dmin), p.d), acc)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q6k_dot4(w: &Q6Dec, p: &Q6Prep, acc: __m128) -> __m128 {
    let zero = _mm512_setzero_si512();
    let y = |j: usize| [p.y[4 * j], p.y[4 * j + 1], p.y[4 * j + 2], p.y[4 * j + 3]];
    let v = [
        scaled_dot4(&w.q, &y(0), &w.sc, zero),
        scaled_dot4(&w.q, &y(1), &w.sc, zero),
        scaled_dot4(&w.q, &y(2), &w.sc, zero),
        scaled_dot4(&w.q, &y(3), &w.sc, zero),
    ];
    // The -32 offset of rows 0|1 and 2|3 (as `q6k_dot`), added at the half-reduced level.
    let off = _mm512_broadcast_i64x4(w.off);
    let pair = |x: __m512i, y: __m512i, o: __m512i| {
        _mm512_add_epi32(
            _mm512_add_epi32(
                _mm512_shuffle_i32x4::<0b01_00_01_00>(x, y),
                _mm512_shuffle_i32x4::<0b11_10_11_10>(x, y),
            ),
            _mm512_madd_epi16(o, off),
        )
    };
    let t = halves_to_quarters(pair(v[0], v[1], p.bsums[0]), pair(v[2], v[3], p.bsums[1]));
    let t = _mm512_add_epi32(t, _mm512_shuffle_epi32::<0b01_00_11_10>(t));
    let t = _mm512_add_epi32(t, _mm512_shuffle_epi32::<0b10_11_00_01>(t));
    let sumi = _mm512_castps512_ps128(quarter_heads(_mm512_cvtepi32_ps(t)));
    _mm_fmadd_ps(sumi, _mm_mul_ps(_mm512_castps512_ps128(w.d), p.d), acc)
}

/// A Q4_K block as [`q4k_dot4`] reads it. Vector v holds, in 128-bit lane c, the low and
/// then the high nibbles of bytes 8v..8v + 8 of the block's 32-byte chunk c: eight quants of
/// sub-block 2c, then eight of 2c + 1. Every vector thus has the same sub-block in the same
/// lanes, so the four `vpdpbusd` of an activation row chain into one accumulator (sixteen
/// products of one sub-block per i32 lane, |Σ| ≤ 16·15·127 < 2^15) and one pack and one
/// `vpmaddwd` apply the scales for two rows at once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Q4KDec4 {
    q: [__m512i; 4],
    /// i16 lane 8c + t: the scale of sub-block 2c + (t % 4 ≥ 2) (see [`q4k_dot4`]'s packs).
    sc: __m512i,
    /// i16 lane 8c + 2j + e: the min of sub-block 2c + e (any j; see [`Q4KPrep::bsum`]).
    mins: __m512i,
    d: __m128,
    dmin: __m128,
}

/// vpermw indices over [`k4_dec`]'s scale/min vector (scales in lanes 0..8, mins in 8..16)
/// for [`Q4KDec4::sc`] and [`Q4KDec4::mins`].
static Q4K4_IDX: [[u16; 32]; 2] = {
    let mut t = [[0u16; 32]; 2];
    let mut i = 0;
    while i < 32 {
        let (c, t8) = (i / 8, i % 8);
        t[0][i] = (2 * c + (t8 % 4 >= 2) as usize) as u16;
        t[1][i] = (8 + 2 * c + i % 2) as u16;
        i += 1;
    }
    t
};

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4k_decode4(x: &BlockQ4K) -> Q4KDec4 {
    let (l0, l1) = (load512(&x.qs[..]), load512(&x.qs[64..]));
    let m = _mm512_set1_epi8(0xF);
    // Qword 2c and 2c + 1 of vector v: qword 4c + v of the 128 bytes (chunk c's qword v),
    // the second one shifted down to its high nibbles.
    let shift = _mm512_set_epi64(4, 0, 4, 0, 4, 0, 4, 0);
    let q = |v: i64| {
        let idx = _mm512_set_epi64(12 + v, 12 + v, 8 + v, 8 + v, 4 + v, 4 + v, v, v);
        let x = _mm512_permutex2var_epi64(l0, idx, l1);
        _mm512_and_si512(_mm512_srlv_epi64(x, shift), m)
    };
    let (sc, mn) = k4_scales_mins(&x.scales);
    let v = _mm512_castsi256_si512(_mm256_cvtepu8_epi16(_mm_set_epi64x(
        i64::from_le_bytes(mn),
        i64::from_le_bytes(sc),
    )));
    let dd = super::f16x2_bits([x.d[0], x.d[1], x.dmin[0], x.dmin[1]]);
    Q4KDec4 {
        q: [q(0), q(1), q(2), q(3)],
        sc: _mm512_permutexvar_epi16(load512(&Q4K4_IDX[0]), v),
        mins: _mm512_permutexvar_epi16(load512(&Q4K4_IDX[1]), v),
        d: _mm_shuffle_ps::<0>(dd, dd),
        dmin: _mm_shuffle_ps::<0b01_01_01_01>(dd, dd),
    }
}

/// Four activation rows' Q8_K block in the layout of [`Q4KDec4`].
#[derive(Clone, Copy, Debug)]
#[repr(C)]
pub(crate) struct Q4KPrep {
    /// Activation j's quants in `y[4j..4j + 4]`: vector v, 128-bit lane c = qwords 8c + v and
    /// 8c + 4 + v (elements 64c + 8v.. and 64c + 32 + 8v..).
    y: [__m512i; 16],
    /// i16 lane 8c + 2j + e: activation j's sum over sub-block 2c + e (|Σ| ≤ 32·127).
    bsum: __m512i,
    d: __m128,
}
// SAFETY: SIMD vectors only; `#[repr(C)]` with 64-byte-aligned members.
unsafe impl Prep for Q4KPrep {}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4k_prep(a: [&BlockQ8K; 4]) -> Q4KPrep {
    let mut q = [[0i8; 64]; 16];
    let mut b = [0i16; 32];
    for (j, a) in a.iter().enumerate() {
        for (v, q) in q[4 * j..4 * j + 4].iter_mut().enumerate() {
            for (c, lane) in q.chunks_exact_mut(16).enumerate() {
                let (lo, hi) = (64 * c + 8 * v, 64 * c + 32 + 8 * v);
                lane[..8].copy_from_slice(&a.qs[lo..lo + 8]);
                lane[8..].copy_from_slice(&a.qs[hi..hi + 8]);
            }
        }
        for c in 0..4 {
            for e in 0..2 {
                let s = 2 * c + e;
                // |Σ| ≤ 32 · 127: exact in i16.
                b[8 * c + 2 * j + e] = (a.bsum(2 * s) + a.bsum(2 * s + 1)) as i16;
            }
        }
    }
    Q4KPrep {
        y: std::array::from_fn(|k| load512(&q[k])),
        bsum: load512(&b),
        d: q8k_scales4(a),
    }
}

/// [`Tile4::dot4`] for Q4_K: per activation row four chained `vpdpbusd` (one sub-block per
/// lane, see [`Q4KDec4`]); rows (0, 1) and (2, 3) packed together, so one `vpmaddwd` scales a
/// pair and leaves row j in lanes 4c + {0, 1} and row k in 4c + {2, 3}; two `vshufps` and an
/// add bring row j to lane 4c + j, where the mins' `vpmaddwd` already puts it, and one tree
/// over the four chunks reduces both. Exact integers, then `k4_dot`'s two fused steps.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4k_dot4(w: &Q4KDec4, p: &Q4KPrep, acc: __m128) -> __m128 {
    let zero = _mm512_setzero_si512();
    let r = |y: &[__m512i]| {
        let x = _mm512_dpbusd_epi32(zero, w.q[0], y[0]);
        let x = _mm512_dpbusd_epi32(x, w.q[1], y[1]);
        let x = _mm512_dpbusd_epi32(x, w.q[2], y[2]);
        _mm512_dpbusd_epi32(x, w.q[3], y[3])
    };
    let (r0, r1, r2, r3) = (r(&p.y[..4]), r(&p.y[4..8]), r(&p.y[8..12]), r(&p.y[12..]));
    let a01 = _mm512_castsi512_ps(_mm512_madd_epi16(_mm512_packs_epi32(r0, r1), w.sc));
    let a23 = _mm512_castsi512_ps(_mm512_madd_epi16(_mm512_packs_epi32(r2, r3), w.sc));
    // Lane 4c + j: row j's scaled sums of sub-blocks 2c and 2c + 1.
    let c = _mm512_add_epi32(
        _mm512_castps_si512(_mm512_shuffle_ps::<0b10_00_10_00>(a01, a23)),
        _mm512_castps_si512(_mm512_shuffle_ps::<0b11_01_11_01>(a01, a23)),
    );
    let m = _mm512_madd_epi16(p.bsum, w.mins);
    // Chunks summed: 128-bit lane 0 the four rows' sumi, lane 2 their summ.
    let z = _mm512_add_epi32(
        _mm512_shuffle_i64x2::<0b01_00_01_00>(c, m),
        _mm512_shuffle_i64x2::<0b11_10_11_10>(c, m),
    );
    let z = _mm512_add_epi32(z, _mm512_shuffle_i64x2::<0b10_11_00_01>(z, z));
    let f = _mm512_cvtepi32_ps(z);
    let (sumi, summ) = (_mm512_castps512_ps128(f), _mm512_extractf32x4_ps::<2>(f));
    let acc = _mm_fmadd_ps(sumi, _mm_mul_ps(w.d, p.d), acc);
    _mm_fnmadd_ps(summ, _mm_mul_ps(w.dmin, p.d), acc)
}

/// Implements [`Tile4`] for a K-quant tile from its prepared-block type, its preparation and
/// its four-row dot, and the preparation and rows of single-sequence decode.
macro_rules! kquant_tile4 {
    (
        $name:ident, $dec4:ty, $decode4:ident, $dec_of:ident, $prep:ty, $prepare:ident,
        $dot4:ident, $prepare1:ident, $rows1:ident
    ) => {
        impl Tile4 for $name {
            type Prep = $prep;
            type Dec4 = $dec4;
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn decode4(w: &[<Self as Tile>::W]) -> $dec4 {
                $decode4(&w[0])
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn dec_of(w: &[<Self as Tile>::W], d4: &$dec4) -> <Self as Tile>::Dec {
                $dec_of(&w[0], d4)
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn prep(ys: [&[BlockQ8K]; 4], s: usize) -> $prep {
                $prepare(ys.map(|y| &y[s]))
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn dot4(w: &$dec4, p: &$prep, acc: __m128) -> __m128 {
                $dot4(w, p, acc)
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn prepare1(nb: usize, y: &[BlockQ8K], buf: &mut Vec<Line>) {
                $prepare1(nb, y, buf)
            }
            #[inline]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
            unsafe fn rows1(
                nb: usize,
                w: &[u8],
                rb: usize,
                rows: usize,
                y: &[BlockQ8K],
                prepared: &[Line],
                out: &mut [f32],
            ) {
                $rows1::<Self>(nb, w, rb, rows, y, prepared, out)
            }
        }
    };
}

kquant_tile4!(
    Q4KT,
    Q4KDec4,
    q4k_decode4,
    q4k_dec_of,
    Q4KPrep,
    q4k_prep,
    q4k_dot4,
    k4_prepare1,
    k4_rows1
);
kquant_tile4!(
    Q5KT,
    K4Dec,
    q5k_decode,
    same_dec,
    K4Prep,
    k4_prep,
    k4_dot4,
    k4_prepare1,
    k4_rows1
);
kquant_tile4!(
    Q6KT,
    Q6Dec,
    q6k_decode,
    same_dec,
    Q6Prep,
    q6_prep,
    q6k_dot4,
    no_prepare1,
    rows1_per_row
);

/// [`Tile4::dec_of`] where the four-row tile reads the per-row `Dec`.
fn same_dec<W, D: Copy>(_: &W, d4: &D) -> D {
    *d4
}

/// [`Tile4::dec_of`] for Q4_K, whose four-row layout is not the per-row one.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q4k_dec_of(w: &BlockQ4K, _: &Q4KDec4) -> K4Dec {
    q4k_decode(w)
}

/// [`Tile4::prepare1`] of a format whose single-sequence decode reads the activation row as is.
fn no_prepare1(_: usize, _: &[BlockQ8K], buf: &mut Vec<Line>) {
    buf.clear();
}

/// [`Tile4::prepare1`] for Q4_K/Q5_K: the row's blocks in nibble order ([`k4_act`]), so that
/// the kernel does not shuffle them again for every weight row.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn k4_prepare1(nb: usize, y: &[BlockQ8K], buf: &mut Vec<Line>) {
    for (p, a) in preps_mut::<Q8KAct>(buf, nb).iter_mut().zip(&y[..nb]) {
        *p = k4_act(a);
    }
}

/// [`Tile4::rows1`] for Q4_K/Q5_K: each row through the per-row dot against the blocks
/// [`k4_prepare1`] made.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn k4_rows1<K>(
    nb: usize,
    w: &[u8],
    rb: usize,
    rows: usize,
    _: &[BlockQ8K],
    prepared: &[Line],
    out: &mut [f32],
) where
    K: Tile<A = BlockQ8K, Dec = K4Dec, Act = Q8KAct, Acc = f32>,
{
    let acts = preps::<Q8KAct>(prepared);
    assert_eq!(
        acts.len(),
        nb,
        "vec_dot_multi_rows: activations prepared for another row"
    );
    let block_bytes = std::mem::size_of::<K::W>();
    // SAFETY: `K` is a tile of this module, whose methods need a subset of the features this
    // function is compiled for.
    unsafe {
        for (i, o) in out[..rows].iter_mut().enumerate() {
            let wr = as_blocks::<K::W>(&w[i.saturating_mul(rb)..], nb);
            let mut acc = 0f32;
            for (b, a) in wr.chunks_exact(1).zip(acts) {
                // As in `multi`: the weight rows stream once from DRAM.
                let pw = b.as_ptr().cast::<i8>();
                for k in (0..block_bytes).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T1>(pw.wrapping_add(super::PREFETCH_AHEAD + k));
                }
                acc = K::dot(&K::decode(b), a, acc);
            }
            *o = acc;
        }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q6_prep(a: [&BlockQ8K; 4]) -> Q6Prep {
    Q6Prep {
        y: q8k_qs4(a),
        bsums: [
            join(load256(&a[0].bsums), load256(&a[1].bsums)),
            join(load256(&a[2].bsums), load256(&a[3].bsums)),
        ],
        d: q8k_scales4(a),
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn k4_prep(a: [&BlockQ8K; 4]) -> K4Prep {
    let mut b = [0i16; 32];
    for (j, b) in b.chunks_exact_mut(8).enumerate() {
        for (k, b) in b.iter_mut().enumerate() {
            // |Σ| ≤ 32 · 127: exact in i16.
            *b = (a[j].bsum(2 * k) + a[j].bsum(2 * k + 1)) as i16;
        }
    }
    let q = a.map(|a| nibble_order(q8k_qs(a)));
    K4Prep {
        y: std::array::from_fn(|k| q[k / 4][k % 4]),
        bsum32: load512(&b),
        d: q8k_scales4(a),
    }
}

/// Groups of four activation rows for `n` rows (1..=8): a group of two or three is padded
/// with its last row (the lanes are computed and dropped), a fifth row goes through the
/// per-activation `dot`. (groups, single rows)
fn act_groups(n: usize) -> (usize, usize) {
    match n {
        5 => (1, 1),
        n => (n.div_ceil(4), 0),
    }
}

/// The activation rows `ys` (1..=8, at least `nb` blocks each) prepared into `buf` for
/// [`multi_rows`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn prepare<K: Tile4>(nb: usize, ys: &[&[K::A]], buf: &mut Vec<Line>) {
    if let [y] = ys {
        // SAFETY: `K: Tile4` of this module, compiled for a subset of this function's features.
        return unsafe { K::prepare1(nb, y, buf) };
    }
    let (groups, singles) = act_groups(ys.len());
    let grouped = ys.len() - singles;
    let steps = nb / K::STEP;
    let prep = preps_mut::<K::Prep>(buf, groups * steps);
    for (g, prep) in prep.chunks_exact_mut(steps.max(1)).enumerate() {
        let grp: [&[K::A]; 4] = std::array::from_fn(|j| &ys[(4 * g + j).min(grouped - 1)][..nb]);
        for (s, p) in prep.iter_mut().enumerate() {
            // SAFETY: as above.
            *p = unsafe { K::prep(grp, s) };
        }
    }
}

/// `out[i · n + j]` = row i of `w` (rows `rb` bytes apart, `nb` blocks each) · `ys[j]`, for
/// `n = ys.len()` in 1..=8 activation rows of at least `nb` blocks, prepared into `prepared`
/// by [`prepare`].
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn multi_rows<K: Tile4>(
    nb: usize,
    w: &[u8],
    rb: usize,
    rows: usize,
    ys: &[&[K::A]],
    prepared: &[Line],
    out: &mut [f32],
) {
    match act_groups(ys.len()) {
        // SAFETY: `K: Tile4` of this module, compiled for a subset of this function's features.
        _ if ys.len() == 1 => unsafe { K::rows1(nb, w, rb, rows, ys[0], prepared, out) },
        (1, 0) => multi_rows_g::<K, 1, 0>(nb, w, rb, rows, ys, prepared, out),
        (1, 1) => multi_rows_g::<K, 1, 1>(nb, w, rb, rows, ys, prepared, out),
        (2, 0) => multi_rows_g::<K, 2, 0>(nb, w, rb, rows, ys, prepared, out),
        _ => panic!(
            "vec_dot_multi_rows: {} activation rows (1..=8 allowed)",
            ys.len()
        ),
    }
}

/// [`multi_rows`] with `G` groups of four activation rows and `S` (0 or 1) single rows.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn multi_rows_g<K: Tile4, const G: usize, const S: usize>(
    nb: usize,
    w: &[u8],
    rb: usize,
    rows: usize,
    ys: &[&[K::A]],
    prepared: &[Line],
    out: &mut [f32],
) {
    let n = ys.len();
    let grouped = n - S;
    let steps = nb / K::STEP;
    let body = steps * K::STEP;
    let grp: [[&[K::A]; 4]; G] =
        std::array::from_fn(|g| std::array::from_fn(|j| &ys[(4 * g + j).min(grouped - 1)][..nb]));
    let prep = preps::<K::Prep>(prepared);
    assert_eq!(
        prep.len(),
        G * steps,
        "vec_dot_multi_rows: activations prepared for other rows"
    );
    let step_bytes = K::STEP * std::mem::size_of::<K::W>();
    // SAFETY: `K: Tile4` of this module, whose methods need a subset of the features this
    // function is compiled for (and its caller has detected).
    unsafe {
        for (i, o) in out[..rows * n].chunks_exact_mut(n).enumerate() {
            let wr = as_blocks::<K::W>(&w[i.saturating_mul(rb)..], nb);
            let mut acc4 = [_mm_setzero_ps(); G];
            let mut acc1 = [K::zero(); S];
            for s in 0..steps {
                let r = s * K::STEP..(s + 1) * K::STEP;
                // As in `multi`: the weight rows stream once from DRAM.
                let pw = wr[r.start..].as_ptr().cast::<i8>();
                for k in (0..step_bytes).step_by(64) {
                    _mm_prefetch::<_MM_HINT_T1>(pw.wrapping_add(super::PREFETCH_AHEAD + k));
                }
                let dec4 = K::decode4(&wr[r.clone()]);
                for g in 0..G {
                    acc4[g] = K::dot4(&dec4, &prep[g * steps + s], acc4[g]);
                }
                if S > 0 {
                    let dec = K::dec_of(&wr[r.clone()], &dec4);
                    for (k, a) in acc1.iter_mut().enumerate() {
                        *a = K::dot(&dec, &K::act(&ys[grouped + k][r.clone()]), *a);
                    }
                }
            }
            for (g, acc) in acc4.iter().enumerate() {
                let mut lanes = [0f32; 4];
                _mm_storeu_ps(lanes.as_mut_ptr(), *acc);
                for (j, &l) in lanes.iter().enumerate().take(grouped - 4 * g) {
                    o[4 * g + j] = K::finish(l, &wr[body..], &grp[g][j][body..]);
                }
            }
            for (k, &a) in acc1.iter().enumerate() {
                o[grouped + k] = K::finish(a, &wr[body..], &ys[grouped + k][body..nb]);
            }
        }
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let len = n.saturating_mul(2);
    let (x, y) = (&x[..len], &y[..len]);
    let mut acc = [_mm512_setzero_ps(); 4];
    let (xc, yc) = (x.chunks_exact(128), y.chunks_exact(128));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (xs, ys) in xc.zip(yc) {
        for (k, a) in acc.iter_mut().enumerate() {
            let xv = _mm512_cvtph_ps(load256(&xs[32 * k..]));
            let yv = _mm512_cvtph_ps(load256(&ys[32 * k..]));
            *a = _mm512_fmadd_ps(xv, yv, *a);
        }
    }
    let acc = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(acc) + avx2::dot_f16(xr.len() / 2, xr, yr)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [_mm512_setzero_ps(); 4];
    let (ac, bc) = (a.chunks_exact(64), b.chunks_exact(64));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (xs, ys) in ac.zip(bc) {
        for (k, s) in acc.iter_mut().enumerate() {
            *s = _mm512_fmadd_ps(load_ps512(&xs[16 * k..]), load_ps512(&ys[16 * k..]), *s);
        }
    }
    let acc = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    _mm512_reduce_add_ps(acc) + avx2::dot_f32(ar, br)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (ab, b) = (f16_bits(&a[..n]), &b[..n]);
    let mut acc = [_mm512_setzero_ps(); 4];
    let (ac, bc) = (ab.chunks_exact(64), b.chunks_exact(64));
    let done = n - ac.remainder().len();
    for (xs, ys) in ac.zip(bc) {
        for (k, s) in acc.iter_mut().enumerate() {
            let xv = _mm512_cvtph_ps(load256(&xs[16 * k..]));
            *s = _mm512_fmadd_ps(xv, load_ps512(&ys[16 * k..]), *s);
        }
    }
    let acc = _mm512_add_ps(_mm512_add_ps(acc[0], acc[1]), _mm512_add_ps(acc[2], acc[3]));
    let sum = hsum_ps(acc);
    // Attention rows are usually whole multiples of 64 (head_dim): skip the call then.
    if done == n {
        sum
    } else {
        sum + avx2::dot_f16_f32(&a[done..n], &b[done..])
    }
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn axpy_f16(acc: &mut [f32], alpha: f32, x: &[f16]) {
    let n = acc.len().min(x.len());
    let (acc, xb) = (&mut acc[..n], f16_bits(&x[..n]));
    let va = _mm512_set1_ps(alpha);
    let mut ac = acc.chunks_exact_mut(16);
    let xc = xb.chunks_exact(16);
    let done = n - xc.remainder().len();
    for (a, xs) in (&mut ac).zip(xc) {
        let v = _mm512_fmadd_ps(va, _mm512_cvtph_ps(load256(xs)), load_ps512(a));
        // SAFETY: `a` is a chunk of exactly 16 f32; `storeu` has no alignment requirement.
        unsafe { _mm512_storeu_ps(a.as_mut_ptr(), v) };
    }
    if done < n {
        avx2::axpy_f16(ac.into_remainder(), alpha, &x[done..n]);
    }
}

/// Attention scores of `g = q.len() / hd` query heads against `n_pos` cached key rows
/// (`k[p * stride..][..hd]`, f16): `out[j * n_pos + p]` = `dot_f16_f32(key p, query j)`, with
/// the same arithmetic as [`dot_f16_f32`] (so the results are bit-identical to calling it per
/// pair), each key row converted once for all heads when `hd` is 64.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn attn_scores(
    k: &[f16],
    stride: usize,
    n_pos: usize,
    q: &[f32],
    hd: usize,
    out: &mut [f32],
) {
    let g = q.len() / hd;
    let kb = f16_bits(k);
    if hd != 64 {
        for p in 0..n_pos {
            let kr = &k[p * stride..p * stride + hd];
            for j in 0..g {
                out[j * n_pos + p] = dot_f16_f32(kr, &q[j * hd..(j + 1) * hd]);
            }
        }
        return;
    }
    // Sixteen key rows at a time: converted once for all heads, and each head's sixteen
    // sums reduced together (`hsum16_ps`, the additions of `hsum_ps`).
    let zero = _mm512_setzero_ps();
    let mut kf = [[zero; 4]; 16];
    let mut p0 = 0;
    while p0 < n_pos {
        let np = (n_pos - p0).min(16);
        for (t, x) in kf.iter_mut().enumerate().take(np) {
            let kr = &kb[(p0 + t) * stride..(p0 + t) * stride + 64];
            *x = [
                _mm512_cvtph_ps(load256(&kr[..16])),
                _mm512_cvtph_ps(load256(&kr[16..32])),
                _mm512_cvtph_ps(load256(&kr[32..48])),
                _mm512_cvtph_ps(load256(&kr[48..])),
            ];
        }
        for j in 0..g {
            let qj = &q[j * 64..(j + 1) * 64];
            let qv = [
                load_ps512(&qj[..16]),
                load_ps512(&qj[16..32]),
                load_ps512(&qj[32..48]),
                load_ps512(&qj[48..]),
            ];
            let mut acc = [zero; 16];
            for (a, x) in acc.iter_mut().zip(&kf).take(np) {
                // As `dot_f16_f32`: one fused multiply-add into each zeroed accumulator.
                *a = _mm512_add_ps(
                    _mm512_add_ps(
                        _mm512_fmadd_ps(x[0], qv[0], zero),
                        _mm512_fmadd_ps(x[1], qv[1], zero),
                    ),
                    _mm512_add_ps(
                        _mm512_fmadd_ps(x[2], qv[2], zero),
                        _mm512_fmadd_ps(x[3], qv[3], zero),
                    ),
                );
            }
            let o = &mut out[j * n_pos + p0..j * n_pos + p0 + np];
            if np == 16 {
                // SAFETY: `o` holds exactly 16 f32; `storeu` has no alignment requirement.
                unsafe { _mm512_storeu_ps(o.as_mut_ptr(), hsum16_ps(&acc)) };
            } else {
                for (o, &a) in o.iter_mut().zip(&acc) {
                    *o = hsum_ps(a);
                }
            }
        }
        p0 += np;
    }
}

/// Σ of the 16 lanes in a fixed order: lanes i and i + 8 first, then i and i + 4, i and
/// i + 2, and the last two (the order [`hsum16_ps`] reproduces for sixteen vectors at once).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn hsum_ps(v: __m512) -> f32 {
    let hi = _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v)));
    let a = _mm256_add_ps(_mm512_castps512_ps256(v), hi);
    let b = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps::<1>(a));
    let c = _mm_add_ps(b, _mm_movehl_ps(b, b));
    _mm_cvtss_f32(_mm_add_ss(c, _mm_movehdup_ps(c)))
}

/// `[hsum_ps(v[p]) for p in 0..16]`, bit for bit (the same additions), in one transposed tree.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn hsum16_ps(v: &[__m512; 16]) -> __m512 {
    // Lanes i and i + 8: [v_a: 8 lanes | v_b: 8 lanes].
    let l1 = |a: __m512, b: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b01_00_01_00>(a, b),
            _mm512_shuffle_f32x4::<0b11_10_11_10>(a, b),
        )
    };
    // Lanes i and i + 4: quarter k of l2(P, Q) from the k-th 8-lane half of P, Q.
    let l2 = |p: __m512, q: __m512| {
        _mm512_add_ps(
            _mm512_shuffle_f32x4::<0b10_00_10_00>(p, q),
            _mm512_shuffle_f32x4::<0b11_01_11_01>(p, q),
        )
    };
    // Lanes i and i + 2 inside each quarter: [r: 2 lanes, s: 2 lanes].
    let l3 = |r: __m512, s: __m512| {
        let (r, s) = (_mm512_castps_pd(r), _mm512_castps_pd(s));
        _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(r, s)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(r, s)),
        )
    };
    let s4 = [
        l2(l1(v[0], v[1]), l1(v[2], v[3])),
        l2(l1(v[4], v[5]), l1(v[6], v[7])),
        l2(l1(v[8], v[9]), l1(v[10], v[11])),
        l2(l1(v[12], v[13]), l1(v[14], v[15])),
    ];
    let (t, u) = (l3(s4[0], s4[1]), l3(s4[2], s4[3]));
    // The last two lanes: quarter k = [v_k, v_4+k, v_8+k, v_12+k].
    let r = _mm512_add_ps(
        _mm512_shuffle_ps::<0b10_00_10_00>(t, u),
        _mm512_shuffle_ps::<0b11_01_11_01>(t, u),
    );
    let idx = _mm512_set_epi32(15, 11, 7, 3, 14, 10, 6, 2, 13, 9, 5, 1, 12, 8, 4, 0);
    _mm512_permutexvar_ps(idx, r)
}

/// e^x for 16 lanes (Cephes `expf`: range reduction by ln 2 in two parts, a degree-5
/// polynomial, `vscalefps`), within 2 ulp of the correctly rounded value where the result is
/// normal; 0 below -87.3 (where `expf` gives subnormals: probabilities that small vanish in
/// the f16 rounding that follows anyway).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn exp_ps(x: __m512) -> __m512 {
    let tiny = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(x, _mm512_set1_ps(-87.3));
    let x = _mm512_min_ps(x, _mm512_set1_ps(88.7));
    let n = _mm512_roundscale_ps::<_MM_FROUND_TO_NEAREST_INT>(_mm512_mul_ps(
        x,
        _mm512_set1_ps(std::f32::consts::LOG2_E),
    ));
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693_359_4), x);
    let r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm512_set1_ps(1.987_569_2e-4);
    for c in [1.398_2e-3, 8.333_452e-3, 4.166_579_6e-2, 0.166_666_65, 0.5] {
        p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(c));
    }
    let y = _mm512_fmadd_ps(
        _mm512_mul_ps(p, r),
        r,
        _mm512_add_ps(r, _mm512_set1_ps(1.0)),
    );
    _mm512_maskz_mov_ps(!tiny, _mm512_scalef_ps(y, n))
}

/// `gate = silu(gate) · up` (silu(x) = x / (1 + e^-x)) with [`exp_ps`]; the elements past the
/// last whole 16 through `expf`.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn silu_mul(gate: &mut [f32], up: &[f32]) {
    let n = gate.len().min(up.len());
    let (gate, up) = (&mut gate[..n], &up[..n]);
    let one = _mm512_set1_ps(1.0);
    let mut gc = gate.chunks_exact_mut(16);
    let uc = up.chunks_exact(16);
    let done = n - uc.remainder().len();
    for (g, u) in (&mut gc).zip(uc) {
        let x = load_ps512(g);
        let e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), x));
        let v = _mm512_mul_ps(_mm512_div_ps(x, _mm512_add_ps(one, e)), load_ps512(u));
        // SAFETY: `g` is a chunk of exactly 16 f32; `storeu` has no alignment requirement.
        unsafe { _mm512_storeu_ps(g.as_mut_ptr(), v) };
    }
    for (g, &u) in gc.into_remainder().iter_mut().zip(&up[done..]) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// Softmax numerators of one head's attention scores, in place: `x = e^(x·scale - max)`;
/// returns 1 / Σ x (summed in f64).
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn attn_softmax(scores: &mut [f32], scale: f32) -> f32 {
    let vs = _mm512_set1_ps(scale);
    let mut vmax = _mm512_set1_ps(f32::NEG_INFINITY);
    let mut chunks = scores.chunks_exact_mut(16);
    for c in &mut chunks {
        let x = _mm512_mul_ps(load_ps512(c), vs);
        vmax = _mm512_max_ps(vmax, x);
        // SAFETY: `c` is a chunk of exactly 16 f32; `storeu` has no alignment requirement.
        unsafe { _mm512_storeu_ps(c.as_mut_ptr(), x) };
    }
    let mut max = _mm512_reduce_max_ps(vmax);
    for x in chunks.into_remainder() {
        *x *= scale;
        max = max.max(*x);
    }
    let vm = _mm512_set1_ps(max);
    let (mut s0, mut s1) = (_mm512_setzero_pd(), _mm512_setzero_pd());
    let mut chunks = scores.chunks_exact_mut(16);
    for c in &mut chunks {
        let e = exp_ps(_mm512_sub_ps(load_ps512(c), vm));
        s0 = _mm512_add_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(e)));
        s1 = _mm512_add_pd(
            s1,
            _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(
                _mm512_castps_pd(e),
            ))),
        );
        // SAFETY: as above.
        unsafe { _mm512_storeu_ps(c.as_mut_ptr(), e) };
    }
    let mut sum = _mm512_reduce_add_pd(_mm512_add_pd(s0, s1));
    for x in chunks.into_remainder() {
        *x = (*x - max).exp();
        sum += f64::from(*x);
    }
    (1.0 / sum) as f32
}

/// The attention-weighted sum of `n_pos` cached value rows (`v[p * stride..][..hd]`, f16) for
/// `g = inv.len()` heads: `out[j * hd..][..hd]` = Σ_p prob(j, p) · value p, accumulated in
/// position order with one fused multiply-add per element, where prob(j, p) is
/// `probs[j * n_pos + p] · inv[j]` rounded to f16 (as llama.cpp rounds its softmax before its
/// f16 product). Bit-identical to zeroing `out` and calling [`axpy_f16`] per position.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn attn_values(
    probs: &mut [f32],
    inv: &[f32],
    v: &[f16],
    stride: usize,
    n_pos: usize,
    hd: usize,
    out: &mut [f32],
) {
    let vb = f16_bits(v);
    let g = inv.len();
    for (j, &inv) in inv.iter().enumerate() {
        let pr = &mut probs[j * n_pos..(j + 1) * n_pos];
        // Round the probabilities to f16 and back, 16 at a time (round to nearest even, as
        // `half` does).
        let vi = _mm512_set1_ps(inv);
        let mut chunks = pr.chunks_exact_mut(16);
        for c in &mut chunks {
            let r = _mm512_cvtph_ps(_mm512_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm512_mul_ps(
                load_ps512(c),
                vi,
            )));
            // SAFETY: `c` is a chunk of exactly 16 f32; `storeu` has no alignment requirement.
            unsafe { _mm512_storeu_ps(c.as_mut_ptr(), r) };
        }
        for x in chunks.into_remainder() {
            *x = f16::from_f32(*x * inv).to_f32();
        }
    }
    let probs = &probs[..g * n_pos];
    if !hd.is_multiple_of(16) {
        for (j, pr) in probs.chunks_exact(n_pos.max(1)).enumerate().take(g) {
            let o = &mut out[j * hd..(j + 1) * hd];
            o.fill(0.0);
            for (p, &pr) in pr.iter().enumerate() {
                axpy_f16(o, pr, &v[p * stride..p * stride + hd]);
            }
        }
        return;
    }
    // 64 columns of up to four heads at once: each value row is converted once for the
    // heads, and the heads' sixteen accumulators are independent chains of fused
    // multiply-adds (one column alone waits 4 cycles per position on its own accumulator).
    let mut c0 = 0;
    while c0 + 64 <= hd {
        let mut j = 0;
        while j < g {
            let h = (g - j).min(4);
            let a = ValueCols {
                probs,
                vb,
                stride,
                n_pos,
                hd,
                c0,
                j,
            };
            match h {
                4 => value_cols::<4>(a, out),
                3 => value_cols::<3>(a, out),
                2 => value_cols::<2>(a, out),
                _ => value_cols::<1>(a, out),
            }
            j += h;
        }
        c0 += 64;
    }
    while c0 < hd {
        for j in 0..g {
            let pr = &probs[j * n_pos..(j + 1) * n_pos];
            let mut a = _mm512_setzero_ps();
            for (p, &pr) in pr.iter().enumerate() {
                let x = _mm512_cvtph_ps(load256(&vb[p * stride + c0..]));
                a = _mm512_fmadd_ps(_mm512_set1_ps(pr), x, a);
            }
            // SAFETY: `out[j * hd + c0..][..16]` is in bounds (hd is a multiple of 16).
            unsafe { _mm512_storeu_ps(out[j * hd + c0..j * hd + c0 + 16].as_mut_ptr(), a) };
        }
        c0 += 16;
    }
}

/// Where [`value_cols`] works: the rounded probabilities of every head, the value rows,
/// the first column `c0` and the first head `j`.
#[derive(Clone, Copy)]
struct ValueCols<'a> {
    probs: &'a [f32],
    vb: &'a [u16],
    stride: usize,
    n_pos: usize,
    hd: usize,
    c0: usize,
    j: usize,
}

/// Columns `c0..c0 + 64` of heads `j..j + H` of [`attn_values`], positions in order.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn value_cols<const H: usize>(a: ValueCols<'_>, out: &mut [f32]) {
    let ValueCols {
        probs,
        vb,
        stride,
        n_pos,
        hd,
        c0,
        j,
    } = a;
    let pr: [&[f32]; H] = std::array::from_fn(|h| &probs[(j + h) * n_pos..(j + h + 1) * n_pos]);
    let mut acc = [[_mm512_setzero_ps(); 4]; H];
    for p in 0..n_pos {
        let row = &vb[p * stride + c0..p * stride + c0 + 64];
        let x = [
            _mm512_cvtph_ps(load256(&row[..16])),
            _mm512_cvtph_ps(load256(&row[16..32])),
            _mm512_cvtph_ps(load256(&row[32..48])),
            _mm512_cvtph_ps(load256(&row[48..])),
        ];
        for (acc, pr) in acc.iter_mut().zip(&pr) {
            let pv = _mm512_set1_ps(pr[p]);
            for (a, &x) in acc.iter_mut().zip(&x) {
                *a = _mm512_fmadd_ps(pv, x, *a);
            }
        }
    }
    for (h, acc) in acc.iter().enumerate() {
        for (k, &a) in acc.iter().enumerate() {
            let o0 = (j + h) * hd + c0 + 16 * k;
            let dst = &mut out[o0..o0 + 16];
            // SAFETY: `dst` holds exactly 16 f32; `storeu` has no alignment requirement.
            unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), a) };
        }
    }
}

/// `quantize_row_q8_0` (the x86 path: q = round-half-even(x · 127/amax)) with AVX-512,
/// bit-identical to the scalar reference: the same amax (NaNs skipped, as `vmaxps` returns
/// its second operand when the first is NaN), the same f32 products rounded half to even by
/// `vcvtps2dq`, NaN products mapped to 0 as Rust's `as` cast does. Blocks whose 127/amax is
/// not finite (a subnormal or infinite maximum) take the scalar path.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn quantize_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(32)) {
        let v = [load_ps512(&x[..16]), load_ps512(&x[16..])];
        let m = _mm512_max_ps(
            _mm512_abs_ps(v[1]),
            _mm512_max_ps(_mm512_abs_ps(v[0]), _mm512_setzero_ps()),
        );
        let amax = _mm512_reduce_max_ps(m);
        let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
        if !id.is_finite() || !amax.is_finite() {
            super::super::scalar::quantize_q8_0(x, std::slice::from_mut(b));
            continue;
        }
        let vid = _mm512_set1_ps(id);
        let mut qs = [0i8; 32];
        for (h, v) in v.into_iter().enumerate() {
            let p = _mm512_mul_ps(v, vid);
            let ok = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(p, p);
            let q = _mm512_maskz_cvtps_epi32(ok, p);
            let bytes = _mm512_cvtsepi32_epi8(q);
            // SAFETY: `qs[16 * h..]` has room for the 16 bytes stored.
            unsafe { _mm_storeu_si128(qs[16 * h..16 * h + 16].as_mut_ptr().cast(), bytes) };
        }
        b.qs = qs;
        b.d = f16::from_f32(amax / 127.0).to_le_bytes();
    }
}

/// `quantize_row_q8_K` with AVX-512, bit-identical to the scalar reference: the same amax
/// (NaNs skipped: `vmaxps` returns its second operand when the first is NaN), the same signed
/// maximum (its first occurrence), the same f32 products rounded half to even by `vcvtps2dq`,
/// NaN products mapped to 0 as Rust's `as` cast does. Blocks whose scale is not finite
/// (an infinite or subnormal maximum) take the scalar path.
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn quantize_q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(256)) {
        let v: [__m512; 16] = std::array::from_fn(|i| load_ps512(&x[16 * i..]));
        let mut m = _mm512_setzero_ps();
        for &vi in &v {
            m = _mm512_max_ps(_mm512_abs_ps(vi), m);
        }
        let amax = _mm512_reduce_max_ps(m);
        if amax == 0.0 {
            b.d = 0f32.to_le_bytes();
            b.qs = [0; 256];
            b.bsums = [0; 32];
            continue;
        }
        let am = _mm512_set1_ps(amax);
        let mut max = amax;
        for (i, &vi) in v.iter().enumerate() {
            let hit = _mm512_cmp_ps_mask::<_CMP_EQ_OQ>(_mm512_abs_ps(vi), am);
            if hit != 0 {
                max = x[16 * i + hit.trailing_zeros() as usize];
                break;
            }
        }
        let iscale = -127.0 / max;
        if !iscale.is_finite() || !amax.is_finite() {
            super::super::scalar::quantize_q8_k(x, std::slice::from_mut(b));
            continue;
        }
        let is = _mm512_set1_ps(iscale);
        let mut sums = [0i16; 16];
        for (i, &vi) in v.iter().enumerate() {
            let p = _mm512_mul_ps(is, vi);
            let ord = _mm512_cmp_ps_mask::<_CMP_ORD_Q>(p, p);
            let q = _mm512_maskz_cvtps_epi32(ord, p);
            // |q| <= 127: the sum of 16 fits an i16, and the narrowing is exact.
            sums[i] = _mm512_reduce_add_epi32(q) as i16;
            let q8 = _mm512_cvtepi32_epi8(q);
            // SAFETY: `b.qs[16 * i..]` holds at least 16 bytes; `storeu` has no alignment
            // requirement.
            unsafe { _mm_storeu_si128(b.qs[16 * i..16 * i + 16].as_mut_ptr().cast(), q8) };
        }
        for (o, s) in b.bsums.chunks_exact_mut(2).zip(sums) {
            o.copy_from_slice(&s.to_le_bytes());
        }
        b.d = (1.0 / iscale).to_le_bytes();
    }
}
