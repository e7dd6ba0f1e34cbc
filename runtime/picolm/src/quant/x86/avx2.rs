//! AVX2 + FMA + F16C kernels, modelled on llama.cpp's `ggml-cpu/arch/x86/quants.c`.
//!
//! Integer products are formed with `vpmaddubsw` (unsigned × signed bytes → i16 pairs) and
//! widened with `vpmaddwd`; no intermediate can saturate for the value ranges the formats and
//! [`quantize_activation`](crate::quant::quantize_activation) produce (|activation| ≤ 127),
//! so the integer part of every block is exact and only the f32 accumulation order differs
//! from the scalar reference. Q4_0, Q5_0, Q8_0 and the K-quants implement the module's `Tile`
//! trait (see `super::tile_drivers`) for the per-row dot and the multi-row tiles; Q4_1, Q5_1
//! and the float formats have per-row kernels only.
//!
//! Every function here is `#[target_feature(enable = "avx2,fma,f16c")]` and must only be
//! called once those features have been detected (see `super::kernels`).
#![allow(unsafe_code)]

use super::super::blocks::{
    BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8_1,
    BlockQ8K, k4_scales_mins,
};
use half::f16;
use std::arch::x86_64::*;

// ---------------------------------------------------------------------------------------------
// Loads and small helpers
// ---------------------------------------------------------------------------------------------

/// Loads the first 32 bytes of `s` (bounds-checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load256<T: Copy>(s: &[T]) -> __m256i {
    let s = &s[..32 / size_of::<T>()];
    // SAFETY: `s` spans exactly 32 bytes; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Loads the first 16 bytes of `s` (bounds-checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn load128<T: Copy>(s: &[T]) -> __m128i {
    let s = &s[..16 / size_of::<T>()];
    // SAFETY: `s` spans exactly 16 bytes; `loadu` has no alignment requirement.
    unsafe { _mm_loadu_si128(s.as_ptr().cast()) }
}

/// Loads 8 f32 from the first 8 elements of `s` (bounds-checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_ps(s: &[f32]) -> __m256 {
    let s = &s[..8];
    // SAFETY: `s` holds 8 f32; `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_ps(s.as_ptr()) }
}

/// Loads 8 little-endian f32 from the first 32 bytes of `s` (bounds-checked).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load_ps_bytes(s: &[u8]) -> __m256 {
    _mm256_castsi256_ps(load256(s))
}

/// f16 (little-endian bytes) → f32 with the F16C instruction.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn h2f(b: [u8; 2]) -> f32 {
    _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(
        u16::from_le_bytes(b),
    ))))
}

/// Two f16 fields (little-endian bytes) → f32 lanes 0 and 1.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn half_pair(a: [u8; 2], b: [u8; 2]) -> __m128 {
    _mm_cvtph_ps(_mm_cvtsi32_si128(i32::from_le_bytes([
        a[0], a[1], b[0], b[1],
    ])))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn hsum_ps(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_movehdup_ps(s));
    _mm_cvtss_f32(s)
}

/// Unsigned bytes `ax` times signed bytes `sy`, summed in groups of four, as f32 lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn mul_sum_us8_pairs_float(ax: __m256i, sy: __m256i) -> __m256 {
    let dot = _mm256_maddubs_epi16(ax, sy);
    _mm256_cvtepi32_ps(_mm256_madd_epi16(dot, _mm256_set1_epi16(1)))
}

/// 16 packed bytes → 32 nibbles in element order: low nibbles first, then high nibbles.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bytes_from_nibbles_32(qs: &[u8; 16]) -> __m256i {
    let t = load128(qs);
    let b = _mm256_set_m128i(_mm_srli_epi16::<4>(t), t);
    _mm256_and_si256(b, _mm256_set1_epi8(0xF))
}

