//! Scalar reference: dequantizers, activation quantizers and dot kernels for every format.
//!
//! This is the ground truth the SIMD paths are tested against and the path every non-x86
//! target runs. It follows llama.cpp's generic C code (`ggml-quants.c`, `ggml-cpu/quants.c`)
//! operation for operation where the result depends on it: integer sums inside a block, one
//! f32 scale multiply per (sub-)block, and the same evaluation order in the dequantizers so
//! their outputs are bit-identical to llama.cpp's and gguf-py's.

use super::blocks::{
    BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K,
    BlockQ8_0, BlockQ8_1, BlockQ8K, QK, QK_K, bf16_le, f16_le, k4_scales_mins,
};
use half::{bf16, f16};

// ---------------------------------------------------------------------------------------------
// Dequantization (bit-exact with llama.cpp's dequantize_row_*)
// ---------------------------------------------------------------------------------------------

pub(crate) fn dequant_q4_0(x: &[BlockQ4_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = f16_le(b.d);
        for j in 0..16 {
            out[j] = (i32::from(b.qs[j] & 0xF) - 8) as f32 * d;
            out[j + 16] = (i32::from(b.qs[j] >> 4) - 8) as f32 * d;
        }
    }
}

pub(crate) fn dequant_q4_1(x: &[BlockQ4_1], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let (d, m) = (f16_le(b.d), f16_le(b.m));
        for j in 0..16 {
            out[j] = f32::from(b.qs[j] & 0xF) * d + m;
            out[j + 16] = f32::from(b.qs[j] >> 4) * d + m;
        }
    }
}

/// The 5-bit values of a Q5_0/Q5_1 block, unsigned (0..32), in element order.
#[inline(always)]
fn q5_values(qh: [u8; 4], qs: &[u8; 16]) -> [u8; 32] {
    let qh = u32::from_le_bytes(qh);
    let mut q = [0u8; 32];
    for j in 0..16 {
        q[j] = (qs[j] & 0xF) | ((((qh >> j) & 1) as u8) << 4);
        q[j + 16] = (qs[j] >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    q
}

pub(crate) fn dequant_q5_0(x: &[BlockQ5_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = f16_le(b.d);
        for (o, q) in out.iter_mut().zip(q5_values(b.qh, &b.qs)) {
            *o = (i32::from(q) - 16) as f32 * d;
        }
    }
}

pub(crate) fn dequant_q5_1(x: &[BlockQ5_1], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let (d, m) = (f16_le(b.d), f16_le(b.m));
        for (o, q) in out.iter_mut().zip(q5_values(b.qh, &b.qs)) {
            *o = f32::from(q) * d + m;
        }
    }
}

pub(crate) fn dequant_q8_0(x: &[BlockQ8_0], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = f16_le(b.d);
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = f32::from(q) * d;
        }
    }
}

pub(crate) fn dequant_q8_1(x: &[BlockQ8_1], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK)) {
        let d = f16_le(b.d);
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = f32::from(q) * d;
        }
    }
}

pub(crate) fn dequant_q8_k(x: &[BlockQ8K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = b.d();
        for (o, &q) in out.iter_mut().zip(&b.qs) {
            *o = d * f32::from(q);
        }
    }
}

pub(crate) fn dequant_q2_k(x: &[BlockQ2K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (f16_le(b.d), f16_le(b.dmin));
        let mut o = out.iter_mut();
        let mut is = 0;
        for half in 0..2 {
            let q = &b.qs[32 * half..32 * half + 32];
            for shift in [0, 2, 4, 6] {
                for part in 0..2 {
                    let sc = b.scales[is];
                    is += 1;
                    let dl = d * f32::from(sc & 0xF);
                    let ml = min * f32::from(sc >> 4);
                    for &qb in &q[16 * part..16 * part + 16] {
                        if let Some(v) = o.next() {
                            *v = dl * f32::from((qb >> shift) & 3) - ml;
                        }
                    }
                }
            }
        }
    }
}

/// The sixteen 6-bit Q3_K scales, already offset by -32.
fn q3k_scales(s: &[u8; 12]) -> [i32; 16] {
    let mut out = [0i32; 16];
    for b in 0..4 {
        let hi = s[8 + b];
        out[b] = i32::from((s[b] & 0xF) | ((hi & 3) << 4)) - 32;
        out[4 + b] = i32::from((s[4 + b] & 0xF) | (((hi >> 2) & 3) << 4)) - 32;
        out[8 + b] = i32::from((s[b] >> 4) | (((hi >> 4) & 3) << 4)) - 32;
        out[12 + b] = i32::from((s[4 + b] >> 4) | (((hi >> 6) & 3) << 4)) - 32;
    }
    out
}

