//! Quantized tensor formats: the ggml type table, block layouts, scalar reference
//! dequantizers, activation quantizers and fused dequant-dot kernels.
//!
//! Semantics follow llama.cpp's CPU backend exactly, so that picolm's logits track
//! llama.cpp's on the same file: weights stay in their GGUF encoding, activations are
//! quantized to the weight type's [`GgmlType::vec_dot_type`] the way llama.cpp does, and each
//! dot product sums integer products inside a block before applying the block's scales.
//!
//! Every format has a scalar reference (module `scalar`, always compiled). On x86_64, AVX2 and
//! AVX-512 kernels are selected once at run time from the CPU's features ([`isa`]); they differ
//! from the scalar path only in the order of f32 additions across blocks.
//!
//! This module owns no I/O and knows nothing about tensors or models: callers (the GGUF reader,
//! the forward pass) pass rows as byte slices and validate shapes with [`GgmlType::row_bytes`].

mod blocks;
mod gemm;
mod scalar;
mod types;
#[cfg(target_arch = "x86_64")]
mod x86;

use blocks::{
    BlockQ2K, BlockQ3K, BlockQ4_0, BlockQ4_1, BlockQ4K, BlockQ5_0, BlockQ5_1, BlockQ5K, BlockQ6K,
    BlockQ8_0, BlockQ8_1, BlockQ8K, as_blocks, as_blocks_mut,
};
pub use gemm::GEMM_ROWS;
use std::sync::LazyLock;
pub use types::GgmlType;
use types::TYPE_COUNT;

/// Errors of the quantization API: every one names the type and the sizes involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantError {
    #[error(
        "tensor type {ty} is not supported by picolm (supported: F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)"
    )]
    Unsupported { ty: GgmlType },
    #[error("{ty} cannot hold activations (expected F32, F16, BF16, Q8_0, Q8_1 or Q8_K)")]
    NotActivationType { ty: GgmlType },
    #[error("{ty}: {n} elements is not a multiple of the block length {block_len}")]
    NotBlockMultiple {
        ty: GgmlType,
        n: usize,
        block_len: usize,
    },
    #[error("{ty}: {n} elements overflow the addressable size")]
    Overflow { ty: GgmlType, n: usize },
    #[error("{ty}: {what} has {found} bytes, expected {expected} for {n} elements")]
    Length {
        ty: GgmlType,
        what: &'static str,
        n: usize,
        expected: usize,
        found: usize,
    },
    #[error("{what}: lengths differ ({left} vs {right})")]
    LengthMismatch {
        what: &'static str,
        left: usize,
        right: usize,
    },
}

/// Bytes of an `n`-element row of `ty`, or the reason there is no such row.
fn checked_row_bytes(ty: GgmlType, n: usize) -> Result<usize, QuantError> {
    if !n.is_multiple_of(ty.block_len()) {
        return Err(QuantError::NotBlockMultiple {
            ty,
            n,
            block_len: ty.block_len(),
        });
    }
    ty.row_bytes(n).ok_or(QuantError::Overflow { ty, n })
}

fn check_len(
    ty: GgmlType,
    what: &'static str,
    n: usize,
    found: usize,
) -> Result<usize, QuantError> {
    let expected = checked_row_bytes(ty, n)?;
    if found != expected {
        return Err(QuantError::Length {
            ty,
            what,
            n,
            expected,
            found,
        });
    }
    Ok(expected)
}

/// Scalar reference dequantization of `dst.len()` elements from `src`, which must hold exactly
/// that many elements of `ty`.
///
/// Besides the [supported](GgmlType::is_supported) types this also decodes Q8_1, Q8_K (the
/// activation formats) and Q2_K, Q3_K (so tools can look inside such files); outputs are
/// bit-identical to llama.cpp's `dequantize_row_*`.
pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<(), QuantError> {
    use GgmlType::*;
    let n = dst.len();
    if !(ty.is_supported() || matches!(ty, Q8_1 | Q8_K | Q2_K | Q3_K)) {
        return Err(QuantError::Unsupported { ty });
    }
    check_len(ty, "source", n, src.len())?;
    let nb = n / ty.block_len();
    match ty {
        F32 => scalar::dequant_f32(src, dst),
        F16 => scalar::dequant_f16(src, dst),
        BF16 => scalar::dequant_bf16(src, dst),
        Q4_0 => scalar::dequant_q4_0(as_blocks::<BlockQ4_0>(src, nb), dst),
        Q4_1 => scalar::dequant_q4_1(as_blocks::<BlockQ4_1>(src, nb), dst),
        Q5_0 => scalar::dequant_q5_0(as_blocks::<BlockQ5_0>(src, nb), dst),
        Q5_1 => scalar::dequant_q5_1(as_blocks::<BlockQ5_1>(src, nb), dst),
        Q8_0 => scalar::dequant_q8_0(as_blocks::<BlockQ8_0>(src, nb), dst),
        Q8_1 => scalar::dequant_q8_1(as_blocks::<BlockQ8_1>(src, nb), dst),
        Q8_K => scalar::dequant_q8_k(as_blocks::<BlockQ8K>(src, nb), dst),
        Q2_K => scalar::dequant_q2_k(as_blocks::<BlockQ2K>(src, nb), dst),
        Q3_K => scalar::dequant_q3_k(as_blocks::<BlockQ3K>(src, nb), dst),
        Q4_K => scalar::dequant_q4_k(as_blocks::<BlockQ4K>(src, nb), dst),
        Q5_K => scalar::dequant_q5_k(as_blocks::<BlockQ5K>(src, nb), dst),
        Q6_K => scalar::dequant_q6_k(as_blocks::<BlockQ6K>(src, nb), dst),
        _ => return Err(QuantError::Unsupported { ty }),
    }
    Ok(())
}

