//! Kernel tests: every SIMD path against the scalar reference, the fused dot against an f32 dot
//! of the dequantized weights, error handling, and the f16 attention helpers.
//!
//! Tolerances are derived, not tuned:
//! * SIMD vs scalar: both compute each block's integer sum exactly; they differ only in the
//!   order of the f32 operations that scale and add the block sums (and in where an i32 sum
//!   above 2^24 is rounded to f32). Each such operation errs by at most one rounding,
//!   eps·|partial|, and every partial sum is bounded by B = Σ (|w_i| + |w0_i|)·|a_i|, where w0
//!   is the row's offset part (the dequantized block with its quant bits zeroed: the -8·d of
//!   Q4_0, the min of Q4_1, the -dmin·m of Q4_K, ...) and a the dequantized activations. With
//!   nb blocks and at most 16 lanes to reduce, the bound is (nb + 16)·eps·B.
//! * Fused dot vs f32 dot: the only approximation is the activation quantization, bounded per
//!   element (see `activation_error_bound`), plus the f32 accumulation above.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use half::f16;
use picolm::quant::{
    self, GEMM_ROWS, GgmlType, Isa, MULTI_MAX, PreparedActs, QuantError, available_isas,
    dequantize, gemm, gemm_isa, prepare_acts, prepare_acts_isa, quantize_activation,
    quantize_activation_isa, try_vec_dot, vec_dot, vec_dot_isa, vec_dot_multi, vec_dot_multi_isa,
    vec_dot_multi_rows, vec_dot_multi_rows_isa,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const FORMATS: [GgmlType; 11] = [
    GgmlType::Q4_0,
    GgmlType::Q4_1,
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q8_0,
    GgmlType::Q4_K,
    GgmlType::Q5_K,
    GgmlType::Q6_K,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

/// Byte ranges of the f16 scale fields, and of the quant bits, in one block.
fn layout(ty: GgmlType) -> (&'static [usize], std::ops::Range<usize>) {
    use GgmlType::*;
    match ty {
        Q4_0 => (&[0], 2..18),
        Q4_1 => (&[0, 2], 4..20),
        Q5_0 => (&[0], 2..22),
        Q5_1 => (&[0, 2], 4..24),
        Q8_0 => (&[0], 2..34),
        Q4_K => (&[0, 2], 16..144),
        Q5_K => (&[0, 2], 16..176),
        Q6_K => (&[208], 0..192),
        _ => (&[], 0..0),
    }
}

#[derive(Clone, Copy, Debug)]
enum Pattern {
    /// Uniformly random quant bits.
    Random,
    /// Every quant bit set: the largest unsigned quants, Q8_0's -1.
    AllOnes,
    /// Every quant bit clear: the most negative offset quants, Q8_0's 0.
    AllZeros,
    /// 0x80 bytes: Q8_0's -128, the one value the sign trick must get right.
    HighBit,
}

/// A weight row of `n` elements with finite f16 scales of mixed magnitude and quant bits
/// following `pattern`.
fn weight_row(rng: &mut StdRng, ty: GgmlType, n: usize, pattern: Pattern) -> Vec<u8> {
    let bytes = ty.row_bytes(n).expect("whole blocks");
    match ty {
        GgmlType::F32 => (0..n)
            .flat_map(|_| rng.random_range(-2.0f32..2.0).to_le_bytes())
            .collect(),
        GgmlType::F16 => (0..n)
            .flat_map(|_| f16::from_f32(rng.random_range(-2.0f32..2.0)).to_le_bytes())
            .collect(),
        GgmlType::BF16 => (0..n)
            .flat_map(|_| half::bf16::from_f32(rng.random_range(-2.0f32..2.0)).to_le_bytes())
            .collect(),
        _ => {
            let (scales, quants) = layout(ty);
            let bb = ty.block_bytes();
            let mut w: Vec<u8> = (0..bytes).map(|_| rng.random()).collect();
            for block in w.chunks_exact_mut(bb) {
                for &off in scales {
                    let d = f16::from_f32(rng.random_range(-0.05f32..0.05));
                    block[off..off + 2].copy_from_slice(&d.to_le_bytes());
                }
                let fill = match pattern {
                    Pattern::Random => None,
                    Pattern::AllOnes => Some(0xFF),
                    Pattern::AllZeros => Some(0x00),
                    Pattern::HighBit => Some(0x80),
                };
                if let Some(b) = fill {
                    block[quants.clone()].fill(b);
                }
            }
            w
        }
    }
}

/// The row's offset part: dequantized with all quant bits zeroed (see the module docs).
fn offsets(ty: GgmlType, w: &[u8], n: usize) -> Vec<f32> {
    let (_, quants) = layout(ty);
    let mut w0 = w.to_vec();
    if !quants.is_empty() {
        for block in w0.chunks_exact_mut(ty.block_bytes()) {
            block[quants.clone()].fill(0);
        }
    } else {
        w0.fill(0);
    }
    let mut out = vec![0.0; n];
    dequantize(ty, &w0, &mut out).unwrap();
    out
}

fn activations(rng: &mut StdRng, n: usize, extreme: bool) -> Vec<f32> {
    if extreme {
        // ±1 everywhere: every Q8 quant is ±127, the largest products the kernels see.
        (0..n)
            .map(|i| if (i * 7 + 3) % 5 < 2 { -1.0 } else { 1.0 })
            .collect()
    } else {
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }
}

fn quantized(vdt: GgmlType, x: &[f32]) -> Vec<u8> {
    let mut act = vec![0u8; vdt.row_bytes(x.len()).unwrap()];
    quantize_activation(vdt, x, &mut act).unwrap();
    act
}

fn dequantized(ty: GgmlType, bytes: &[u8], n: usize) -> Vec<f32> {
    let mut out = vec![0.0; n];
    dequantize(ty, bytes, &mut out).unwrap();
    out
}

fn block_counts(ty: GgmlType) -> &'static [usize] {
    if ty.block_len() == 256 {
        &[1, 2, 3, 7]
    } else if ty.block_len() == 32 {
        &[1, 2, 3, 7, 8, 33]
    } else {
        // F32/F16/BF16: lengths that exercise every tail path of the 8/16/32/64-wide loops.
        &[1, 7, 8, 15, 16, 31, 64, 65, 100, 257, 4096 + 13]
    }
}

#[test]
fn every_isa_matches_scalar_on_random_blocks() {
    let isas = available_isas();
    eprintln!("available ISAs: {isas:?}, active: {:?}", quant::isa());
    let mut rng = StdRng::seed_from_u64(0x51_4d_44);
    let mut checked = 0;
    for ty in FORMATS {
        let vdt = ty.vec_dot_type();
        for &nb in block_counts(ty) {
            let n = nb * ty.block_len();
            for pattern in [
                Pattern::Random,
                Pattern::AllOnes,
                Pattern::AllZeros,
                Pattern::HighBit,
            ] {
                for extreme in [false, true] {
                    let w = weight_row(&mut rng, ty, n, pattern);
                    let act = quantized(vdt, &activations(&mut rng, n, extreme));
                    let (wd, w0, a) = (
                        dequantized(ty, &w, n),
                        offsets(ty, &w, n),
                        dequantized(vdt, &act, n),
                    );
                    let bound: f64 = (0..n)
                        .map(|i| {
                            (f64::from(wd[i].abs()) + f64::from(w0[i].abs()))
                                * f64::from(a[i].abs())
                        })
                        .sum();
                    let nblocks = n.div_ceil(ty.block_len().max(8));
                    let tol = (nblocks + 16) as f64 * f64::from(f32::EPSILON) * bound;
                    let reference = vec_dot_isa(Isa::Scalar, ty, n, &w, &act).unwrap();
                    assert!(
                        reference.is_finite(),
                        "{ty} n={n}: scalar result {reference}"
                    );
                    for &isa in &isas[1..] {
                        let got = vec_dot_isa(isa, ty, n, &w, &act).unwrap();
                        let err = f64::from((got - reference).abs());
                        assert!(
                            err <= tol,
                            "{ty} {isa:?} n={n} {pattern:?} extreme={extreme}: {got} vs scalar \
                             {reference} (|err| {err:e} > tol {tol:e})"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    eprintln!("{checked} SIMD/scalar comparisons");
}

/// Per-element bound on |x - dequant(quantize(x))| for each activation type, summed against
/// |w|. Q8_0/Q8_1: q = round(x·127/amax) is within 0.5 of x/d, d = amax/127; the stored scale
/// is d rounded to f16, off by at most 2^-11·d (normal range) or 2^-25 (subnormal), so
/// |x - q·d16| ≤ 0.5·d + 127·(2^-11·d + 2^-25) < 0.57·d + 127·2^-25. Q8_K keeps d in f32:
/// ≤ 0.5·d (+ f32 rounding, covered by 0.51). F16/BF16 round each x to 11/8 significant bits:
/// 2^-11·|x| (+ 2^-25 absolute in f16's subnormal range), 2^-8·|x|.
fn activation_error_bound(vdt: GgmlType, w: &[f32], x: &[f32]) -> f64 {
    let f16_abs = 2f64.powi(-25);
    let per_block = |blk: usize, k: f64, abs: f64| -> f64 {
        w.chunks(blk)
            .zip(x.chunks(blk))
            .map(|(w, x)| {
                let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                let d = f64::from(amax) / 127.0;
                w.iter()
                    .map(|&w| f64::from(w.abs()) * (k * d + abs))
                    .sum::<f64>()
            })
            .sum()
    };
    let rel = |r: f64| -> f64 {
        w.iter()
            .zip(x)
            .map(|(&w, &x)| f64::from(w.abs()) * f64::from(x.abs()) * r)
            .sum()
    };
    match vdt {
        GgmlType::Q8_0 | GgmlType::Q8_1 => per_block(32, 0.57, 127.0 * f16_abs),
        GgmlType::Q8_K => per_block(256, 0.51, 0.0),
        GgmlType::F16 => rel(2f64.powi(-11)) + per_block(1, 0.0, f16_abs),
        GgmlType::BF16 => rel(2f64.powi(-8)),
        _ => 0.0,
    }
}

#[test]
fn fused_dot_tracks_f32_dot_of_dequantized_weights() {
    let mut rng = StdRng::seed_from_u64(0xD07);
    for ty in FORMATS {
        let vdt = ty.vec_dot_type();
        for &nb in block_counts(ty) {
            let n = nb * ty.block_len();
            for _ in 0..4 {
                let w = weight_row(&mut rng, ty, n, Pattern::Random);
                let x = activations(&mut rng, n, false);
                let act = quantized(vdt, &x);
                let wd = dequantized(ty, &w, n);
                let exact: f64 = wd
                    .iter()
                    .zip(&x)
                    .map(|(&a, &b)| f64::from(a) * f64::from(b))
                    .sum();
                let abs_sum: f64 = wd
                    .iter()
                    .zip(&x)
                    .map(|(&a, &b)| f64::from((a * b).abs()))
                    .sum();
                let w0 = offsets(ty, &w, n);
                let scale_sum: f64 = w0
                    .iter()
                    .zip(&wd)
                    .zip(&x)
                    .map(|((&o, &w), &x)| {
                        (f64::from(o.abs()) + f64::from(w.abs())) * f64::from(x.abs())
                    })
                    .sum();
                let tol = activation_error_bound(vdt, &wd, &x)
                    // Q4_1/Q5_1 take the min through the f16 `s = d·Σq` of Q8_1: 2^-11 relative.
                    + if vdt == GgmlType::Q8_1 { scale_sum * 2f64.powi(-10) } else { 0.0 }
                    + (n + 16) as f64 * f64::from(f32::EPSILON) * (abs_sum + scale_sum);
                for isa in available_isas() {
                    let got = f64::from(vec_dot_isa(isa, ty, n, &w, &act).unwrap());
                    assert!(
                        (got - exact).abs() <= tol,
                        "{ty} {isa:?} n={n}: fused {got} vs f32 {exact} (|err| {:e} > {tol:e})",
                        (got - exact).abs()
                    );
                }
                // The bound must be meaningful: far below the size of the dot's terms.
                if ty.block_len() > 1 {
                    assert!(
                        tol < 0.05 * abs_sum,
                        "{ty}: bound {tol} too loose vs {abs_sum}"
                    );
                }
            }
        }
    }
}

/// The SIMD-vs-scalar tolerance of `every_isa_matches_scalar_on_random_blocks` for one row.
fn scalar_tolerance(ty: GgmlType, w: &[u8], act: &[u8], n: usize) -> f64 {
    let vdt = ty.vec_dot_type();
    let (wd, w0, a) = (
        dequantized(ty, w, n),
        offsets(ty, w, n),
        dequantized(vdt, act, n),
    );
    let bound: f64 = (0..n)
        .map(|i| (f64::from(wd[i].abs()) + f64::from(w0[i].abs())) * f64::from(a[i].abs()))
        .sum();
    let nblocks = n.div_ceil(ty.block_len().max(8));
    (nblocks + 16) as f64 * f64::from(f32::EPSILON) * bound
}

#[test]
fn tiles_match_scalar_per_row_dots() {
    // Every format, ISA and tile size: vec_dot_multi (1..=8 activation rows, strided, with
    // padding between rows) against the scalar per-row vec_dot, within the per-row SIMD
    // tolerance; on the scalar ISA, bit-identical.
    let mut rng = StdRng::seed_from_u64(0x711E);
    let mut checked = 0;
    for ty in FORMATS {
        let vdt = ty.vec_dot_type();
        for &nb in block_counts(ty) {
            let n = nb * ty.block_len();
            let ab = vdt.row_bytes(n).unwrap();
            let pattern = [Pattern::Random, Pattern::HighBit, Pattern::AllOnes][checked % 3];
            let extreme = checked % 2 == 1;
            let w = weight_row(&mut rng, ty, n, pattern);
            // Activation rows `astride` bytes apart, the gap filled with junk the kernels must
            // not read.
            let astride = ab + 5;
            let mut acts = vec![0x5Au8; astride * MULTI_MAX];
            let mut a_rows = Vec::new();
            for j in 0..MULTI_MAX {
                let a = quantized(vdt, &activations(&mut rng, n, extreme && j % 2 == 0));
                acts[j * astride..j * astride + ab].copy_from_slice(&a);
                a_rows.push(a);
            }
            for isa in available_isas() {
                for m in 1..=MULTI_MAX {
                    let mut out = vec![f32::NAN; m];
                    vec_dot_multi_isa(isa, ty, n, &w, &acts, astride, &mut out).unwrap();
                    for (j, &got) in out.iter().enumerate() {
                        let a = &a_rows[j];
                        let reference = vec_dot_isa(Isa::Scalar, ty, n, &w, a).unwrap();
                        let tol = if isa == Isa::Scalar {
                            0.0
                        } else {
                            scalar_tolerance(ty, &w, a, n)
                        };
                        let err = f64::from((got - reference).abs());
                        assert!(
                            err <= tol,
                            "multi {ty} {isa:?} n={n} m={m} j={j}: {got} vs scalar {reference} \
                             (|err| {err:e} > tol {tol:e})"
                        );
                        checked += 1;
                    }
                }
            }
        }
    }
    eprintln!("{checked} tile/scalar comparisons");
}

/// `rows` weight rows of `n` elements `stride` bytes apart (the gaps filled with junk the
/// kernels must not read), row i filled with `pattern(i)`; also each row on its own.
fn strided_weights(
    rng: &mut StdRng,
    ty: GgmlType,
    n: usize,
    rows: usize,
    stride: usize,
    pattern: impl Fn(usize) -> Pattern,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut ws = vec![0xA5u8; stride * rows];
    let w_rows = (0..rows)
        .map(|i| {
            let w = weight_row(rng, ty, n, pattern(i));
            ws[i * stride..i * stride + w.len()].copy_from_slice(&w);
            w
        })
        .collect();
    (ws, w_rows)
}

/// `count` activation rows quantized to `vdt`, `stride` bytes apart with junk between (row j
/// with extreme values where `extreme(j)`); also each row on its own.
fn strided_activations(
    rng: &mut StdRng,
    vdt: GgmlType,
    n: usize,
    count: usize,
    stride: usize,
    extreme: impl Fn(usize) -> bool,
) -> (Vec<u8>, Vec<Vec<u8>>) {
    let mut acts = vec![0x5Au8; stride * count];
    let a_rows = (0..count)
        .map(|j| {
            let a = quantized(vdt, &activations(rng, n, extreme(j)));
            acts[j * stride..j * stride + a.len()].copy_from_slice(&a);
            a
        })
        .collect();
    (acts, a_rows)
}

#[test]
fn multi_rows_is_bit_identical_to_per_row_dots() {
    // Few-sequence decode: every format, ISA, activation count (groups of four, padded groups,
    // a single fifth row) and a run of weight rows, strided with junk between rows: each
    // result has the bits of vec_dot on the same ISA (batch invariance) and stays within the
    // per-row tolerance of the scalar reference.
    let mut rng = StdRng::seed_from_u64(0x4D52);
    let mut checked = 0;
    for ty in FORMATS {
        let vdt = ty.vec_dot_type();
        // Legacy formats: around the sixteen-block groups of the one-row kernel, with every
        // tail (whole four-block steps, then single blocks).
        let counts: &[usize] = if ty.block_len() == 32 {
            &[1, 3, 7, 8, 16, 21, 33, 70]
        } else {
            block_counts(ty)
        };
        for (k, &nb) in counts.iter().enumerate() {
            let n = nb * ty.block_len();
            let (wb, ab) = (ty.row_bytes(n).unwrap(), vdt.row_bytes(n).unwrap());
            let (wstride, astride) = (wb + 5, ab + 7);
            let rows = [3, 1, 6, 2][k % 4];
            let pattern = [Pattern::Random, Pattern::HighBit, Pattern::AllOnes][k % 3];
            let (ws, w_rows) = strided_weights(&mut rng, ty, n, rows, wstride, |i| {
                if i == 1 { Pattern::AllZeros } else { pattern }
            });
            let (acts, a_rows) =
                strided_activations(&mut rng, vdt, n, MULTI_MAX, astride, |j| j % 3 == 2);
            for isa in available_isas() {
                for m in 1..=MULTI_MAX {
                    // One float more than needed: the kernel must not write it.
                    let mut out = vec![f32::NAN; rows * m + 1];
                    let mut prepared = PreparedActs::default();
                    prepare_acts_isa(isa, ty, n, &acts, astride, m, &mut prepared).unwrap();
                    vec_dot_multi_rows_isa(
                        isa, ty, n, &ws, wstride, rows, &acts, astride, m, &prepared, &mut out,
                    )
                    .unwrap();
                    assert!(
                        out[rows * m].is_nan(),
                        "multi_rows wrote past rows * n_acts"
                    );
                    for i in 0..rows {
                        for j in 0..m {
                            let (w, a) = (&w_rows[i], &a_rows[j]);
                            let got = out[i * m + j];
                            let same_isa = vec_dot_isa(isa, ty, n, w, a).unwrap();
                            assert_eq!(
                                got.to_bits(),
                                same_isa.to_bits(),
                                "multi_rows {ty} {isa:?} n={n} rows={rows} m={m} i={i} j={j}: \
                                 {got} vs vec_dot {same_isa} on the same ISA"
                            );
                            let reference = vec_dot_isa(Isa::Scalar, ty, n, w, a).unwrap();
                            let tol = if isa == Isa::Scalar {
                                0.0
                            } else {
                                scalar_tolerance(ty, w, a, n)
                            };
                            let err = f64::from((got - reference).abs());
                            assert!(
                                err <= tol,
                                "multi_rows {ty} {isa:?} n={n} m={m}: {got} vs scalar {reference}"
                            );
                            checked += 1;
                        }
                    }
                    if isa == quant::isa() {
                        let mut active = vec![f32::NAN; rows * m];
                        prepare_acts(ty, n, &acts, astride, m, &mut prepared);
                        vec_dot_multi_rows(
                            ty,
                            n,
                            &ws,
                            wstride,
                            rows,
                            &acts,
                            astride,
                            m,
                            &prepared,
                            &mut active,
                        );
                        assert_eq!(
                            active.iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
                            out[..rows * m]
                                .iter()
                                .map(|x| x.to_bits())
                                .collect::<Vec<_>>(),
                            "multi_rows {ty}: active ISA differs"
                        );
                    }
                }
            }
        }
    }
    eprintln!("{checked} multi_rows comparisons");
}

#[test]
fn gemm_matches_scalar_per_row_dots() {
    // Every format and ISA: gemm over row counts around whole GEMM_ROWS tiles (the packed
    // register-blocked kernels take whole tiles, the rest goes through vec_dot_multi) and
    // activation counts around the kernels' register blocks, strided with junk between rows,
    // against the scalar per-row vec_dot within the per-row SIMD tolerance.
    let mut rng = StdRng::seed_from_u64(0x6E33);
    let mut checked = 0;
    for ty in FORMATS {
        let vdt = ty.vec_dot_type();
        let counts: &[usize] = if ty.block_len() == 256 {
            &[1, 2, 3, 7]
        } else {
            &[1, 3, 8]
        };
        for (k, &nb) in counts.iter().enumerate() {
            let n = nb * ty.block_len().max(32);
            let (wb, ab) = (ty.row_bytes(n).unwrap(), vdt.row_bytes(n).unwrap());
            let (wstride, astride) = (wb + 7, ab + 3);
            let rows = [GEMM_ROWS, 2 * GEMM_ROWS + 3, 5, GEMM_ROWS + 1][k % 4];
            let n_acts = [13, 1, 6, 9][k % 4];
            let pattern = [Pattern::Random, Pattern::AllOnes, Pattern::HighBit][k % 3];
            let (ws, w_rows) = strided_weights(&mut rng, ty, n, rows, wstride, |i| {
                if i % 5 == 4 {
                    Pattern::AllZeros
                } else {
                    pattern
                }
            });
            let (acts, a_rows) =
                strided_activations(&mut rng, vdt, n, n_acts, astride, |j| j % 3 == 1);
            for isa in available_isas() {
                // One output row per activation, one float longer than needed.
                let mut out = vec![vec![f32::NAN; rows + 1]; n_acts];
                let mut views: Vec<&mut [f32]> = out.iter_mut().map(|o| &mut o[..]).collect();
                gemm_isa(isa, ty, n, &ws, wstride, rows, &acts, astride, &mut views).unwrap();
                assert!(
                    out.iter().all(|o| o[rows].is_nan()),
                    "gemm wrote past `rows`"
                );
                for i in 0..rows {
                    for j in 0..n_acts {
                        let (w, a) = (&w_rows[i], &a_rows[j]);
                        let reference = vec_dot_isa(Isa::Scalar, ty, n, w, a).unwrap();
                        let got = out[j][i];
                        // Batch invariance: every path of an ISA (GEMM tiles, multi tiles, the
                        // per-row dot) gives the same bits, so a sequence's tokens do not
                        // depend on how many rows its batch had.
                        let same_isa = vec_dot_isa(isa, ty, n, w, a).unwrap();
                        assert_eq!(
                            got.to_bits(),
                            same_isa.to_bits(),
                            "gemm {ty} {isa:?} n={n} rows={rows} i={i} j={j}: {got} vs vec_dot \
                             {same_isa} on the same ISA"
                        );
                        let tol = if isa == Isa::Scalar {
                            0.0
                        } else {
                            scalar_tolerance(ty, w, a, n)
                        };
                        let err = f64::from((got - reference).abs());
                        assert!(
                            err <= tol,
                            "gemm {ty} {isa:?} n={n} rows={rows} i={i} j={j}: {got} vs scalar \
                             {reference} (|err| {err:e} > tol {tol:e})"
                        );
                        checked += 1;
                    }
                }
                if isa == quant::isa() {
                    let mut active = vec![vec![f32::NAN; rows + 1]; n_acts];
                    let mut views: Vec<&mut [f32]> =
                        active.iter_mut().map(|o| &mut o[..rows]).collect();
                    gemm(ty, n, &ws, wstride, rows, &acts, astride, &mut views);
                    for (a, o) in active.iter().zip(&out) {
                        assert_eq!(a[..rows], o[..rows], "gemm {ty}: active ISA differs");
                    }
                }
            }
        }
    }
    eprintln!("{checked} gemm/scalar comparisons");
}

#[test]
fn simd_activation_quantizers_are_bit_identical_to_scalar() {
    // Every activation format on every ISA: the same bytes as the scalar reference, on random
    // rows and on the blocks where a SIMD quantizer could differ (all zeros, a NaN, ±inf,
    // subnormal maxima, the maximum repeated with both signs, exact .5 products).
    let mut rng = StdRng::seed_from_u64(0x98);
    let n = 256 * 12;
    let mut rows: Vec<Vec<f32>> = (0..8)
        .map(|k| {
            let scale = [1.0f32, 1e-3, 300.0, 1e-30][k % 4];
            (0..n)
                .map(|_| rng.random_range(-1.0f32..1.0) * scale)
                .collect()
        })
        .collect();
    let mut special = activations(&mut rng, n, false);
    special[..256].fill(0.0);
    special[256 + 17] = f32::NAN;
    special[512 + 3] = f32::INFINITY;
    special[768 + 5] = -f32::INFINITY;
    special[1024..1280].iter_mut().for_each(|v| *v *= 1e-39);
    special[1280 + 9] = -2.0;
    special[1280 + 200] = 2.0;
    special[1536 + 44] = 2.0;
    special[1536 + 45] = -2.0;
    for (i, v) in special[1792..2048].iter_mut().enumerate() {
        // Products iscale·v = k + 0.5: ties must round to even.
        *v = -((i % 127) as f32 + 0.5) / 127.0;
    }
    special[1792] = 1.0;
    special[2048..2304].fill(-0.0);
    special[2304 + 100] = f32::MIN_POSITIVE;
    rows.push(special);
    for ty in [
        GgmlType::Q8_K,
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::F16,
        GgmlType::BF16,
    ] {
        for (k, x) in rows.iter().enumerate() {
            let reference = {
                let mut d = vec![0u8; ty.row_bytes(n).unwrap()];
                quantize_activation_isa(Isa::Scalar, ty, x, &mut d)
                    .unwrap()
                    .unwrap();
                d
            };
            for isa in available_isas() {
                let mut d = vec![0xEEu8; ty.row_bytes(n).unwrap()];
                quantize_activation_isa(isa, ty, x, &mut d)
                    .unwrap()
                    .unwrap();
                assert!(
                    d == reference,
                    "{ty} {isa:?} row {k}: bytes differ from scalar"
                );
            }
        }
    }
}

#[test]
fn active_tiles_are_the_active_isas() {
    let mut rng = StdRng::seed_from_u64(0x7);
    for ty in [GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16] {
        let n = 512;
        let vdt = ty.vec_dot_type();
        let ab = vdt.row_bytes(n).unwrap();
        let wb = ty.row_bytes(n).unwrap();
        let ws: Vec<u8> = (0..3)
            .flat_map(|_| weight_row(&mut rng, ty, n, Pattern::Random))
            .collect();
        let acts: Vec<u8> = (0..5)
            .flat_map(|_| quantized(vdt, &activations(&mut rng, n, false)))
            .collect();
        let (mut a, mut b) = ([0.0f32; 5], [0.0f32; 5]);
        vec_dot_multi(ty, n, &ws, &acts, ab, &mut a);
        vec_dot_multi_isa(quant::isa(), ty, n, &ws, &acts, ab, &mut b).unwrap();
        assert_eq!(a, b, "{ty}");
        // A tile of one is the per-row dot exactly.
        let mut one = [0.0f32];
        vec_dot_multi(ty, n, &ws, &acts, ab, &mut one);
        assert_eq!(one[0], vec_dot(ty, n, &ws[..wb], &acts[..ab]), "{ty}");
    }
}

#[test]
fn tiles_check_their_bounds() {
    // Tile sizes out of range, and rows past the end of the buffers, are caller bugs that
    // must panic on every ISA, never read out of bounds.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut survived = Vec::new();
    for isa in available_isas() {
        for ty in FORMATS {
            let n = 2 * ty.block_len().max(32);
            let (wb, ab) = (
                ty.row_bytes(n).unwrap(),
                ty.vec_dot_type().row_bytes(n).unwrap(),
            );
            let (w, acts) = (vec![0u8; 2 * wb], vec![0u8; 3 * ab]);
            type Case<'a> = (&'static str, Box<dyn Fn() + 'a>);
            let cases: [Case<'_>; 5] = [
                (
                    "multi 0",
                    Box::new(|| {
                        vec_dot_multi_isa(isa, ty, n, &w, &acts, ab, &mut []);
                    }),
                ),
                (
                    "multi 9",
                    Box::new(|| {
                        vec_dot_multi_isa(isa, ty, n, &w, &acts, 0, &mut [0.0; 9]);
                    }),
                ),
                (
                    "multi past end",
                    Box::new(|| {
                        vec_dot_multi_isa(isa, ty, n, &w, &acts[..3 * ab - 1], ab, &mut [0.0; 3]);
                    }),
                ),
                (
                    "multi_rows 9",
                    Box::new(|| {
                        let mut p = PreparedActs::default();
                        prepare_acts_isa(isa, ty, n, &acts, 0, 9, &mut p);
                    }),
                ),
                (
                    "multi_rows past end",
                    Box::new(|| {
                        let mut p = PreparedActs::default();
                        prepare_acts_isa(isa, ty, n, &acts, ab, 2, &mut p).unwrap();
                        let w = &w[..2 * wb - 1];
                        vec_dot_multi_rows_isa(
                            isa,
                            ty,
                            n,
                            w,
                            wb,
                            2,
                            &acts,
                            ab,
                            2,
                            &p,
                            &mut [0.0; 4],
                        );
                    }),
                ),
            ];
            for (what, f) in cases {
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).is_ok() {
                    survived.push(format!("{isa:?} {ty} {what}"));
                }
            }
        }
    }
    std::panic::set_hook(hook);
    assert!(survived.is_empty(), "accepted: {survived:?}");
}

#[test]
fn active_vec_dot_is_one_of_the_paths() {
    let mut rng = StdRng::seed_from_u64(3);
    let ty = GgmlType::Q4_K;
    let n = 512;
    let w = weight_row(&mut rng, ty, n, Pattern::Random);
    let act = quantized(ty.vec_dot_type(), &activations(&mut rng, n, false));
    let active = vec_dot(ty, n, &w, &act);
    assert_eq!(Some(active), vec_dot_isa(quant::isa(), ty, n, &w, &act));
    assert_eq!(try_vec_dot(ty, n, &w, &act), Ok(active));
}

#[test]
fn q8_activations_follow_llama_cpp_rounding() {
    // Q8_0: amax 2.54 → d = 0.02, q = round_half_even(x·127/2.54).
    let mut x = vec![0.0f32; 32];
    x[0] = 2.54;
    x[1] = -1.27; // exactly -63.5 steps → ties to even: -64
    x[2] = 0.03; // 1.5 steps → 2
    x[3] = 0.05; // 2.5 steps → 2 (half to even), where roundf would give 3
    let act = quantized(GgmlType::Q8_0, &x);
    let d = f16::from_le_bytes([act[0], act[1]]);
    assert_eq!(d, f16::from_f32(2.54 / 127.0));
    let qs: Vec<i8> = act[2..].iter().map(|&b| b as i8).collect();
    assert_eq!(&qs[..5], &[127, -64, 2, 2, 0]);

    // Q8_1 stores s = d·Σq.
    let act = quantized(GgmlType::Q8_1, &x);
    let s = f16::from_le_bytes([act[2], act[3]]).to_f32();
    let sum: i32 = act[4..].iter().map(|&b| i32::from(b as i8)).sum();
    assert_eq!(s, f16::from_f32(2.54 / 127.0 * sum as f32).to_f32());

    // Q8_K: the signed max maps to -127 exactly, d is an f32, bsums add up each 16 quants.
    let mut x = vec![0.0f32; 256];
    for (i, v) in x.iter_mut().enumerate() {
        *v = ((i * 37 % 101) as f32 - 50.0) / 10.0;
    }
    x[200] = -7.0;
    let act = quantized(GgmlType::Q8_K, &x);
    let d = f32::from_le_bytes(act[..4].try_into().unwrap());
    assert_eq!(d, 1.0 / (-127.0f32 / -7.0));
    let qs: Vec<i8> = act[4..260].iter().map(|&b| b as i8).collect();
    assert_eq!(qs[200], -127);
    for j in 0..16 {
        let bsum = i16::from_le_bytes([act[260 + 2 * j], act[261 + 2 * j]]);
        assert_eq!(
            i32::from(bsum),
            qs[16 * j..16 * j + 16]
                .iter()
                .map(|&q| i32::from(q))
                .sum::<i32>()
        );
    }

    // All-zero blocks quantize to zeros everywhere, never NaN.
    for vdt in [GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K] {
        let act = quantized(vdt, &[0.0; 256]);
        assert!(act.iter().all(|&b| b == 0), "{vdt}");
    }
}

#[test]
fn activation_round_trip_stays_within_half_a_step() {
    // dequantize(quantize(x)) for every activation type, against the per-element bounds of
    // `activation_error_bound` (one weight of 1 at element i isolates element i's error).
    let mut rng = StdRng::seed_from_u64(0xAC7);
    for vdt in [
        GgmlType::Q8_0,
        GgmlType::Q8_1,
        GgmlType::Q8_K,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::F32,
    ] {
        let n = 1024;
        let x: Vec<f32> = (0..n)
            .map(|i| rng.random_range(-1.0f32..1.0) * [1.0, 1e-2, 1e-4, 1e-6][i / 256])
            .collect();
        let back = dequantized(vdt, &quantized(vdt, &x), n);
        for i in 0..n {
            let mut unit = vec![0.0f32; n];
            unit[i] = 1.0;
            let bound = activation_error_bound(vdt, &unit, &x);
            let err = f64::from((back[i] - x[i]).abs());
            assert!(
                err <= bound,
                "{vdt}[{i}]: {} → {} (err {err:e} > {bound:e})",
                x[i],
                back[i]
            );
        }
    }
}

#[test]
fn errors_instead_of_panics() {
    let mut out = vec![0.0f32; 64];
    // Wrong source length, both ways.
    assert!(matches!(
        dequantize(GgmlType::Q4_0, &[0u8; 35], &mut out),
        Err(QuantError::Length {
            expected: 36,
            found: 35,
            ..
        })
    ));
    assert!(matches!(
        dequantize(GgmlType::Q4_0, &[0u8; 37], &mut out),
        Err(QuantError::Length { .. })
    ));
    // Not a whole number of blocks.
    assert!(matches!(
        dequantize(GgmlType::Q4_K, &[0u8; 144], &mut out),
        Err(QuantError::NotBlockMultiple {
            n: 64,
            block_len: 256,
            ..
        })
    ));
    // Types without kernels.
    for ty in [
        GgmlType::IQ2_XXS,
        GgmlType::IQ4_NL,
        GgmlType::TQ1_0,
        GgmlType::MXFP4,
        GgmlType::I8,
    ] {
        let src = vec![0u8; ty.row_bytes(256).unwrap()];
        let mut out = vec![0.0f32; 256];
        assert_eq!(
            dequantize(ty, &src, &mut out),
            Err(QuantError::Unsupported { ty })
        );
        let act = vec![0u8; ty.vec_dot_type().row_bytes(256).unwrap()];
        assert_eq!(
            try_vec_dot(ty, 256, &src, &act),
            Err(QuantError::Unsupported { ty })
        );
    }
    // Activation quantization.
    let x = [0.5f32; 64];
    assert_eq!(
        quantize_activation(GgmlType::Q4_0, &x, &mut [0u8; 36]),
        Err(QuantError::NotActivationType { ty: GgmlType::Q4_0 })
    );
    assert!(matches!(
        quantize_activation(GgmlType::Q8_0, &x, &mut [0u8; 67]),
        Err(QuantError::Length {
            expected: 68,
            found: 67,
            ..
        })
    ));
    assert!(matches!(
        quantize_activation(GgmlType::Q8_K, &x, &mut [0u8; 292]),
        Err(QuantError::NotBlockMultiple { .. })
    ));
    // Fused dot with short rows or a wrong activation type's length.
    let w = vec![0u8; 144];
    assert!(matches!(
        try_vec_dot(GgmlType::Q4_K, 256, &w[..143], &[0u8; 292]),
        Err(QuantError::Length {
            what: "weight row",
            ..
        })
    ));
    assert!(matches!(
        try_vec_dot(GgmlType::Q4_K, 256, &w, &[0u8; 272]),
        Err(QuantError::Length {
            what: "activation row",
            ..
        })
    ));
    assert!(matches!(
        try_vec_dot(GgmlType::Q8_0, 33, &[0u8; 34], &[0u8; 34]),
        Err(QuantError::NotBlockMultiple { .. })
    ));
    // Sizes that overflow.
    assert_eq!(GgmlType::F32.row_bytes(usize::MAX / 2), None);
    assert_eq!(
        quant::check_vec_dot(GgmlType::F32, usize::MAX / 2, &[], &[]),
        Err(QuantError::Overflow {
            ty: GgmlType::F32,
            n: usize::MAX / 2
        })
    );
    // Empty rows are fine.
    assert_eq!(dequantize(GgmlType::F32, &[], &mut []), Ok(()));
    assert_eq!(try_vec_dot(GgmlType::Q4_0, 0, &[], &[]), Ok(0.0));
    // Messages name the type and the sizes.
    let msg = dequantize(GgmlType::Q6_K, &[0u8; 10], &mut [0.0; 256])
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Q6_K") && msg.contains("210") && msg.contains("10"),
        "{msg}"
    );
}

#[test]
#[should_panic(expected = "unsupported type IQ2_XXS")]
fn vec_dot_on_unsupported_type_is_a_caller_bug() {
    vec_dot(GgmlType::IQ2_XXS, 256, &[0u8; 66], &[0u8; 292]);
}

#[test]
fn vec_dot_never_reads_past_a_short_row() {
    // A caller bug must hit a bounds check, never read out of bounds, on every path. The
    // panics are expected: silence the default hook while provoking them.
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let mut survived = Vec::new();
    for isa in available_isas() {
        for ty in FORMATS {
            let n = 2 * ty.block_len().max(32);
            let (wb, ab) = (
                ty.row_bytes(n).unwrap(),
                ty.vec_dot_type().row_bytes(n).unwrap(),
            );
            let (w, act) = (vec![0u8; wb], vec![0u8; ab]);
            for (wl, al) in [(wb - 1, ab), (wb, ab - 1)] {
                let r = std::panic::catch_unwind(|| vec_dot_isa(isa, ty, n, &w[..wl], &act[..al]));
                if r.is_ok() {
                    survived.push(format!("{isa:?} {ty} w={wl} act={al}"));
                }
            }
        }
    }
    std::panic::set_hook(hook);
    assert!(survived.is_empty(), "short rows accepted: {survived:?}");
}

#[test]
fn f16_helpers_match_scalar() {
    let mut rng = StdRng::seed_from_u64(0xF16);
    for n in (0..=70).chain([127, 128, 129, 1000, 4096 + 5]) {
        let a: Vec<f16> = (0..n)
            .map(|_| f16::from_f32(rng.random_range(-4.0f32..4.0)))
            .collect();
        let af: Vec<f32> = (0..n).map(|_| rng.random_range(-4.0f32..4.0)).collect();
        let b: Vec<f32> = (0..n).map(|_| rng.random_range(-4.0f32..4.0)).collect();
        let abs_f16: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from((x.to_f32() * y).abs()))
            .sum();
        let abs_f32: f64 = af
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from((x * y).abs()))
            .sum();
        // Scalar accumulates in f64; SIMD in f32 lanes: ≤ (n + 16)·eps·Σ|ab|.
        let tol = |abs: f64| (n + 16) as f64 * f64::from(f32::EPSILON) * abs;
        let r16 = quant::dot_f16_f32_isa(Isa::Scalar, &a, &b).unwrap();
        let r32 = quant::dot_f32_isa(Isa::Scalar, &af, &b).unwrap();
        let exact16: f64 = a
            .iter()
            .zip(&b)
            .map(|(x, y)| f64::from(x.to_f32()) * f64::from(*y))
            .sum();
        assert!((f64::from(r16) - exact16).abs() <= f64::from(f32::EPSILON) * abs_f16 + 1e-30);
        let alpha = rng.random_range(-2.0f32..2.0);
        let acc0: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let mut reference = acc0.clone();
        quant::axpy_f16_isa(Isa::Scalar, &mut reference, alpha, &a).unwrap();
        for isa in available_isas() {
            let g16 = quant::dot_f16_f32_isa(isa, &a, &b).unwrap();
            assert!(
                f64::from((g16 - r16).abs()) <= tol(abs_f16),
                "dot_f16_f32 {isa:?} n={n}: {g16} vs {r16}"
            );
            let g32 = quant::dot_f32_isa(isa, &af, &b).unwrap();
            assert!(
                f64::from((g32 - r32).abs()) <= tol(abs_f32),
                "dot_f32 {isa:?} n={n}: {g32} vs {r32}"
            );
            // axpy is one fused multiply-add per element on every path: bit-identical.
            let mut acc = acc0.clone();
            quant::axpy_f16_isa(isa, &mut acc, alpha, &a).unwrap();
            assert_eq!(acc, reference, "axpy_f16 {isa:?} n={n}");
        }
        // The dispatched entry points agree with their ISA's table.
        assert_eq!(
            Some(quant::dot_f32(&af, &b)),
            quant::dot_f32_isa(quant::isa(), &af, &b)
        );
        assert_eq!(
            Some(quant::dot_f16_f32(&a, &b)),
            quant::dot_f16_f32_isa(quant::isa(), &a, &b)
        );
        let mut acc = acc0.clone();
        quant::axpy_f16(&mut acc, alpha, &a);
        assert_eq!(acc, reference);
    }
}

/// Prints the active ISA; run as a child process by `picolm_isa_env_lowers_but_never_raises`.
#[test]
fn isa_env_probe() {
    println!("PICOLM_ACTIVE_ISA={}", quant::isa().name());
}

#[test]
fn picolm_isa_env_lowers_but_never_raises() {
    // The ISA is chosen once per process, so each setting runs in a fresh copy of this binary.
    let exe = std::env::current_exe().unwrap();
    let best = *available_isas().last().unwrap();
    for (env, want) in [
        ("scalar", Isa::Scalar),
        ("AVX2", Isa::Avx2.min(best)),
        ("avx512", Isa::Avx512.min(best)),
        ("neon", best),
    ] {
        let out = std::process::Command::new(&exe)
            .args([
                "--exact",
                "isa_env_probe",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("PICOLM_ISA", env)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let line = format!("PICOLM_ACTIVE_ISA={}", want.name());
        assert!(
            stdout.contains(&line),
            "PICOLM_ISA={env}: expected {line} in {stdout}"
        );
    }
}

/// The batched attention helpers give, on every ISA, exactly what composing that ISA's
/// `dot_f16_f32` and `axpy_f16` per position gives (the forward pass used to do that), for
/// the head sizes of real models and odd ones, strided caches, and several heads per group.
#[test]
fn batched_attention_helpers_match_per_position_calls() {
    let mut rng = StdRng::seed_from_u64(0xA77);
    for (hd, g, n_pos, stride_extra) in [
        (64, 8, 1, 0),
        (64, 8, 37, 192),
        (64, 7, 300, 64),
        (128, 2, 65, 0),
        (80, 3, 17, 16),
        (24, 1, 9, 5),
    ] {
        let stride = hd + stride_extra;
        let cache: Vec<f16> = (0..n_pos * stride)
            .map(|_| f16::from_f32(rng.random_range(-3.0f32..3.0)))
            .collect();
        let q: Vec<f32> = (0..g * hd)
            .map(|_| f16::from_f32(rng.random_range(-2.0f32..2.0)).to_f32())
            .collect();
        let raw: Vec<f32> = (0..g * n_pos)
            .map(|_| rng.random_range(0.0f32..1.0))
            .collect();
        let inv: Vec<f32> = (0..g).map(|_| rng.random_range(0.001f32..1.0)).collect();
        for isa in available_isas() {
            let mut scores = vec![f32::NAN; g * n_pos];
            quant::attn_scores_isa(isa, &cache, stride, n_pos, &q, hd, &mut scores).unwrap();
            for p in 0..n_pos {
                for j in 0..g {
                    let want = quant::dot_f16_f32_isa(
                        isa,
                        &cache[p * stride..p * stride + hd],
                        &q[j * hd..(j + 1) * hd],
                    )
                    .unwrap();
                    assert_eq!(
                        scores[j * n_pos + p].to_bits(),
                        want.to_bits(),
                        "attn_scores {isa:?} hd={hd} head {j} position {p}"
                    );
                }
            }
            let mut probs = raw.clone();
            let mut out = vec![f32::NAN; g * hd];
            quant::attn_values_isa(isa, &mut probs, &inv, &cache, stride, n_pos, hd, &mut out)
                .unwrap();
            for j in 0..g {
                let mut want = vec![0f32; hd];
                for p in 0..n_pos {
                    let pr = f16::from_f32(raw[j * n_pos + p] * inv[j]).to_f32();
                    assert_eq!(probs[j * n_pos + p].to_bits(), pr.to_bits(), "rounded prob");
                    quant::axpy_f16_isa(isa, &mut want, pr, &cache[p * stride..p * stride + hd])
                        .unwrap();
                }
                assert_eq!(
                    out[j * hd..(j + 1) * hd],
                    want[..],
                    "attn_values {isa:?} hd={hd} head {j}"
                );
            }
        }
    }
}

/// Every ISA's softmax numerators agree with libm's `expf` (the scalar path) to a few ulp
/// (the AVX-512 polynomial), vanish where `expf` would be subnormal, and the returned
/// normaliser agrees likewise.
#[test]
fn attn_softmax_tracks_expf() {
    let mut rng = StdRng::seed_from_u64(0x50F7);
    for n in [1usize, 2, 15, 16, 17, 64, 255, 1000] {
        for spread in [0.5f32, 8.0, 200.0] {
            let raw: Vec<f32> = (0..n).map(|_| rng.random_range(-spread..spread)).collect();
            let scale = 0.125;
            let mut want = raw.clone();
            let inv_want = quant::attn_softmax_isa(Isa::Scalar, &mut want, scale).unwrap();
            for isa in available_isas() {
                let mut got = raw.clone();
                let inv = quant::attn_softmax_isa(isa, &mut got, scale).unwrap();
                for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                    let ok = if w < f32::MIN_POSITIVE {
                        g == 0.0 || g == w
                    } else {
                        (g - w).abs() <= 4.0 * f32::EPSILON * w
                    };
                    assert!(ok, "{isa:?} n={n} spread={spread} [{i}]: {g} vs expf {w}");
                }
                assert!(
                    (inv - inv_want).abs() <= 4.0 * f32::EPSILON * inv_want,
                    "{isa:?} n={n}: 1/sum {inv} vs {inv_want}"
                );
                // The largest score maps to exactly 1.
                assert!(got.contains(&1.0));
            }
        }
    }
}

#[test]
fn silu_mul_tracks_the_f64_swiglu() {
    // Every ISA's SwiGLU against an f64 reference: the AVX-512 path's polynomial e^x is within
    // 2 ulp of expf, and the division and product add a rounding each.
    let mut rng = StdRng::seed_from_u64(0x5111);
    let mut gate: Vec<f32> = (0..16 * 7 + 5)
        .map(|_| rng.random_range(-20.0f32..20.0))
        .collect();
    gate[..8].copy_from_slice(&[0.0, -0.0, 90.0, -90.0, 1e-3, -1e-3, 88.0, -87.5]);
    let up: Vec<f32> = (0..gate.len())
        .map(|_| rng.random_range(-3.0f32..3.0))
        .collect();
    for isa in available_isas() {
        let mut got = gate.clone();
        quant::silu_mul_isa(isa, &mut got, &up).unwrap();
        for ((&x, &u), &g) in gate.iter().zip(&up).zip(&got) {
            let x64 = f64::from(x);
            let want = x64 / (1.0 + (-x64).exp()) * f64::from(u);
            let tol = 8.0 * f64::from(f32::EPSILON) * want.abs() + 1e-30;
            assert!(
                (f64::from(g) - want).abs() <= tol,
                "silu_mul {isa:?}: x {x} u {u}: {g} vs {want}"
            );
        }
    }
}