pub(crate) fn dequant_q3_k(x: &[BlockQ3K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d_all = f16_le(b.d);
        let scales = q3k_scales(&b.scales);
        let mut o = out.iter_mut();
        let mut is = 0;
        let mut m = 1u8;
        for half in 0..2 {
            let q = &b.qs[32 * half..32 * half + 32];
            for shift in [0, 2, 4, 6] {
                for part in 0..2 {
                    let dl = d_all * scales[is] as f32;
                    is += 1;
                    let r = 16 * part..16 * part + 16;
                    for (&qb, &hb) in q[r.clone()].iter().zip(&b.hmask[r]) {
                        let low = i32::from((qb >> shift) & 3);
                        let v = low - if hb & m != 0 { 0 } else { 4 };
                        if let Some(dst) = o.next() {
                            *dst = dl * v as f32;
                        }
                    }
                }
                m <<= 1;
            }
        }
    }
}

pub(crate) fn dequant_q4_k(x: &[BlockQ4K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (f16_le(b.d), f16_le(b.dmin));
        let (sc, m) = k4_scales_mins(&b.scales);
        for c in 0..4 {
            let q = &b.qs[32 * c..32 * c + 32];
            let (d1, m1) = (d * f32::from(sc[2 * c]), min * f32::from(m[2 * c]));
            let (d2, m2) = (d * f32::from(sc[2 * c + 1]), min * f32::from(m[2 * c + 1]));
            let o = &mut out[64 * c..64 * c + 64];
            for l in 0..32 {
                o[l] = d1 * f32::from(q[l] & 0xF) - m1;
                o[l + 32] = d2 * f32::from(q[l] >> 4) - m2;
            }
        }
    }
}

pub(crate) fn dequant_q5_k(x: &[BlockQ5K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let (d, min) = (f16_le(b.d), f16_le(b.dmin));
        let (sc, m) = k4_scales_mins(&b.scales);
        for c in 0..4 {
            let q = &b.qs[32 * c..32 * c + 32];
            let (d1, m1) = (d * f32::from(sc[2 * c]), min * f32::from(m[2 * c]));
            let (d2, m2) = (d * f32::from(sc[2 * c + 1]), min * f32::from(m[2 * c + 1]));
            let (u1, u2) = (1u8 << (2 * c), 2u8 << (2 * c));
            let o = &mut out[64 * c..64 * c + 64];
            for l in 0..32 {
                let h1 = if b.qh[l] & u1 != 0 { 16 } else { 0 };
                let h2 = if b.qh[l] & u2 != 0 { 16 } else { 0 };
                o[l] = d1 * f32::from((q[l] & 0xF) + h1) - m1;
                o[l + 32] = d2 * f32::from((q[l] >> 4) + h2) - m2;
            }
        }
    }
}

/// The 256 6-bit values of a Q6_K block, offset to -32..32, in element order.
#[inline(always)]
fn q6k_values(b: &BlockQ6K) -> [i8; QK_K] {
    let mut a = [0i8; QK_K];
    for half in 0..2 {
        let ql = &b.ql[64 * half..64 * half + 64];
        let qh = &b.qh[32 * half..32 * half + 32];
        let a = &mut a[128 * half..128 * half + 128];
        for l in 0..32 {
            a[l] = ((ql[l] & 0xF) | ((qh[l] & 3) << 4)) as i8 - 32;
            a[l + 32] = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) as i8 - 32;
            a[l + 64] = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i8 - 32;
            a[l + 96] = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i8 - 32;
        }
    }
    a
}

pub(crate) fn dequant_q6_k(x: &[BlockQ6K], y: &mut [f32]) {
    for (b, out) in x.iter().zip(y.chunks_exact_mut(QK_K)) {
        let d = f16_le(b.d);
        let q = q6k_values(b);
        for (k, (o, q)) in out.chunks_exact_mut(16).zip(q.chunks_exact(16)).enumerate() {
            // (d * sc) * q, in this order, as llama.cpp: the product is not always exact.
            let ds = d * f32::from(b.scales[k]);
            for (o, &q) in o.iter_mut().zip(q) {
                *o = ds * f32::from(q);
            }
        }
    }
}

pub(crate) fn dequant_f16(x: &[u8], y: &mut [f32]) {
    for (o, b) in y.iter_mut().zip(x.chunks_exact(2)) {
        *o = f16_le([b[0], b[1]]);
    }
}