/// Quantizes an f32 activation row into `vdt` (F32, F16, BF16, Q8_0, Q8_1 or Q8_K) exactly as
/// llama.cpp's x86 CPU backend does; `dst.len()` must equal `vdt.row_bytes(x.len())`.
///
/// SIMD quantizers (Q8_K on AVX-512) give the same bytes as the scalar reference.
pub fn quantize_activation(vdt: GgmlType, x: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    quantize_on(&ACTIVE, vdt, x, dst)
}

/// [`quantize_activation`] on a given ISA's kernels; `None` (and `dst` untouched) if this CPU
/// cannot run `isa`.
pub fn quantize_activation_isa(
    isa: Isa,
    vdt: GgmlType,
    x: &[f32],
    dst: &mut [u8],
) -> Option<Result<(), QuantError>> {
    Some(quantize_on(kernels(isa)?, vdt, x, dst))
}

fn quantize_on(k: &Kernels, vdt: GgmlType, x: &[f32], dst: &mut [u8]) -> Result<(), QuantError> {
    use GgmlType::*;
    if !matches!(vdt, F32 | F16 | BF16 | Q8_0 | Q8_1 | Q8_K) {
        return Err(QuantError::NotActivationType { ty: vdt });
    }
    let n = x.len();
    check_len(vdt, "destination", n, dst.len())?;
    if let Some(f) = k.quantize[vdt as usize] {
        f(x, dst);
        return Ok(());
    }
    let nb = n / vdt.block_len();
    match vdt {
        F32 => scalar::quantize_f32(x, dst),
        F16 => scalar::quantize_f16(x, dst),
        BF16 => scalar::quantize_bf16(x, dst),
        Q8_0 => scalar::quantize_q8_0(x, as_blocks_mut::<BlockQ8_0>(dst, nb)),
        Q8_1 => scalar::quantize_q8_1(x, as_blocks_mut::<BlockQ8_1>(dst, nb)),
        _ => scalar::quantize_q8_k(x, as_blocks_mut::<BlockQ8K>(dst, nb)),
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Kernel dispatch
// ---------------------------------------------------------------------------------------------

/// An instruction set picolm has kernels for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Isa {
    /// Portable Rust, the reference.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL/VNNI on top of [`Isa::Avx2`].
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }
}

/// `fn(n, weight row, activation row) -> dot`. Rows are at least `row_bytes(n)` long.
pub(crate) type DotFn = fn(usize, &[u8], &[u8]) -> f32;
/// `fn(n, weight row, activations, activation stride, out)`: [`vec_dot_multi`]'s contract.
pub(crate) type MultiFn = fn(usize, &[u8], &[u8], usize, &mut [f32]);
/// `fn(n, activations, activation stride, activation rows, prepared)`: [`prepare_acts`]'s
/// contract.
pub(crate) type PrepareFn = fn(usize, &[u8], usize, usize, &mut Vec<Line>);
/// `fn(n, weight rows, weight row stride, rows, activations, activation stride, activation
/// rows, prepared, out)`: [`vec_dot_multi_rows`]'s contract.
pub(crate) type MultiRowsFn =
    fn(usize, &[u8], usize, usize, &[u8], usize, usize, &[Line], &mut [f32]);

/// A 64-byte, 64-aligned unit of [`PreparedActs`] storage: the kernels view runs of lines as
/// their own prepared-step types.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
pub(crate) struct Line(pub(crate) [u8; 64]);

/// Activation rows prepared once per matrix product for [`vec_dot_multi_rows`] (split into
/// steps, per-block sums and scales laid out for the kernels), so that every run of weight
/// rows, on any thread, reads them without preparing them again. The buffer only grows, so a
/// steady decode allocates nothing; it is derived from activations, so it is zeroed on drop.
#[derive(Debug, Default)]
pub struct PreparedActs {
    lines: Vec<Line>,
    /// What `lines` hold: (weight type, elements, activation rows, ISA).
    key: Option<(GgmlType, usize, usize, Isa)>,
}

impl PreparedActs {
    /// Overwrites the prepared data with zeros.
    pub fn wipe(&mut self) {
        for l in &mut self.lines {
            zeroize::Zeroize::zeroize(&mut l.0);
        }
    }
}

impl Drop for PreparedActs {
    fn drop(&mut self) {
        self.wipe();
    }
}
/// `fn(x, dst)`: quantizes an f32 row into an activation format, `dst` exactly its bytes.
pub(crate) type QuantFn = fn(&[f32], &mut [u8]);
/// `fn(n, weight rows, weight row stride, activations, activation stride, rows, out)`:
/// [`gemm`]'s contract for a whole number of [`GEMM_ROWS`]-row tiles.
pub(crate) type GemmFn = fn(usize, &[u8], usize, &[u8], usize, usize, &mut [&mut [f32]]);