/// Spreads the 32 bits of `x` to 32 bytes: 0xFF where the bit is set, 0 elsewhere.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bytes_from_bits_32(x: u32) -> __m256i {
    // Byte i gets a copy of source byte i / 8, then every bit except bit (i % 8) is forced on,
    // so the byte is all-ones exactly when that bit was set.
    let shuf = _mm256_set_epi64x(
        0x0303030303030303,
        0x0202020202020202,
        0x0101010101010101,
        0x0000000000000000,
    );
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(x as i32), shuf);
    let bytes = _mm256_or_si256(bytes, _mm256_set1_epi64x(0x7fbfdfeff7fbfdfe));
    _mm256_cmpeq_epi8(bytes, _mm256_set1_epi64x(-1))
}

/// A vector of i16 with `lo` in the low 128 bits and `hi` in the high 128 bits.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn split_i16(lo: i16, hi: i16) -> __m256i {
    _mm256_set_m128i(_mm_set1_epi16(hi), _mm_set1_epi16(lo))
}

// ---------------------------------------------------------------------------------------------
// Legacy 32-element formats
// ---------------------------------------------------------------------------------------------

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut summs = _mm_setzero_ps();
    for (x, y) in x.iter().zip(y) {
        // [d·d', m·s] from one conversion per block side; lane 1 accumulates the mins.
        let ds = _mm_mul_ps(half_pair(x.d, x.m), half_pair(y.d, y.s));
        summs = _mm_add_ps(summs, ds);
        let d = _mm256_broadcastss_ps(ds);
        let qx = bytes_from_nibbles_32(&x.qs);
        acc = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(qx, load256(&y.qs)), acc);
    }
    hsum_ps(acc) + _mm_cvtss_f32(_mm_movehdup_ps(summs))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_q5_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut acc = _mm256_setzero_ps();
    let mut summs = _mm_setzero_ps();
    for (x, y) in x.iter().zip(y) {
        // [d·d', m·s] from one conversion per block side; lane 1 accumulates the mins.
        let ds = _mm_mul_ps(half_pair(x.d, x.m), half_pair(y.d, y.s));
        summs = _mm_add_ps(summs, ds);
        let d = _mm256_broadcastss_ps(ds);
        let hi = _mm256_and_si256(
            bytes_from_bits_32(u32::from_le_bytes(x.qh)),
            _mm256_set1_epi8(0x10),
        );
        let qx = _mm256_or_si256(bytes_from_nibbles_32(&x.qs), hi);
        acc = _mm256_fmadd_ps(d, mul_sum_us8_pairs_float(qx, load256(&y.qs)), acc);
    }
    hsum_ps(acc) + _mm_cvtss_f32(_mm_movehdup_ps(summs))
}

super::tile_drivers!("avx2,fma,f16c");

/// The f16 in the first two of four little-endian bytes, as f32 lane 0 (lane 1 holds the
/// second pair).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn f16x2(b: [u8; 4]) -> __m128 {
    super::f16x2_bits(b)
}

/// A legacy (32-element) weight block as |s| and s (signed quants), with its scale in lane 0.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LegacyDec {
    ax: __m256i,
    sx: __m256i,
    d: __m128,
}

/// A Q8_0 activation block, with its scale in lane 0.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Q8Act {
    y: __m256i,
    d: __m128,
}

/// Implements `Tile` for a legacy format from its one-block decoder, which returns the
/// signed quants and the four bytes that start the block (the f16 scale first).
macro_rules! legacy_tile {
    ($name:ident, $wb:ty, $decode:ident) => {
        #[derive(Debug)]
        pub(crate) struct $name;
        impl Tile for $name {
            type W = $wb;
            type A = BlockQ8_0;
            const STEP: usize = 1;
            type Dec = LegacyDec;
            type Act = Q8Act;
            type Acc = __m256;
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn zero() -> __m256 {
                _mm256_setzero_ps()
            }
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn decode(w: &[$wb]) -> LegacyDec {
                let (s, head) = $decode(&w[0]);
                LegacyDec {
                    ax: _mm256_sign_epi8(s, s),
                    sx: s,
                    d: f16x2(head),
                }
            }
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn act(a: &[BlockQ8_0]) -> Q8Act {
                let a = &a[0];
                Q8Act {
                    y: load256(&a.qs),
                    d: f16x2([a.d[0], a.d[1], a.qs[0] as u8, a.qs[1] as u8]),
                }
            }
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn dot(w: &LegacyDec, a: &Q8Act, acc: __m256) -> __m256 {
                // maddubs needs one unsigned operand: |s| and y with s's sign. |s| ≤ 128 and
                // |y| ≤ 127 keep the i16 pair sums below 2^15.
                let p = _mm256_maddubs_epi16(w.ax, _mm256_sign_epi8(a.y, w.sx));
                let s = _mm256_madd_epi16(p, _mm256_set1_epi16(1));
                let d = _mm256_broadcastss_ps(_mm_mul_ss(w.d, a.d));
                _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(s), acc)
            }
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn finish(acc: __m256, _: &[$wb], _: &[BlockQ8_0]) -> f32 {
                hsum_ps(acc)
            }
        }
    };
}