pub(crate) fn dequant_bf16(x: &[u8], y: &mut [f32]) {
    for (o, b) in y.iter_mut().zip(x.chunks_exact(2)) {
        *o = bf16_le([b[0], b[1]]);
    }
}

pub(crate) fn dequant_f32(x: &[u8], y: &mut [f32]) {
    for (o, b) in y.iter_mut().zip(x.chunks_exact(4)) {
        *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    }
}

// ---------------------------------------------------------------------------------------------
// Activation quantization (what llama.cpp's CPU backend does to src1 before a mat-mul)
// ---------------------------------------------------------------------------------------------

/// Largest |v| of a block; NaNs are skipped as `maxps` does.
#[inline(always)]
fn amax(x: &[f32]) -> f32 {
    x.iter()
        .fold(0.0f32, |m, v| if v.abs() > m { v.abs() } else { m })
}

/// Q8_0 and Q8_1 quants of one 32-element block and the f32 scale.
///
/// llama.cpp's x86 `quantize_row_q8_0`/`q8_1` (the AVX/AVX2 path that runs on every x86 CPU
/// picolm targets) multiplies by `127 / amax` and rounds half to even (`_mm256_round_ps`), which
/// differs from the portable `_ref` (`x * (1 / d)`, `roundf`) in rare last-bit cases. We follow
/// the x86 code, because that is what produces the activations llama.cpp's logits come from.
#[inline(always)]
fn q8_block(x: &[f32], qs: &mut [i8; 32]) -> f32 {
    let amax = amax(x);
    let d = amax / 127.0;
    let id = if amax != 0.0 { 127.0 / amax } else { 0.0 };
    for (q, &v) in qs.iter_mut().zip(x) {
        // |v * id| <= 127 (+ rounding), so the saturating cast only matters for NaN (→ 0).
        *q = round_half_even(v * id) as i8;
    }
    d
}

pub(crate) fn quantize_q8_0(x: &[f32], y: &mut [BlockQ8_0]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let d = q8_block(x, &mut b.qs);
        b.d = f16::from_f32(d).to_le_bytes();
    }
}

pub(crate) fn quantize_q8_1(x: &[f32], y: &mut [BlockQ8_1]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK)) {
        let d = q8_block(x, &mut b.qs);
        let sum: i32 = b.qs.iter().map(|&q| i32::from(q)).sum();
        b.d = f16::from_f32(d).to_le_bytes();
        b.s = f16::from_f32(d * sum as f32).to_le_bytes();
    }
}

/// `quantize_row_q8_K_ref` (also llama.cpp's x86 path): the scale comes from the signed value
/// of largest magnitude so that it maps to exactly -127, `nearest_int` rounds half to even.
pub(crate) fn quantize_q8_k(x: &[f32], y: &mut [BlockQ8K]) {
    for (b, x) in y.iter_mut().zip(x.chunks_exact(QK_K)) {
        let (mut amax, mut max) = (0.0f32, 0.0f32);
        for &v in x {
            if v.abs() > amax {
                amax = v.abs();
                max = v;
            }
        }
        if amax == 0.0 {
            b.d = 0f32.to_le_bytes();
            b.qs = [0; QK_K];
            b.bsums = [0; 32];
            continue;
        }
        let iscale = -127.0 / max;
        for (q, &v) in b.qs.iter_mut().zip(x) {
            *q = (round_half_even(iscale * v) as i32).min(127) as i8;
        }
        for j in 0..QK_K / 16 {
            let s: i32 = b.qs[16 * j..16 * j + 16]
                .iter()
                .map(|&q| i32::from(q))
                .sum();
            // |s| <= 16 * 128, always fits an i16.
            b.bsums[2 * j..2 * j + 2].copy_from_slice(&(s as i16).to_le_bytes());
        }
        b.d = (1.0 / iscale).to_le_bytes();
    }
}

pub(crate) fn quantize_f16(x: &[f32], y: &mut [u8]) {
    for (v, o) in x.iter().zip(y.chunks_exact_mut(2)) {
        o.copy_from_slice(&f16::from_f32(*v).to_le_bytes());
    }
}

pub(crate) fn quantize_bf16(x: &[f32], y: &mut [u8]) {
    for (v, o) in x.iter().zip(y.chunks_exact_mut(2)) {
        o.copy_from_slice(&bf16::from_f32(*v).to_le_bytes());
    }
}