/// One ISA's kernels. Tables for SIMD ISAs are only ever handed out by [`kernels`] after the
/// CPU features they need have been detected, which is what makes their safe function
/// pointers sound to call.
#[derive(Debug)]
pub(crate) struct Kernels {
    pub(crate) isa: Isa,
    /// Indexed by type id; `None` for types without a kernel.
    pub(crate) dot: [Option<DotFn>; TYPE_COUNT],
    /// Tile kernels; `None` where [`vec_dot_multi`] loops over `dot`.
    pub(crate) multi: [Option<MultiFn>; TYPE_COUNT],
    /// Few-sequence decode over a run of weight rows, activations prepared once for the run;
    /// `None` where [`vec_dot_multi_rows`] calls `multi` (or `dot`) row by row.
    pub(crate) multi_rows: [Option<MultiRowsFn>; TYPE_COUNT],
    /// The activation preparation of each `multi_rows` kernel.
    pub(crate) prepare: [Option<PrepareFn>; TYPE_COUNT],
    /// Register-blocked GEMM over [`GEMM_ROWS`]-row tiles; `None` where [`gemm`] loops over
    /// `multi`.
    pub(crate) gemm: [Option<GemmFn>; TYPE_COUNT],
    /// Activation quantizers by activation type, bit-identical to the scalar ones; `None`
    /// where [`quantize_activation`] uses the scalar reference.
    pub(crate) quantize: [Option<QuantFn>; TYPE_COUNT],
    /// Batched attention helpers, bit-identical to composing `dot_f16_f32` / `axpy_f16`
    /// per position (what [`attn_scores`] and [`attn_values`] do where these are `None`).
    pub(crate) attn_scores: Option<AttnScoresFn>,
    pub(crate) attn_values: Option<AttnValuesFn>,
    /// Vectorised softmax numerators (see [`attn_softmax`]); `None`: libm `expf` per score.
    pub(crate) attn_softmax: Option<fn(&mut [f32], f32) -> f32>,
    /// Vectorised SwiGLU (see [`silu_mul`]); `None`: libm `expf` per element.
    pub(crate) silu_mul: Option<SiluMulFn>,
    pub(crate) dot_f32: fn(&[f32], &[f32]) -> f32,
    pub(crate) dot_f16_f32: fn(&[half::f16], &[f32]) -> f32,
    pub(crate) axpy_f16: fn(&mut [f32], f32, &[half::f16]),
}

/// Builds a [`DotFn`] from a block kernel: views both rows as blocks and calls `$f`.
macro_rules! block_dot {
    ($wb:ty, $ab:ty, $len:expr, $f:expr) => {{
        fn dot(n: usize, w: &[u8], a: &[u8]) -> f32 {
            debug_assert!(n.is_multiple_of($len));
            let nb = n / $len;
            $f(as_blocks::<$wb>(w, nb), as_blocks::<$ab>(a, nb))
        }
        Some(dot as DotFn)
    }};
}

static SCALAR: LazyLock<Kernels> = LazyLock::new(|| {
    use GgmlType::*;
    let mut dot: [Option<DotFn>; TYPE_COUNT] = [None; TYPE_COUNT];
    dot[Q4_0 as usize] = block_dot!(BlockQ4_0, BlockQ8_0, 32, scalar::dot_q4_0);
    dot[Q4_1 as usize] = block_dot!(BlockQ4_1, BlockQ8_1, 32, scalar::dot_q4_1);
    dot[Q5_0 as usize] = block_dot!(BlockQ5_0, BlockQ8_0, 32, scalar::dot_q5_0);
    dot[Q5_1 as usize] = block_dot!(BlockQ5_1, BlockQ8_1, 32, scalar::dot_q5_1);
    dot[Q8_0 as usize] = block_dot!(BlockQ8_0, BlockQ8_0, 32, scalar::dot_q8_0);
    dot[Q4_K as usize] = block_dot!(BlockQ4K, BlockQ8K, 256, scalar::dot_q4_k);
    dot[Q5_K as usize] = block_dot!(BlockQ5K, BlockQ8K, 256, scalar::dot_q5_k);
    dot[Q6_K as usize] = block_dot!(BlockQ6K, BlockQ8K, 256, scalar::dot_q6_k);
    dot[F16 as usize] = Some(scalar::dot_f16 as DotFn);
    dot[BF16 as usize] = Some(scalar::dot_bf16 as DotFn);
    dot[F32 as usize] = Some(scalar::dot_f32_bytes as DotFn);
    Kernels {
        isa: Isa::Scalar,
        attn_scores: None,
        attn_values: None,
        attn_softmax: None,
        silu_mul: None,
        dot,
        multi: [None; TYPE_COUNT],
        multi_rows: [None; TYPE_COUNT],
        prepare: [None; TYPE_COUNT],
        gemm: [None; TYPE_COUNT],
        quantize: [None; TYPE_COUNT],
        dot_f32: scalar::dot_f32,
        dot_f16_f32: scalar::dot_f16_f32,
        axpy_f16: scalar::axpy_f16,
    }
});