/// q - 8 and the block's first four bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4_0_block(x: &BlockQ4_0) -> (__m256i, [u8; 4]) {
    let s = _mm256_sub_epi8(bytes_from_nibbles_32(&x.qs), _mm256_set1_epi8(8));
    (s, [x.d[0], x.d[1], x.qs[0], x.qs[1]])
}

/// q - 16 and the block's first four bytes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5_0_block(x: &BlockQ5_0) -> (__m256i, [u8; 4]) {
    // q - 16 as a signed byte is the nibble with 0xF0 or-ed in when the fifth bit is 0.
    let hi = _mm256_andnot_si256(
        bytes_from_bits_32(u32::from_le_bytes(x.qh)),
        _mm256_set1_epi8(0xF0u8 as i8),
    );
    let s = _mm256_or_si256(bytes_from_nibbles_32(&x.qs), hi);
    (s, [x.d[0], x.d[1], x.qh[0], x.qh[1]])
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8_0_block(x: &BlockQ8_0) -> (__m256i, [u8; 4]) {
    (
        load256(&x.qs),
        [x.d[0], x.d[1], x.qs[0] as u8, x.qs[1] as u8],
    )
}

legacy_tile!(Q4_0T, BlockQ4_0, q4_0_block);
legacy_tile!(Q5_0T, BlockQ5_0, q5_0_block);
legacy_tile!(Q8_0T, BlockQ8_0, q8_0_block);

// ---------------------------------------------------------------------------------------------
// K-quants: per 32 elements, vpmaddubsw (unsigned quants × activations, i16 pairs) and
// vpmaddwd against the sub-block scale.
// ---------------------------------------------------------------------------------------------

/// A Q8_K activation block in registers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Q8KAct {
    y: [__m256i; 8],
    bsums: __m256i,
    d: __m256,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q8k_act(a: &BlockQ8K) -> Q8KAct {
    let mut y = [_mm256_setzero_si256(); 8];
    for (k, y) in y.iter_mut().enumerate() {
        *y = load256(&a.qs[32 * k..]);
    }
    Q8KAct {
        y,
        bsums: load256(&a.bsums),
        d: _mm256_set1_ps(a.d()),
    }
}

