//! AVX-512 (F, BW, VL, VNNI) kernels for the formats that dominate real models: Q4_0, Q5_0,
//! Q8_0, Q4_K, Q5_K, Q6_K and F16, plus the f32/f16 attention helpers. Q4_1, Q5_1 and BF16 use
//! the AVX2 kernels on this ISA.
//!
//! Integer dots use `vpdpbusd` (unsigned × signed bytes, four products summed straight into
//! i32 lanes, no saturation), so block sums are exact, as in the scalar reference. Weights are
//! kept unsigned (Q4_0's q, not q - 8) and the offset is taken off with a second `vpdpbusd`
//! over the activations, or through Q8_K's bsums.
//!
//! Every function here is compiled for `avx512f,avx512bw,avx512vl,avx512vnni` on top of the
//! AVX2 set and must only be called once those features have been detected.
#![allow(unsafe_code)]

use super::super::blocks::{
    BlockQ4_0, BlockQ4K, BlockQ5_0, BlockQ5K, BlockQ6K, BlockQ8_0, BlockQ8K, k4_scales_mins,
};
use super::avx2::{self, f16_bits, h2f, hsum_ps128, k4_min_products, load128, load256, q6k_offset};
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

/// Two blocks' 16 packed-nibble bytes → 64 unsigned nibbles in element order
/// (block 0 low, block 0 high, block 1 low, block 1 high).
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn nibbles_2x32(qs0: &[u8; 16], qs1: &[u8; 16]) -> __m512i {
    let t = _mm256_set_m128i(load128(qs1), load128(qs0));
    let v = join(t, _mm256_srli_epi16::<4>(t));
    // 128-bit lanes are [lo0, lo1, hi0, hi1]; reorder to [lo0, hi0, lo1, hi1].
    let v = _mm512_shuffle_i64x2::<0b11_01_10_00>(v, v);
    _mm512_and_si512(v, _mm512_set1_epi8(0xF))
}

/// Per-lane f32 scale: `d0` for the first block's 8 lanes, `d1` for the second's.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn two_scales(d0: f32, d1: f32) -> __m512 {
    _mm512_mask_blend_ps(0xFF00, _mm512_set1_ps(d0), _mm512_set1_ps(d1))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn dot_q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let zero = _mm512_setzero_si512();
    let eights = _mm512_set1_epi8(8);
    let mut acc = _mm512_setzero_ps();
    let (xc, yc) = (x.chunks_exact(2), y.chunks_exact(2));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (x, y) in xc.zip(yc) {
        let q = nibbles_2x32(&x[0].qs, &x[1].qs);
        let qy = join(load256(&y[0].qs), load256(&y[1].qs));
        // Σ (q - 8) y = Σ q y - Σ 8 y
        let s = _mm512_sub_epi32(
            _mm512_dpbusd_epi32(zero, q, qy),
            _mm512_dpbusd_epi32(zero, eights, qy),
        );
        let d = two_scales(h2f(x[0].d) * h2f(y[0].d), h2f(x[1].d) * h2f(y[1].d));
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc);
    }
    _mm512_reduce_add_ps(acc) + avx2::dot_q4_0(xr, yr)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn dot_q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let zero = _mm512_setzero_si512();
    let sixteens = _mm512_set1_epi8(16);
    let mut acc = _mm512_setzero_ps();
    let (xc, yc) = (x.chunks_exact(2), y.chunks_exact(2));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (x, y) in xc.zip(yc) {
        let q = nibbles_2x32(&x[0].qs, &x[1].qs);
        // Bit j of qh is the fifth bit of element j: with the blocks side by side, byte i of
        // `q` pairs with bit i of the 64-bit mask.
        let hmask =
            u64::from(u32::from_le_bytes(x[0].qh)) | (u64::from(u32::from_le_bytes(x[1].qh)) << 32);
        let q = _mm512_mask_add_epi8(q, hmask, q, sixteens);
        let qy = join(load256(&y[0].qs), load256(&y[1].qs));
        let s = _mm512_sub_epi32(
            _mm512_dpbusd_epi32(zero, q, qy),
            _mm512_dpbusd_epi32(zero, sixteens, qy),
        );
        let d = two_scales(h2f(x[0].d) * h2f(y[0].d), h2f(x[1].d) * h2f(y[1].d));
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc);
    }
    _mm512_reduce_add_ps(acc) + avx2::dot_q5_0(xr, yr)
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn dot_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let zero = _mm512_setzero_si512();
    let mut acc = _mm512_setzero_ps();
    let (xc, yc) = (x.chunks_exact(2), y.chunks_exact(2));
    let (xr, yr) = (xc.remainder(), yc.remainder());
    for (x, y) in xc.zip(yc) {
        let qx = join(load256(&x[0].qs), load256(&x[1].qs));
        let qy = join(load256(&y[0].qs), load256(&y[1].qs));
        // vpdpbusd wants one unsigned operand: |x| and y with x's sign (AVX-512 has no
        // vpsignb). x = -128 becomes 128 unsigned, which is right; y is never -128.
        let neg = _mm512_movepi8_mask(qx);
        let sy = _mm512_mask_sub_epi8(qy, neg, zero, qy);
        let s = _mm512_dpbusd_epi32(zero, _mm512_abs_epi8(qx), sy);
        let d = two_scales(h2f(x[0].d) * h2f(y[0].d), h2f(x[1].d) * h2f(y[1].d));
        acc = _mm512_fmadd_ps(d, _mm512_cvtepi32_ps(s), acc);
    }
    _mm512_reduce_add_ps(acc) + avx2::dot_q8_0(xr, yr)
}