/// The kernel table for `isa`, or `None` if this CPU cannot run it.
fn kernels(isa: Isa) -> Option<&'static Kernels> {
    match isa {
        Isa::Scalar => Some(&SCALAR),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 | Isa::Avx512 => x86::kernels(isa),
        #[cfg(not(target_arch = "x86_64"))]
        _ => None,
    }
}

/// The kernels every public entry point uses, chosen once: the best ISA the CPU supports,
/// lowered (never raised) by `PICOLM_ISA=scalar|avx2|avx512`.
static ACTIVE: LazyLock<&'static Kernels> = LazyLock::new(|| {
    let best = available_isas().into_iter().max().unwrap_or(Isa::Scalar);
    let chosen = match std::env::var("PICOLM_ISA") {
        Ok(v) => match parse_isa(&v) {
            Some(wanted) => wanted.min(best),
            None => {
                tracing::warn!(value = %v, "PICOLM_ISA is not one of scalar, avx2, avx512; ignored");
                best
            }
        },
        Err(_) => best,
    };
    tracing::debug!(isa = chosen.name(), "picolm kernels selected");
    kernels(chosen).unwrap_or(&SCALAR)
});

fn parse_isa(s: &str) -> Option<Isa> {
    match s.trim().to_ascii_lowercase().as_str() {
        "scalar" => Some(Isa::Scalar),
        "avx2" => Some(Isa::Avx2),
        "avx512" => Some(Isa::Avx512),
        _ => None,
    }
}

/// The ISA the kernels run with: the best one this CPU supports, detected once per process,
/// unless `PICOLM_ISA=scalar|avx2|avx512` asks for a lower one (it never raises it).
pub fn isa() -> Isa {
    ACTIVE.isa
}

/// Every ISA this CPU can run, in increasing order; always starts with [`Isa::Scalar`].
pub fn available_isas() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|&i| kernels(i).is_some())
        .collect()
}