/// A Q4_K or Q5_K block in registers: quants per 32 elements (sub-block), the sub-block
/// scales as i16 lanes, the mins per bsum, and d and dmin.
#[derive(Clone, Copy, Debug)]
pub(crate) struct K4Dec {
    q: [__m256i; 8],
    sc: [__m256i; 8],
    mins: __m256i,
    d: __m256,
    dmin: __m256,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn k4_dec(q: [__m256i; 8], scales: &[u8; 12], d: [u8; 2], dmin: [u8; 2]) -> K4Dec {
    let (sc, m) = k4_scales_mins(scales);
    let mut scv = [_mm256_setzero_si256(); 8];
    for (v, &s) in scv.iter_mut().zip(&sc) {
        *v = _mm256_set1_epi16(i16::from(s));
    }
    // bsums j belongs to sub-block j / 2: [m0, m0, m1, m1, ...] as i16.
    let m = _mm_set_epi64x(0, i64::from_le_bytes(m));
    let dd = f16x2([d[0], d[1], dmin[0], dmin[1]]);
    K4Dec {
        q,
        sc: scv,
        mins: _mm256_cvtepu8_epi16(_mm_unpacklo_epi8(m, m)),
        d: _mm256_broadcastss_ps(dd),
        dmin: _mm256_broadcastss_ps(_mm_movehdup_ps(dd)),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn k4_dot(w: &K4Dec, a: &Q8KAct, acc: __m256) -> __m256 {
    let mut sumi = _mm256_setzero_si256();
    for k in 0..8 {
        let p = _mm256_maddubs_epi16(w.q[k], a.y[k]);
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, w.sc[k]));
    }
    let summ = _mm256_madd_epi16(a.bsums, w.mins);
    let f = _mm256_fnmadd_ps(
        w.dmin,
        _mm256_cvtepi32_ps(summ),
        _mm256_mul_ps(w.d, _mm256_cvtepi32_ps(sumi)),
    );
    _mm256_fmadd_ps(a.d, f, acc)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q4k_decode(x: &BlockQ4K) -> K4Dec {
    let m4 = _mm256_set1_epi8(0xF);
    let mut q = [_mm256_setzero_si256(); 8];
    for c in 0..4 {
        // 32 bytes hold sub-block 2c in the low nibbles and 2c + 1 in the high ones.
        let bits = load256(&x.qs[32 * c..]);
        q[2 * c] = _mm256_and_si256(bits, m4);
        q[2 * c + 1] = _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4);
    }
    k4_dec(q, &x.scales, x.d, x.dmin)
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q5k_decode(x: &BlockQ5K) -> K4Dec {
    let m4 = _mm256_set1_epi8(0xF);
    let sixteen = _mm256_set1_epi8(16);
    let hbits = load256(&x.qh);
    let mut q = [_mm256_setzero_si256(); 8];
    for c in 0..4 {
        // Bit 2c of qh[l] is the fifth bit of element 64c + l, bit 2c + 1 of 64c + 32 + l.
        let b_lo = _mm256_set1_epi8((1u8 << (2 * c)) as i8);
        let b_hi = _mm256_set1_epi8((2u8 << (2 * c)) as i8);
        let h_lo = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, b_lo), b_lo);
        let h_hi = _mm256_cmpeq_epi8(_mm256_and_si256(hbits, b_hi), b_hi);
        let bits = load256(&x.qs[32 * c..]);
        q[2 * c] = _mm256_or_si256(_mm256_and_si256(bits, m4), _mm256_and_si256(h_lo, sixteen));
        q[2 * c + 1] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(bits), m4),
            _mm256_and_si256(h_hi, sixteen),
        );
    }
    k4_dec(q, &x.scales, x.d, x.dmin)
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
            type Acc = __m256;
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn zero() -> __m256 {
                _mm256_setzero_ps()
            }
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn decode(w: &[$wb]) -> $dec {
                $decode(&w[0])
            }
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn act(a: &[BlockQ8K]) -> Q8KAct {
                q8k_act(&a[0])
            }
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn dot(w: &$dec, a: &Q8KAct, acc: __m256) -> __m256 {
                $dot(w, a, acc)
            }
            #[inline]
            #[target_feature(enable = "avx2,fma,f16c")]
            unsafe fn finish(acc: __m256, _: &[$wb], _: &[BlockQ8K]) -> f32 {
                hsum_ps(acc)
            }
        }
    };
}

kquant_tile!(Q4KT, BlockQ4K, q4k_decode, k4_dot, K4Dec);
kquant_tile!(Q5KT, BlockQ5K, q5k_decode, k4_dot, K4Dec);