/// Lane permutation that puts scale `2c` in lanes 0..8 and `2c + 1` in lanes 8..16.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pair_index(c: i32) -> __m512i {
    _mm512_mask_blend_epi32(
        0xFF00,
        _mm512_set1_epi32(2 * c),
        _mm512_set1_epi32(2 * c + 1),
    )
}

/// The eight 6-bit Q4_K/Q5_K scales as i32 lanes 0..8.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn scales_epi32(sc: &[u8; 8]) -> __m512i {
    _mm512_cvtepu8_epi32(_mm_set_epi64x(0, i64::from_le_bytes(*sc)))
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn dot_q4_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let zero = _mm512_setzero_si512();
    let m4 = _mm512_set1_epi8(0xF);
    let idx = [pair_index(0), pair_index(1), pair_index(2), pair_index(3)];
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (x, y) in x.iter().zip(y) {
        let (sc, m) = k4_scales_mins(&x.scales);
        let d = y.d() * h2f(x.d);
        let dmin = _mm_set1_ps(y.d() * h2f(x.dmin));
        acc_m = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(k4_min_products(y, &m)), acc_m);
        let scv = scales_epi32(&sc);
        let mut sumi = zero;
        for (c, idx) in idx.iter().enumerate() {
            // 32 bytes hold sub-block 2c in the low nibbles and 2c + 1 in the high ones, which
            // are the next 64 activations in order.
            let bits = load256(&x.qs[32 * c..]);
            let q = _mm512_and_si512(join(bits, _mm256_srli_epi16::<4>(bits)), m4);
            let p = _mm512_dpbusd_epi32(zero, q, load512(&y.qs[64 * c..]));
            let s = _mm512_permutexvar_epi32(*idx, scv);
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p, s));
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc) - hsum_ps128(acc_m)
}