pub(crate) fn quantize_f32(x: &[f32], y: &mut [u8]) {
    for (v, o) in x.iter().zip(y.chunks_exact_mut(4)) {
        o.copy_from_slice(&v.to_le_bytes());
    }
}

// ---------------------------------------------------------------------------------------------
// Dot products (weight row · quantized activation row)
// ---------------------------------------------------------------------------------------------

#[inline(always)]
fn i8_dot(a: &[i8], b: &[i8]) -> i32 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| i32::from(a) * i32::from(b))
        .sum()
}

pub(crate) fn dot_q4_0(x: &[BlockQ4_0], y: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += (i32::from(x.qs[j] & 0xF) - 8) * i32::from(y.qs[j]);
            sumi += (i32::from(x.qs[j] >> 4) - 8) * i32::from(y.qs[j + 16]);
        }
        sum += f16_le(x.d) * f16_le(y.d) * sumi as f32;
    }
    sum
}

pub(crate) fn dot_q4_1(x: &[BlockQ4_1], y: &[BlockQ8_1]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let mut sumi = 0i32;
        for j in 0..16 {
            sumi += i32::from(x.qs[j] & 0xF) * i32::from(y.qs[j]);
            sumi += i32::from(x.qs[j] >> 4) * i32::from(y.qs[j + 16]);
        }
        sum += f16_le(x.d) * f16_le(y.d) * sumi as f32 + f16_le(x.m) * f16_le(y.s);
    }
    sum
}

pub(crate) fn dot_q5_0(x: &[BlockQ5_0], y: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let q = q5_values(x.qh, &x.qs);
        let sumi: i32 = q
            .iter()
            .zip(&y.qs)
            .map(|(&q, &v)| (i32::from(q) - 16) * i32::from(v))
            .sum();
        sum += f16_le(x.d) * f16_le(y.d) * sumi as f32;
    }
    sum
}

pub(crate) fn dot_q5_1(x: &[BlockQ5_1], y: &[BlockQ8_1]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let q = q5_values(x.qh, &x.qs);
        let sumi: i32 = q
            .iter()
            .zip(&y.qs)
            .map(|(&q, &v)| i32::from(q) * i32::from(v))
            .sum();
        sum += f16_le(x.d) * f16_le(y.d) * sumi as f32 + f16_le(x.m) * f16_le(y.s);
    }
    sum
}

pub(crate) fn dot_q8_0(x: &[BlockQ8_0], y: &[BlockQ8_0]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        sum += f16_le(x.d) * f16_le(y.d) * i8_dot(&x.qs, &y.qs) as f32;
    }
    sum
}

pub(crate) fn dot_q4_k(x: &[BlockQ4K], y: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let (sc, m) = k4_scales_mins(&x.scales);
        let mut sumi = 0i32;
        for c in 0..4 {
            let q = &x.qs[32 * c..32 * c + 32];
            let (lo, hi) = (&y.qs[64 * c..64 * c + 32], &y.qs[64 * c + 32..64 * c + 64]);
            let mut s_lo = 0i32;
            let mut s_hi = 0i32;
            for l in 0..32 {
                s_lo += i32::from(q[l] & 0xF) * i32::from(lo[l]);
                s_hi += i32::from(q[l] >> 4) * i32::from(hi[l]);
            }
            sumi += i32::from(sc[2 * c]) * s_lo + i32::from(sc[2 * c + 1]) * s_hi;
        }
        let summ: i32 = (0..16).map(|j| y.bsum(j) * i32::from(m[j / 2])).sum();
        let d = f16_le(x.d) * y.d();
        let dmin = f16_le(x.dmin) * y.d();
        sum += d * sumi as f32 - dmin * summ as f32;
    }
    sum
}

pub(crate) fn dot_q5_k(x: &[BlockQ5K], y: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let (sc, m) = k4_scales_mins(&x.scales);
        let mut sumi = 0i32;
        for c in 0..4 {
            let q = &x.qs[32 * c..32 * c + 32];
            let (lo, hi) = (&y.qs[64 * c..64 * c + 32], &y.qs[64 * c + 32..64 * c + 64]);
            let mut s_lo = 0i32;
            let mut s_hi = 0i32;
            for l in 0..32 {
                let h_lo = i32::from((x.qh[l] >> (2 * c)) & 1) << 4;
                let h_hi = i32::from((x.qh[l] >> (2 * c + 1)) & 1) << 4;
                s_lo += (i32::from(q[l] & 0xF) + h_lo) * i32::from(lo[l]);
                s_hi += (i32::from(q[l] >> 4) + h_hi) * i32::from(hi[l]);
            }
            sumi += i32::from(sc[2 * c]) * s_lo + i32::from(sc[2 * c + 1]) * s_hi;
        }
        let summ: i32 = (0..16).map(|j| y.bsum(j) * i32::from(m[j / 2])).sum();
        let d = f16_le(x.d) * y.d();
        let dmin = f16_le(x.dmin) * y.d();
        sum += d * sumi as f32 - dmin * summ as f32;
    }
    sum
}