/// A Q6_K block in registers: unsigned quants (0..64) per 32 elements, each pair of
/// sub-block scales as i16 lanes, -32 · scales for the offset, and d.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Q6Dec {
    q: [__m256i; 8],
    sc: [__m256i; 8],
    off: __m256i,
    d: __m256,
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6k_decode(x: &BlockQ6K) -> Q6Dec {
    let m4 = _mm256_set1_epi8(0xF);
    let mut q = [_mm256_setzero_si256(); 8];
    let mut sc = [_mm256_setzero_si256(); 8];
    let s = |k: usize| i16::from(x.scales[k]);
    for h in 0..2 {
        let ql1 = load256(&x.ql[64 * h..]);
        let ql2 = load256(&x.ql[64 * h + 32..]);
        let qh = load256(&x.qh[32 * h..]);
        q[4 * h] = _mm256_or_si256(
            _mm256_and_si256(ql1, m4),
            _mm256_slli_epi16::<4>(_mm256_and_si256(qh, _mm256_set1_epi8(3))),
        );
        q[4 * h + 1] = _mm256_or_si256(
            _mm256_and_si256(ql2, m4),
            _mm256_slli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(12))),
        );
        q[4 * h + 2] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
            _mm256_and_si256(qh, _mm256_set1_epi8(48)),
        );
        q[4 * h + 3] = _mm256_or_si256(
            _mm256_and_si256(_mm256_srli_epi16::<4>(ql2), m4),
            _mm256_srli_epi16::<2>(_mm256_and_si256(qh, _mm256_set1_epi8(-64))),
        );
        for k in 0..4 {
            // Each 32-element group spans two 16-element sub-blocks: one scale per half.
            sc[4 * h + k] = split_i16(s(8 * h + 2 * k), s(8 * h + 2 * k + 1));
        }
    }
    let sc16 = _mm256_cvtepi8_epi16(load128(&x.scales));
    // The two bytes before `d` are scales 14 and 15: convert all four, keep lane 1.
    let dv = f16x2([x.scales[14] as u8, x.scales[15] as u8, x.d[0], x.d[1]]);
    Q6Dec {
        q,
        sc,
        off: _mm256_sub_epi16(_mm256_setzero_si256(), _mm256_slli_epi16::<5>(sc16)),
        d: _mm256_broadcastss_ps(_mm_movehdup_ps(dv)),
    }
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn q6k_dot(w: &Q6Dec, a: &Q8KAct, acc: __m256) -> __m256 {
    // The quants are used unsigned; -32 · Σ_k scale_k · bsum_k takes the offset back off
    // (|32 · scale| ≤ 4096 fits an i16).
    let mut sumi = _mm256_madd_epi16(a.bsums, w.off);
    for k in 0..8 {
        let p = _mm256_maddubs_epi16(w.q[k], a.y[k]);
        sumi = _mm256_add_epi32(sumi, _mm256_madd_epi16(p, w.sc[k]));
    }
    _mm256_fmadd_ps(_mm256_mul_ps(w.d, a.d), _mm256_cvtepi32_ps(sumi), acc)
}

kquant_tile!(Q6KT, BlockQ6K, q6k_decode, q6k_dot, Q6Dec);

// ---------------------------------------------------------------------------------------------
// Float formats
// ---------------------------------------------------------------------------------------------

/// Weight and activation rows of `n` f16 values each (little-endian bytes), f32 accumulation
/// like `ggml_vec_dot_f16`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let len = n.saturating_mul(2);
    let (x, y) = (&x[..len], &y[..len]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let (xc, yc) = (x.chunks_exact(64), y.chunks_exact(64));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (xs, ys) in xc.zip(yc) {
        for (k, a) in acc.iter_mut().enumerate() {
            let xv = _mm256_cvtph_ps(load128(&xs[16 * k..]));
            let yv = _mm256_cvtph_ps(load128(&ys[16 * k..]));
            *a = _mm256_fmadd_ps(xv, yv, *a);
        }
    }
    let (xc, yc) = (xr.chunks_exact(16), yr.chunks_exact(16));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (xs, ys) in xc.zip(yc) {
        acc[0] = _mm256_fmadd_ps(
            _mm256_cvtph_ps(load128(xs)),
            _mm256_cvtph_ps(load128(ys)),
            acc[0],
        );
    }
    let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum_ps(acc);
    for (a, b) in xr.chunks_exact(2).zip(yr.chunks_exact(2)) {
        sum += h2f([a[0], a[1]]) * h2f([b[0], b[1]]);
    }
    sum
}