/// Bit 2c of qh[l] is the fifth bit of element 64c + l, bit 2c + 1 that of 64c + 32 + l: the
/// byte masks that select them for chunk `c`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn q5k_bits(c: u32) -> __m512i {
    join(
        _mm256_set1_epi8((1u8 << (2 * c)) as i8),
        _mm256_set1_epi8((2u8 << (2 * c)) as i8),
    )
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn dot_q5_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let zero = _mm512_setzero_si512();
    let m4 = _mm512_set1_epi8(0xF);
    let sixteens = _mm512_set1_epi8(16);
    let idx = [pair_index(0), pair_index(1), pair_index(2), pair_index(3)];
    let bits = [q5k_bits(0), q5k_bits(1), q5k_bits(2), q5k_bits(3)];
    let mut acc = _mm512_setzero_ps();
    let mut acc_m = _mm_setzero_ps();
    for (x, y) in x.iter().zip(y) {
        let (sc, m) = k4_scales_mins(&x.scales);
        let d = y.d() * h2f(x.d);
        let dmin = _mm_set1_ps(y.d() * h2f(x.dmin));
        acc_m = _mm_fmadd_ps(dmin, _mm_cvtepi32_ps(k4_min_products(y, &m)), acc_m);
        let scv = scales_epi32(&sc);
        let qh = load256(&x.qh);
        let qh2 = join(qh, qh);
        let mut sumi = zero;
        for c in 0..4 {
            let b = load256(&x.qs[32 * c..]);
            let q = _mm512_and_si512(join(b, _mm256_srli_epi16::<4>(b)), m4);
            let q = _mm512_mask_add_epi8(q, _mm512_test_epi8_mask(qh2, bits[c]), q, sixteens);
            let p = _mm512_dpbusd_epi32(zero, q, load512(&y.qs[64 * c..]));
            let s = _mm512_permutexvar_epi32(idx[c], scv);
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p, s));
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc) - hsum_ps128(acc_m)
}

/// Lane permutation for 64 Q6_K elements: four 16-element sub-blocks `4r..4r + 4`, each
/// covering four i32 lanes of a `vpdpbusd` result.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn quad_index(r: i32) -> __m512i {
    let b = 4 * r;
    _mm512_set_epi32(
        b + 3,
        b + 3,
        b + 3,
        b + 3,
        b + 2,
        b + 2,
        b + 2,
        b + 2,
        b + 1,
        b + 1,
        b + 1,
        b + 1,
        b,
        b,
        b,
        b,
    )
}

#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn dot_q6_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let zero = _mm512_setzero_si512();
    let m4 = _mm512_set1_epi8(0xF);
    let m3 = _mm512_set1_epi8(3);
    let m30 = _mm512_set1_epi8(0x30);
    let idx = [quad_index(0), quad_index(1), quad_index(2), quad_index(3)];
    let mut acc = _mm512_setzero_ps();
    for (x, y) in x.iter().zip(y) {
        let d = y.d() * h2f(x.d);
        let scv = _mm512_cvtepi8_epi32(load128(&x.scales));
        // Quants are used unsigned (0..64); the -32 offset comes back through bsums.
        let mut sumi = _mm512_sub_epi32(zero, _mm512_zextsi256_si512(q6k_offset(x, y)));
        for h in 0..2 {
            // ql[64h..64h + 64] = [ql1 | ql2]; pair it with [qh | qh >> 2] so that one set of
            // shifts and masks yields elements 0..64 (low nibbles) and 64..128 (high nibbles).
            let ql = load512(&x.ql[64 * h..]);
            let qh = load256(&x.qh[32 * h..]);
            let qh2 = join(qh, _mm256_srli_epi16::<2>(qh));
            let v_lo = _mm512_or_si512(
                _mm512_and_si512(ql, m4),
                _mm512_slli_epi16::<4>(_mm512_and_si512(qh2, m3)),
            );
            let v_hi = _mm512_or_si512(
                _mm512_and_si512(_mm512_srli_epi16::<4>(ql), m4),
                _mm512_and_si512(qh2, m30),
            );
            let ys = &y.qs[128 * h..];
            let p_lo = _mm512_dpbusd_epi32(zero, v_lo, load512(ys));
            let p_hi = _mm512_dpbusd_epi32(zero, v_hi, load512(&ys[64..]));
            let s_lo = _mm512_permutexvar_epi32(idx[2 * h], scv);
            let s_hi = _mm512_permutexvar_epi32(idx[2 * h + 1], scv);
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p_lo, s_lo));
            sumi = _mm512_add_epi32(sumi, _mm512_mullo_epi32(p_hi, s_hi));
        }
        acc = _mm512_fmadd_ps(_mm512_set1_ps(d), _mm512_cvtepi32_ps(sumi), acc);
    }
    _mm512_reduce_add_ps(acc)
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
    _mm512_reduce_add_ps(acc) + avx2::dot_f16_f32(&a[done..n], &b[done..])
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
    avx2::axpy_f16(ac.into_remainder(), alpha, &x[done..n]);
}