pub(crate) fn dot_q6_k(x: &[BlockQ6K], y: &[BlockQ8K]) -> f32 {
    let mut sum = 0.0f32;
    for (x, y) in x.iter().zip(y) {
        let q = q6k_values(x);
        let sumi: i32 = (0..16)
            .map(|k| {
                let r = 16 * k..16 * k + 16;
                i32::from(x.scales[k]) * i8_dot(&q[r.clone()], &y.qs[r])
            })
            .sum();
        sum += f16_le(x.d) * y.d() * sumi as f32;
    }
    sum
}

/// Reference dot of two little-endian float rows whose elements are `W` bytes wide, decoded by
/// `elem`. f64 accumulation: this is the reference, not a fast path.
fn dot_float_rows<const W: usize>(n: usize, x: &[u8], y: &[u8], elem: fn([u8; W]) -> f64) -> f32 {
    let len = n.saturating_mul(W);
    let (x, y) = (&x[..len], &y[..len]);
    let s: f64 = x
        .chunks_exact(W)
        .zip(y.chunks_exact(W))
        .map(|(a, b)| {
            let (mut ea, mut eb) = ([0u8; W], [0u8; W]);
            ea.copy_from_slice(a);
            eb.copy_from_slice(b);
            elem(ea) * elem(eb)
        })
        .sum();
    s as f32
}

/// F16 weights · F16 activations.
pub(crate) fn dot_f16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_float_rows::<2>(n, x, y, |b| f64::from(f16_le(b)))
}

/// BF16 weights · BF16 activations.
pub(crate) fn dot_bf16(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_float_rows::<2>(n, x, y, |b| f64::from(bf16_le(b)))
}

/// F32 weights · F32 activations.
pub(crate) fn dot_f32_bytes(n: usize, x: &[u8], y: &[u8]) -> f32 {
    dot_float_rows::<4>(n, x, y, |b| f64::from(f32::from_le_bytes(b)))
}

// ---------------------------------------------------------------------------------------------
// Attention helpers over the FP16 KV cache
// ---------------------------------------------------------------------------------------------

pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| f64::from(a) * f64::from(b))
        .sum::<f64>() as f32
}

pub(crate) fn dot_f16_f32(a: &[f16], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(&a, &b)| f64::from(a.to_f32()) * f64::from(b))
        .sum::<f64>() as f32
}

pub(crate) fn axpy_f16(acc: &mut [f32], alpha: f32, x: &[f16]) {
    for (a, &x) in acc.iter_mut().zip(x) {
        *a = alpha.mul_add(x.to_f32(), *a);
    }
}

/// `x.round_ties_even()` for |x| < 2^22 without a libm call (`rintf` was 8 % of prefill): adding
/// and subtracting 1.5·2^23 leaves the nearest integer, ties to even, in default rounding
/// mode — the trick llama.cpp's `nearest_int` uses. Activations here are scaled to |x| ≤ 128;
/// NaN stays NaN (and casts to 0).
#[inline(always)]
fn round_half_even(x: f32) -> f32 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23
    if x.abs() < 4_194_304.0 {
        (x + MAGIC) - MAGIC
    } else {
        x.round_ties_even()
    }
}

#[cfg(test)]
mod rounding_tests {
    use super::round_half_even;

    #[test]
    fn magic_rounding_equals_round_ties_even() {
        let mut x = -300.0f32;
        while x <= 300.0 {
            for v in [
                x,
                x + 0.5,
                x - 0.5,
                f32::from_bits(x.to_bits() + 1),
                f32::from_bits(x.to_bits().wrapping_sub(1)),
            ] {
                if !v.is_nan() {
                    assert_eq!(round_half_even(v), v.round_ties_even(), "{v}");
                }
            }
            x += 0.25;
        }
        for v in [0.0, -0.0, 1e-30, 4_194_303.5, 5e6, -5e6, f32::INFINITY] {
            assert_eq!(round_half_even(v), v.round_ties_even(), "{v}");
        }
        assert!(round_half_even(f32::NAN).is_nan());
    }
}