/// 8 bf16 → 8 f32: a bf16 is the top half of an f32.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) fn bf16x8(s: &[u8]) -> __m256 {
    _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(load128(s))))
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let len = n.saturating_mul(2);
    let (x, y) = (&x[..len], &y[..len]);
    let mut acc = [_mm256_setzero_ps(); 2];
    let (xc, yc) = (x.chunks_exact(32), y.chunks_exact(32));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (xs, ys) in xc.zip(yc) {
        acc[0] = _mm256_fmadd_ps(bf16x8(xs), bf16x8(ys), acc[0]);
        acc[1] = _mm256_fmadd_ps(bf16x8(&xs[16..]), bf16x8(&ys[16..]), acc[1]);
    }
    let mut sum = hsum_ps(_mm256_add_ps(acc[0], acc[1]));
    for (a, b) in xr.chunks_exact(2).zip(yr.chunks_exact(2)) {
        sum += half::bf16::from_le_bytes([a[0], a[1]]).to_f32()
            * half::bf16::from_le_bytes([b[0], b[1]]).to_f32();
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_f32_bytes(n: usize, x: &[u8], y: &[u8]) -> f32 {
    let len = n.saturating_mul(4);
    let (x, y) = (&x[..len], &y[..len]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let (xc, yc) = (x.chunks_exact(128), y.chunks_exact(128));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (xs, ys) in xc.zip(yc) {
        for (k, a) in acc.iter_mut().enumerate() {
            *a = _mm256_fmadd_ps(
                load_ps_bytes(&xs[32 * k..]),
                load_ps_bytes(&ys[32 * k..]),
                *a,
            );
        }
    }
    let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum_ps(acc);
    for (a, b) in xr.chunks_exact(4).zip(yr.chunks_exact(4)) {
        sum += f32::from_le_bytes([a[0], a[1], a[2], a[3]])
            * f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let (ac, bc) = (a.chunks_exact(32), b.chunks_exact(32));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (xs, ys) in ac.zip(bc) {
        for (k, s) in acc.iter_mut().enumerate() {
            *s = _mm256_fmadd_ps(load_ps(&xs[8 * k..]), load_ps(&ys[8 * k..]), *s);
        }
    }
    let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum_ps(acc);
    for (x, y) in ar.iter().zip(br) {
        sum += x * y;
    }
    sum
}

/// Views an f16 slice as its raw bits (f16 is `repr(transparent)` over u16).
#[inline]
pub(super) fn f16_bits(x: &[f16]) -> &[u16] {
    // SAFETY: `half::f16` is `#[repr(transparent)]` over `u16`, so the layouts are identical.
    unsafe { std::slice::from_raw_parts(x.as_ptr().cast::<u16>(), x.len()) }
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (f16_bits(&a[..n]), &b[..n]);
    let mut acc = [_mm256_setzero_ps(); 4];
    let (ac, bc) = (a.chunks_exact(32), b.chunks_exact(32));
    let (ar, br) = (ac.remainder(), bc.remainder());
    for (xs, ys) in ac.zip(bc) {
        for (k, s) in acc.iter_mut().enumerate() {
            *s = _mm256_fmadd_ps(
                _mm256_cvtph_ps(load128(&xs[8 * k..])),
                load_ps(&ys[8 * k..]),
                *s,
            );
        }
    }
    let acc = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut sum = hsum_ps(acc);
    for (&x, y) in ar.iter().zip(br) {
        sum += f16::from_bits(x).to_f32() * y;
    }
    sum
}

#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn axpy_f16(acc: &mut [f32], alpha: f32, x: &[f16]) {
    let n = acc.len().min(x.len());
    let (acc, x) = (&mut acc[..n], f16_bits(&x[..n]));
    let va = _mm256_set1_ps(alpha);
    let mut ac = acc.chunks_exact_mut(8);
    let xc = x.chunks_exact(8);
    let xr = xc.remainder();
    for (a, xs) in (&mut ac).zip(xc) {
        let v = _mm256_fmadd_ps(va, _mm256_cvtph_ps(load128(xs)), load_ps(a));
        // SAFETY: `a` is a chunk of exactly 8 f32; `storeu` has no alignment requirement.
        unsafe { _mm256_storeu_ps(a.as_mut_ptr(), v) };
    }
    for (a, &x) in ac.into_remainder().iter_mut().zip(xr) {
        *a = alpha.mul_add(f16::from_bits(x).to_f32(), *a);
    }
}