/// Fused dequant-dot of one weight row (`n` elements of `ty`) with an activation row already
/// quantized to `ty.vec_dot_type()` by [`quantize_activation`].
///
/// This is the hot path: shapes are the caller's contract, checked once at load time
/// ([`check_vec_dot`] does it for one row).
///
/// # Panics
/// If `ty` has no kernel (`!ty.is_supported()`) or a row is shorter than `ty.row_bytes(n)` /
/// `ty.vec_dot_type().row_bytes(n)`: both are caller bugs, and the bounds check keeps them from
/// reading out of bounds. With debug assertions, also if `n` is not a whole number of blocks.
#[inline]
pub fn vec_dot(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> f32 {
    match ACTIVE.dot[ty as usize] {
        Some(f) => f(n, w, act),
        None => panic!("picolm::quant::vec_dot called with unsupported type {ty}"),
    }
}

/// [`vec_dot`] on a given ISA's kernels; `None` if this CPU cannot run `isa`. Same contract.
pub fn vec_dot_isa(isa: Isa, ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> Option<f32> {
    let k = kernels(isa)?;
    match k.dot[ty as usize] {
        Some(f) => Some(f(n, w, act)),
        None => panic!("picolm::quant::vec_dot_isa called with unsupported type {ty}"),
    }
}

/// Most activation rows one [`vec_dot_multi`] call takes.
pub const MULTI_MAX: usize = 8;

/// `out[j] = vec_dot(ty, n, w, act_j)` for `j in 0..out.len()` (1..=[`MULTI_MAX`] activation
/// rows, `act_j = acts[j * stride..j * stride + ty.vec_dot_type().row_bytes(n)]`), reading the
/// weight row once: the prefill tile, where each weight block is decoded once for all
/// activation rows.
///
/// Each result equals [`vec_dot`]'s on the same ISA up to the order of f32 additions. Q4_0,
/// Q5_0, Q8_0, Q4_K, Q5_K and Q6_K have tile kernels on AVX2 and AVX-512; other types, and
/// the scalar ISA, loop over [`vec_dot`].
///
/// # Panics
/// As [`vec_dot`], and if `out` is empty or longer than [`MULTI_MAX`] or an activation row
/// lies past the end of `acts`.
#[inline]
pub fn vec_dot_multi(
    ty: GgmlType,
    n: usize,
    w: &[u8],
    acts: &[u8],
    stride: usize,
    out: &mut [f32],
) {
    multi_on(&ACTIVE, ty, n, w, acts, stride, out)
}

/// [`vec_dot_multi`] on a given ISA's kernels; `None` (and `out` untouched) if this CPU cannot
/// run `isa`. Same contract.
pub fn vec_dot_multi_isa(
    isa: Isa,
    ty: GgmlType,
    n: usize,
    w: &[u8],
    acts: &[u8],
    stride: usize,
    out: &mut [f32],
) -> Option<()> {
    multi_on(kernels(isa)?, ty, n, w, acts, stride, out);
    Some(())
}

/// Prepares `n_acts` activation rows (1..=[`MULTI_MAX`], `act_j = acts[j * stride..]`, each
/// `ty.vec_dot_type().row_bytes(n)` long) into `prepared` for [`vec_dot_multi_rows`] over
/// weights of type `ty`: once per matrix product, then shared by every run of its rows.
///
/// # Panics
/// As [`vec_dot_multi_rows`].
pub fn prepare_acts(
    ty: GgmlType,
    n: usize,
    acts: &[u8],
    stride: usize,
    n_acts: usize,
    prepared: &mut PreparedActs,
) {
    prepare_on(&ACTIVE, ty, n, acts, stride, n_acts, prepared)
}

/// [`prepare_acts`] for a given ISA's kernels; `None` if this CPU cannot run `isa`.
pub fn prepare_acts_isa(
    isa: Isa,
    ty: GgmlType,
    n: usize,
    acts: &[u8],
    stride: usize,
    n_acts: usize,
    prepared: &mut PreparedActs,
) -> Option<()> {
    prepare_on(kernels(isa)?, ty, n, acts, stride, n_acts, prepared);
    Some(())
}

fn prepare_on(
    k: &Kernels,
    ty: GgmlType,
    n: usize,
    acts: &[u8],
    stride: usize,
    n_acts: usize,
    prepared: &mut PreparedActs,
) {
    dot_fn(k, ty);
    assert!(
        (1..=MULTI_MAX).contains(&n_acts),
        "prepare_acts: {n_acts} activation rows (1..={MULTI_MAX} allowed)"
    );
    prepared.key = None;
    if let Some(f) = k.prepare[ty as usize] {
        f(n, acts, stride, n_acts, &mut prepared.lines);
    }
    prepared.key = Some((ty, n, n_acts, k.isa));
}

/// `out[i * n_acts + j] = vec_dot(ty, n, w_i, act_j)` for `i in 0..rows`, `j in 0..n_acts`
/// (1..=[`MULTI_MAX`] activation rows), with `w_i = w[i * row_bytes..]` and
/// `act_j = acts[j * stride..]`: decode of one or a few sequences over a run of weight rows.
/// `prepared` must hold these activation rows as [`prepare_acts`] made them (checked for
/// type, length and row count; the contents are the caller's promise). Each weight row is
/// read once for all the activation rows; where the ISA has a kernel, the prepared groups of
/// four activation rows have their per-block sums reduced and scaled together, and a single
/// activation row is taken sixteen blocks at a time.
///
/// Every result is bit-identical to [`vec_dot`]'s on the same ISA (the kernels keep the
/// canonical f32 order), so a sequence's tokens do not depend on its batch neighbours.
///
/// # Panics
/// As [`vec_dot`], and if `n_acts` is 0 or more than [`MULTI_MAX`], `prepared` was made for
/// other activations, `out` is shorter than `rows * n_acts`, or a row lies past the end of
/// `w` or `acts`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn vec_dot_multi_rows(
    ty: GgmlType,
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    acts: &[u8],
    stride: usize,
    n_acts: usize,
    prepared: &PreparedActs,
    out: &mut [f32],
) {
    multi_rows_on(
        &ACTIVE, ty, n, w, row_bytes, rows, acts, stride, n_acts, prepared, out,
    )
}

/// [`vec_dot_multi_rows`] on a given ISA's kernels; `None` (and `out` untouched) if this CPU
/// cannot run `isa`. Same contract (`prepared` from [`prepare_acts_isa`] on the same ISA).
#[allow(clippy::too_many_arguments)]
pub fn vec_dot_multi_rows_isa(
    isa: Isa,
    ty: GgmlType,
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    acts: &[u8],
    stride: usize,
    n_acts: usize,
    prepared: &PreparedActs,
    out: &mut [f32],
) -> Option<()> {
    let k = kernels(isa)?;
    multi_rows_on(
        k, ty, n, w, row_bytes, rows, acts, stride, n_acts, prepared, out,
    );
    Some(())
}

#[allow(clippy::too_many_arguments)]
fn multi_rows_on(
    k: &Kernels,
    ty: GgmlType,
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    acts: &[u8],
    stride: usize,
    n_acts: usize,
    prepared: &PreparedActs,
    out: &mut [f32],
) {
    dot_fn(k, ty);
    assert!(
        (1..=MULTI_MAX).contains(&n_acts),
        "vec_dot_multi_rows: {n_acts} activation rows (1..={MULTI_MAX} allowed)"
    );
    assert!(
        prepared.key == Some((ty, n, n_acts, k.isa)),
        "vec_dot_multi_rows: activations prepared for {:?}, not ({ty}, {n}, {n_acts}, {:?})",
        prepared.key,
        k.isa
    );
    let out = &mut out[..rows.saturating_mul(n_acts)];
    match k.multi_rows[ty as usize] {
        Some(f) => f(
            n,
            w,
            row_bytes,
            rows,
            acts,
            stride,
            n_acts,
            &prepared.lines,
            out,
        ),
        None => {
            for (i, o) in out.chunks_exact_mut(n_acts).enumerate() {
                multi_on(k, ty, n, &w[i * row_bytes..], acts, stride, o);
            }
        }
    }
}

fn dot_fn(k: &Kernels, ty: GgmlType) -> DotFn {
    match k.dot[ty as usize] {
        Some(f) => f,
        None => panic!("picolm::quant::vec_dot called with unsupported type {ty}"),
    }
}

fn multi_on(
    k: &Kernels,
    ty: GgmlType,
    n: usize,
    w: &[u8],
    acts: &[u8],
    stride: usize,
    out: &mut [f32],
) {
    let dot = dot_fn(k, ty);
    assert!(
        (1..=MULTI_MAX).contains(&out.len()),
        "vec_dot_multi: {} activation rows (1..={MULTI_MAX} allowed)",
        out.len()
    );
    match k.multi[ty as usize] {
        Some(f) => f(n, w, acts, stride, out),
        None => {
            for (j, o) in out.iter_mut().enumerate() {
                *o = dot(n, w, &acts[j.saturating_mul(stride)..]);
            }
        }
    }
}

/// `out[j][i] = vec_dot(ty, n, w_i, act_j)` for `i in 0..rows`, `j in 0..out.len()`, with
/// `w_i = w[i * row_bytes..]` and `act_j = acts[j * stride..]`: the prefill matrix product of
/// a block of weight rows with every activation row of a chunk, each activation's results
/// going straight to its own output row.
///
/// Where the ISA has a GEMM kernel for `ty` (Q4_K, Q5_K and Q6_K on AVX2 and AVX-512, also
/// Q4_0, Q5_0 and Q8_0 on AVX-512), whole tiles of
/// [`GEMM_ROWS`] rows go through it: each tile is packed once and multiplied with all the
/// activation rows in register blocks. Other rows and formats use [`vec_dot_multi`]. Each
/// result equals [`vec_dot`]'s up to the order of f32 additions.
///
/// # Panics
/// As [`vec_dot`], and if an `out[j]` is shorter than `rows` or a row lies past the end of
/// `w` or `acts`.
#[allow(clippy::too_many_arguments)]
#[inline]
pub fn gemm(
    ty: GgmlType,
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    acts: &[u8],
    stride: usize,
    out: &mut [&mut [f32]],
) {
    gemm_on(&ACTIVE, ty, n, w, row_bytes, rows, acts, stride, out)
}

/// [`gemm`] on a given ISA's kernels; `None` (and `out` untouched) if this CPU cannot run
/// `isa`. Same contract.
#[allow(clippy::too_many_arguments)]
pub fn gemm_isa(
    isa: Isa,
    ty: GgmlType,
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    acts: &[u8],
    stride: usize,
    out: &mut [&mut [f32]],
) -> Option<()> {
    gemm_on(kernels(isa)?, ty, n, w, row_bytes, rows, acts, stride, out);
    Some(())
}

#[allow(clippy::too_many_arguments)]
fn gemm_on(
    k: &Kernels,
    ty: GgmlType,
    n: usize,
    w: &[u8],
    row_bytes: usize,
    rows: usize,
    acts: &[u8],
    stride: usize,
    out: &mut [&mut [f32]],
) {
    let dot = dot_fn(k, ty);
    for o in out.iter() {
        assert!(o.len() >= rows, "gemm: output row of {} < {rows}", o.len());
    }
    let mut r = 0;
    if let Some(f) = k.gemm[ty as usize] {
        debug_assert!(n.is_multiple_of(ty.block_len()));
        r = rows - rows % GEMM_ROWS;
        if r > 0 {
            f(n, w, row_bytes, acts, stride, r, out);
        }
    }
    for i in r..rows {
        let wr = &w[i * row_bytes..];
        match k.multi[ty as usize] {
            Some(f) => {
                let mut j0 = 0;
                while j0 < out.len() {
                    let m = (out.len() - j0).min(MULTI_MAX);
                    let mut tile = [0f32; MULTI_MAX];
                    f(n, wr, &acts[j0 * stride..], stride, &mut tile[..m]);
                    for (o, &v) in out[j0..j0 + m].iter_mut().zip(&tile) {
                        o[i] = v;
                    }
                    j0 += m;
                }
            }
            None => {
                for (j, o) in out.iter_mut().enumerate() {
                    o[i] = dot(n, wr, &acts[j.saturating_mul(stride)..]);
                }
            }
        }
    }
}

/// Checks that `w` and `act` are rows `vec_dot(ty, n, w, act)` accepts.
pub fn check_vec_dot(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> Result<(), QuantError> {
    if !ty.is_supported() {
        return Err(QuantError::Unsupported { ty });
    }
    check_len(ty, "weight row", n, w.len())?;
    check_len(ty.vec_dot_type(), "activation row", n, act.len())?;
    Ok(())
}

/// [`vec_dot`] with the checks of [`check_vec_dot`]: for callers off the hot path.
pub fn try_vec_dot(ty: GgmlType, n: usize, w: &[u8], act: &[u8]) -> Result<f32, QuantError> {
    check_vec_dot(ty, n, w, act)?;
    Ok(vec_dot(ty, n, w, act))
}

/// Dot product of two f32 slices of equal length (attention scores against f32 rows).
///
/// # Panics
/// With debug assertions, if the lengths differ; otherwise the shorter length is used.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    (ACTIVE.dot_f32)(a, b)
}

/// Dot product of an f16 row (the KV cache) with an f32 row, accumulated in f32.
///
/// # Panics
/// With debug assertions, if the lengths differ; otherwise the shorter length is used.
#[inline]
pub fn dot_f16_f32(a: &[half::f16], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    (ACTIVE.dot_f16_f32)(a, b)
}

/// `acc += alpha * x` with `x` an f16 row (attention-weighted sum of V); fused multiply-add on
/// every path, so all ISAs give identical results.
///
/// # Panics
/// With debug assertions, if the lengths differ; otherwise the shorter length is used.
#[inline]
pub fn axpy_f16(acc: &mut [f32], alpha: f32, x: &[half::f16]) {
    debug_assert_eq!(acc.len(), x.len());
    (ACTIVE.axpy_f16)(acc, alpha, x)
}

/// `fn(gate, up)`: [`silu_mul`]'s contract.
type SiluMulFn = fn(&mut [f32], &[f32]);
type AttnScoresFn = fn(&[half::f16], usize, usize, &[f32], usize, &mut [f32]);
type AttnValuesFn = fn(&mut [f32], &[f32], &[half::f16], usize, usize, usize, &mut [f32]);

/// Attention scores of `g = q.len() / hd` query heads (`q[j * hd..][..hd]`) against `n_pos`
/// cached f16 key rows `k[p * stride..][..hd]`: `out[j * n_pos + p] = dot_f16_f32(key p,
/// query j)`, bit-identical to calling [`dot_f16_f32`] per pair (one call per head group
/// instead of one per position and head).
///
/// # Panics
/// If `q.len()` is not a multiple of `hd`, `out` is shorter than `g * n_pos`, or a key row
/// lies past the end of `k`.
pub fn attn_scores(
    k: &[half::f16],
    stride: usize,
    n_pos: usize,
    q: &[f32],
    hd: usize,
    out: &mut [f32],
) {
    attn_scores_on(&ACTIVE, k, stride, n_pos, q, hd, out)
}

/// The attention-weighted sums of `n_pos` cached f16 value rows `v[p * stride..][..hd]` for
/// `g = inv.len()` heads: `out[j * hd..][..hd] = Σ_p prob(j, p) · value p`, where
/// prob(j, p) = `probs[j * n_pos + p] * inv[j]` rounded to f16 (written back to `probs`).
/// Bit-identical to zeroing `out` and calling [`axpy_f16`] per position in order.
///
/// # Panics
/// If `probs` is shorter than `g * n_pos`, `out` than `g * hd`, or a value row lies past the
/// end of `v`.
pub fn attn_values(
    probs: &mut [f32],
    inv: &[f32],
    v: &[half::f16],
    stride: usize,
    n_pos: usize,
    hd: usize,
    out: &mut [f32],
) {
    attn_values_on(&ACTIVE, probs, inv, v, stride, n_pos, hd, out)
}

/// Softmax numerators of one head's attention scores, in place: `x = e^(x·scale - max)`
/// with `max` the largest scaled score; returns 1 / Σ x (summed in f64). The AVX-512 path
/// uses a polynomial e^x within 2 ulp of libm's `expf` (0 where `expf` would be subnormal);
/// the others call `expf`.
pub fn attn_softmax(scores: &mut [f32], scale: f32) -> f32 {
    attn_softmax_on(&ACTIVE, scores, scale)
}

/// The SwiGLU of the feed-forward block, in place: `gate[i] = silu(gate[i]) · up[i]` with
/// silu(x) = x / (1 + e^-x), for `i < min(gate.len(), up.len())`. The AVX-512 path uses the
/// polynomial e^x of [`attn_softmax`] (within 2 ulp of `expf`; llama.cpp's own SiLU uses an
/// approximate exp too), the others libm's `expf`.
pub fn silu_mul(gate: &mut [f32], up: &[f32]) {
    silu_mul_on(&ACTIVE, gate, up)
}

/// [`silu_mul`] on a given ISA; `None` if this CPU cannot run it.
pub fn silu_mul_isa(isa: Isa, gate: &mut [f32], up: &[f32]) -> Option<()> {
    silu_mul_on(kernels(isa)?, gate, up);
    Some(())
}

fn silu_mul_on(k: &Kernels, gate: &mut [f32], up: &[f32]) {
    if let Some(f) = k.silu_mul {
        return f(gate, up);
    }
    for (g, &u) in gate.iter_mut().zip(up) {
        *g = *g / (1.0 + (-*g).exp()) * u;
    }
}

/// [`attn_softmax`] on a given ISA; `None` if this CPU cannot run it.
pub fn attn_softmax_isa(isa: Isa, scores: &mut [f32], scale: f32) -> Option<f32> {
    Some(attn_softmax_on(kernels(isa)?, scores, scale))
}

fn attn_softmax_on(k: &Kernels, scores: &mut [f32], scale: f32) -> f32 {
    if let Some(f) = k.attn_softmax {
        return f(scores, scale);
    }
    let mut max = f32::NEG_INFINITY;
    for x in scores.iter_mut() {
        *x *= scale;
        max = max.max(*x);
    }
    let mut sum = 0f64;
    for x in scores.iter_mut() {
        *x = (*x - max).exp();
        sum += f64::from(*x);
    }
    (1.0 / sum) as f32
}

/// [`attn_scores`] on a given ISA; `None` if this CPU cannot run it.
pub fn attn_scores_isa(
    isa: Isa,
    k: &[half::f16],
    stride: usize,
    n_pos: usize,
    q: &[f32],
    hd: usize,
    out: &mut [f32],
) -> Option<()> {
    attn_scores_on(kernels(isa)?, k, stride, n_pos, q, hd, out);
    Some(())
}

/// [`attn_values`] on a given ISA; `None` if this CPU cannot run it.
#[allow(clippy::too_many_arguments)]
pub fn attn_values_isa(
    isa: Isa,
    probs: &mut [f32],
    inv: &[f32],
    v: &[half::f16],
    stride: usize,
    n_pos: usize,
    hd: usize,
    out: &mut [f32],
) -> Option<()> {
    attn_values_on(kernels(isa)?, probs, inv, v, stride, n_pos, hd, out);
    Some(())
}

fn attn_scores_on(
    k: &Kernels,
    keys: &[half::f16],
    stride: usize,
    n_pos: usize,
    q: &[f32],
    hd: usize,
    out: &mut [f32],
) {
    assert!(
        hd > 0 && q.len().is_multiple_of(hd),
        "attn_scores: {} query floats for head dim {hd}",
        q.len()
    );
    let g = q.len() / hd;
    assert!(out.len() >= g * n_pos, "attn_scores: output too short");
    if n_pos == 0 {
        return;
    }
    assert!(
        (n_pos - 1) * stride + hd <= keys.len(),
        "attn_scores: key rows past the cache"
    );
    match k.attn_scores {
        Some(f) => f(keys, stride, n_pos, q, hd, out),
        None => {
            for p in 0..n_pos {
                let kr = &keys[p * stride..p * stride + hd];
                for j in 0..g {
                    out[j * n_pos + p] = (k.dot_f16_f32)(kr, &q[j * hd..(j + 1) * hd]);
                }
            }
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn attn_values_on(
    k: &Kernels,
    probs: &mut [f32],
    inv: &[f32],
    v: &[half::f16],
    stride: usize,
    n_pos: usize,
    hd: usize,
    out: &mut [f32],
) {
    let g = inv.len();
    assert!(
        probs.len() >= g * n_pos,
        "attn_values: probabilities too short"
    );
    assert!(out.len() >= g * hd, "attn_values: output too short");
    if n_pos == 0 {
        out[..g * hd].fill(0.0);
        return;
    }
    assert!(
        (n_pos - 1) * stride + hd <= v.len(),
        "attn_values: value rows past the cache"
    );
    match k.attn_values {
        Some(f) => f(probs, inv, v, stride, n_pos, hd, out),
        None => {
            for (j, &inv) in inv.iter().enumerate() {
                let o = &mut out[j * hd..(j + 1) * hd];
                o.fill(0.0);
                for p in 0..n_pos {
                    let pr = &mut probs[j * n_pos + p];
                    *pr = half::f16::from_f32(*pr * inv).to_f32();
                    (k.axpy_f16)(o, *pr, &v[p * stride..p * stride + hd]);
                }
            }
        }
    }
}

/// [`dot_f32`] on a given ISA; `None` if this CPU cannot run it.
pub fn dot_f32_isa(isa: Isa, a: &[f32], b: &[f32]) -> Option<f32> {
    Some((kernels(isa)?.dot_f32)(a, b))
}

/// [`dot_f16_f32`] on a given ISA; `None` if this CPU cannot run it.
pub fn dot_f16_f32_isa(isa: Isa, a: &[half::f16], b: &[f32]) -> Option<f32> {
    Some((kernels(isa)?.dot_f16_f32)(a, b))
}

/// [`axpy_f16`] on a given ISA; returns `None` (and leaves `acc` alone) if this CPU cannot run it.
pub fn axpy_f16_isa(isa: Isa, acc: &mut [f32], alpha: f32, x: &[half::f16]) -> Option<()> {
    (kernels(isa)?.axpy_f16)(acc, alpha, x);
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_table_round_trips_and_sizes() {
        for t in GgmlType::ALL {
            assert_eq!(GgmlType::from_u32(t.id()), Some(t));
            assert!(t.block_bytes() > 0 && t.block_len() > 0, "{t}");
        }
        for id in [4, 5, 31, 32, 33, 36, 37, 38, 43, u32::MAX] {
            assert_eq!(GgmlType::from_u32(id), None, "id {id}");
        }
        assert_eq!(GgmlType::Q4_K.row_bytes(512), Some(288));
        assert_eq!(GgmlType::Q4_K.row_bytes(896), None);
        assert_eq!(GgmlType::Q8_0.row_bytes(896), Some(28 * 34));
        assert_eq!(GgmlType::F32.row_bytes(usize::MAX), None);
        assert_eq!(GgmlType::Q6_K.name(), "Q6_K");
    }

    #[test]
    fn isa_names_parse() {
        for i in [Isa::Scalar, Isa::Avx2, Isa::Avx512] {
            assert_eq!(parse_isa(i.name()), Some(i));
        }
        assert_eq!(parse_isa(" AVX2 "), Some(Isa::Avx2));
        assert_eq!(parse_isa("neon"), None);
    }

    #[test]
    fn available_isas_include_active() {
        let all = available_isas();
        assert_eq!(all[0], Isa::Scalar);
        assert!(all.contains(&isa()));
    }
}
