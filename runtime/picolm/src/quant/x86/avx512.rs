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
//!
//! Every function here is compiled for `avx512f,avx512bw,avx512vl,avx512vnni` on top of the
//! AVX2 set and must only be called once those features have been detected.
#![allow(unsafe_code)]

use super::super::blocks::{
    BlockQ4_0, BlockQ4K, BlockQ5_0, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8K, k4_scales_mins,
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
#[derive(Clone, Copy, Debug)]
pub(crate) struct LegacyDec {
    /// Blocks 0|1 and 2|3, 32 bytes each.
    u: [__m512i; 2],
    d: __m128,
}

/// Four Q8_0 activation blocks prepared for one weight format: the signed bytes, the offset
/// correction -o·Σy spread over each block's lanes (so a block's lanes sum to Σ u·y - o·Σ y
/// = Σ (u - o)·y), and the scales.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Q8Act {
    y: [__m512i; 2],
    corr: [__m512i; 2],
    d: __m128,
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8_0_act<const O: u8>(a: &[BlockQ8_0]) -> Q8Act {
    let a = &a[..4];
    let y = [
        join(load256(&a[0].qs), load256(&a[1].qs)),
        join(load256(&a[2].qs), load256(&a[3].qs)),
    ];
    let zero = _mm512_setzero_si512();
    let o = _mm512_set1_epi8(O as i8);
    Q8Act {
        corr: y.map(|y| _mm512_sub_epi32(zero, _mm512_dpbusd_epi32(zero, o, y))),
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
    // Lanes 0..8 of s0 are block 0, 8..16 block 1; s1 likewise blocks 2 and 3. Exact in i32.
    let s0 = _mm512_dpbusd_epi32(a.corr[0], w.u[0], a.y[0]);
    let s1 = _mm512_dpbusd_epi32(a.corr[1], w.u[1], a.y[1]);
    // 128-bit lane k of t: four partial sums of block k; then each lane's element 0 its sum.
    let t = _mm512_add_epi32(
        _mm512_shuffle_i32x4::<0b10_00_10_00>(s0, s1),
        _mm512_shuffle_i32x4::<0b11_01_11_01>(s0, s1),
    );
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

/// Four blocks' 16 packed-nibble bytes → two vectors of 64 nibbles in element order
/// (block 0 low, block 0 high, block 1 low, block 1 high | the same for blocks 2 and 3).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles_4x32(qs: [&[u8; 16]; 4]) -> [__m512i; 2] {
    let v = join(
        _mm256_set_m128i(load128(qs[1]), load128(qs[0])),
        _mm256_set_m128i(load128(qs[3]), load128(qs[2])),
    );
    let m = _mm512_set1_epi8(0xF);
    let lo = _mm512_and_si512(v, m);
    let hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), m);
    // Qwords of `lo` are 0..8, of `hi` 8..16; each block is two qwords.
    let i0 = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
    let i1 = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
    [
        _mm512_permutex2var_epi64(lo, i0, hi),
        _mm512_permutex2var_epi64(lo, i1, hi),
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

/// Bit j of `qh` is the fifth bit of element j: two blocks side by side pair byte i of a
/// vector with bit i of a 64-bit mask.
#[inline(always)]
fn qh_mask(a: &BlockQ5_0, b: &BlockQ5_0) -> u64 {
    u64::from(u32::from_le_bytes(a.qh)) | (u64::from(u32::from_le_bytes(b.qh)) << 32)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q5_0_decode4(w: &[BlockQ5_0]) -> [__m512i; 2] {
    let [a, b] = nibbles_4x32([&w[0].qs, &w[1].qs, &w[2].qs, &w[3].qs]);
    let sixteen = _mm512_set1_epi8(16);
    [
        _mm512_mask_add_epi8(a, qh_mask(&w[0], &w[1]), a, sixteen),
        _mm512_mask_add_epi8(b, qh_mask(&w[2], &w[3]), b, sixteen),
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
    [
        _mm512_xor_si512(join(load256(&w[0].qs), load256(&w[1].qs)), bias),
        _mm512_xor_si512(join(load256(&w[2].qs), load256(&w[3].qs)), bias),
    ]
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

/// A Q8_K activation block in registers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Q8KAct {
    y: [__m512i; 4],
    bsums: __m256i,
    d: __m512,
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q8k_act(a: &BlockQ8K) -> Q8KAct {
    Q8KAct {
        y: [
            load512(&a.qs[..]),
            load512(&a.qs[64..]),
            load512(&a.qs[128..]),
            load512(&a.qs[192..]),
        ],
        bsums: load256(&a.bsums),
        d: _mm512_set1_ps(a.d()),
    }
}

/// vpermw indices that spread sub-block scales over the i16 lanes of two packed `vpdpbusd`
/// results. `vpdpbusd` of 64 elements gives 16 i32 lanes of four products each (|sum| ≤
/// 4·63·127 < 2^15), and `vpackssdw(p0, p1)` puts, in each 128-bit lane L, four lanes of p0
/// and then four of p1: i16 lane i = 8L + k comes from p0 (k < 4) or p1 (k ≥ 4), i32 lane
/// 4L + k % 4.
///
/// Q4_K/Q5_K (rows 0, 1: chunk pair 2P, 2P + 1): p_c's lanes 0..8 are sub-block 2c, 8..16
/// sub-block 2c + 1, so lane i takes scale 4P + 2·(k ≥ 4) + (L ≥ 2). Row 2 takes min `j / 2`
/// (from lane 8 of the scale/min vector on) for bsums `j`.
static K4_IDX: [[u16; 32]; 3] = {
    let mut t = [[0u16; 32]; 3];
    let mut i = 0;
    while i < 32 {
        let (l, k) = (i / 8, i % 8);
        let sb = 2 * (k >= 4) as usize + (l >= 2) as usize;
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

/// 32 bytes of packed nibbles → [low nibbles | high nibbles] (64 elements in order).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles_64(qs: &[u8]) -> __m512i {
    let b = _mm512_broadcast_i64x4(load256(qs));
    let b = _mm512_mask_srli_epi16(b, 0xFFFF_0000, b, 4);
    _mm512_and_si512(b, _mm512_set1_epi8(0xF))
}

macro_rules! kquant_tile {
    ($name:ident, $wb:ty, $decode:ident, $dot:ident, $dec:ty) => {
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
                q8k_act(&a[0])
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
    // 32 bytes hold sub-block 2c in the low nibbles and 2c + 1 in the high ones, which pair
    // with the next 64 activations in order.
    let q = [
        nibbles_64(&x.qs[..]),
        nibbles_64(&x.qs[32..]),
        nibbles_64(&x.qs[64..]),
        nibbles_64(&x.qs[96..]),
    ];
    k4_dec(q, &x.scales, x.d, x.dmin)
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q5k_decode(x: &BlockQ5K) -> K4Dec {
    // Bit 2c of qh[l] is the fifth bit of element 64c + l, bit 2c + 1 that of 64c + 32 + l.
    let qh = _mm512_broadcast_i64x4(load256(&x.qh));
    let sixteens = _mm512_set1_epi8(16);
    let mut q = [_mm512_setzero_si512(); 4];
    for (c, q) in q.iter_mut().enumerate() {
        let bits = join(
            _mm256_set1_epi8((1u8 << (2 * c)) as i8),
            _mm256_set1_epi8((2u8 << (2 * c)) as i8),
        );
        let n = nibbles_64(&x.qs[32 * c..]);
        *q = _mm512_mask_add_epi8(n, _mm512_test_epi8_mask(qh, bits), n, sixteens);
    }
    k4_dec(q, &x.scales, x.d, x.dmin)
}

kquant_tile!(Q4KT, BlockQ4K, q4k_decode, k4_dot, K4Dec);
kquant_tile!(Q5KT, BlockQ5K, q5k_decode, k4_dot, K4Dec);

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

kquant_tile!(Q6KT, BlockQ6K, q6k_decode, q6k_dot, Q6Dec);

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
    let sum = _mm512_reduce_add_ps(acc);
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
    for p in 0..n_pos {
        let kr = &kb[p * stride..p * stride + 64];
        let x: [__m512; 4] = std::array::from_fn(|c| _mm512_cvtph_ps(load256(&kr[16 * c..])));
        for j in 0..g {
            let qj = &q[j * 64..(j + 1) * 64];
            // As `dot_f16_f32`: one fused multiply-add into each zeroed accumulator.
            let zero = _mm512_setzero_ps();
            let a: [__m512; 4] =
                std::array::from_fn(|c| _mm512_fmadd_ps(x[c], load_ps512(&qj[16 * c..]), zero));
            let acc = _mm512_add_ps(_mm512_add_ps(a[0], a[1]), _mm512_add_ps(a[2], a[3]));
            out[j * n_pos + p] = _mm512_reduce_add_ps(acc);
        }
    }
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
        let o = &mut out[j * hd..(j + 1) * hd];
        if !hd.is_multiple_of(16) {
            o.fill(0.0);
            for (p, &pr) in pr.iter().enumerate() {
                axpy_f16(o, pr, &v[p * stride..p * stride + hd]);
            }
            continue;
        }
        // Up to four 16-lane columns at once: independent chains of fused multiply-adds
        // (one column alone waits 4 cycles per position on its own accumulator).
        let mut c0 = 0;
        while c0 + 64 <= hd {
            let (mut a0, mut a1, mut a2, mut a3) = (
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
                _mm512_setzero_ps(),
            );
            for (p, &pr) in pr.iter().enumerate() {
                let row = &vb[p * stride + c0..p * stride + c0 + 64];
                let pv = _mm512_set1_ps(pr);
                a0 = _mm512_fmadd_ps(pv, _mm512_cvtph_ps(load256(&row[..16])), a0);
                a1 = _mm512_fmadd_ps(pv, _mm512_cvtph_ps(load256(&row[16..32])), a1);
                a2 = _mm512_fmadd_ps(pv, _mm512_cvtph_ps(load256(&row[32..48])), a2);
                a3 = _mm512_fmadd_ps(pv, _mm512_cvtph_ps(load256(&row[48..])), a3);
            }
            for (k, a) in [a0, a1, a2, a3].into_iter().enumerate() {
                let dst = &mut o[c0 + 16 * k..c0 + 16 * (k + 1)];
                // SAFETY: `dst` holds exactly 16 f32; `storeu` has no alignment requirement.
                unsafe { _mm512_storeu_ps(dst.as_mut_ptr(), a) };
            }
            c0 += 64;
        }
        while c0 < hd {
            let mut a = _mm512_setzero_ps();
            for (p, &pr) in pr.iter().enumerate() {
                let x = _mm512_cvtph_ps(load256(&vb[p * stride + c0..]));
                a = _mm512_fmadd_ps(_mm512_set1_ps(pr), x, a);
            }
            // SAFETY: `o[c0..c0 + 16]` is in bounds (hd is a multiple of 16).
            unsafe { _mm512_storeu_ps(o[c0..c0 + 16].as_mut_ptr(), a) };
            c0 += 16;
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
