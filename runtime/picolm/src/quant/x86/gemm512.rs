//! AVX-512 VNNI GEMM micro-kernel for packed K-quant tiles (see `quant::gemm`): 16 weight rows
//! (one per i32 lane) × `NA` activation rows per call, all in registers.
//!
//! Per super-block and activation row: one `vpdpbusd` per four elements (16 rows × 4
//! products, the four activation bytes broadcast from memory), one `vpmulld` + add per
//! sub-block for its scale, eight `vpdpwssd` for the mins/offsets against the bsums, and the
//! f32 scaling. Every integer is exact (|Σ q·y| ≤ 32·63·128 per sub-block, times a scale
//! < 2^7, over 16 sub-blocks stays below 2^31), as in the per-row kernels.
//!
//! Every function here is compiled for `avx512f,avx512bw,avx512vl,avx512vnni` on top of the
//! AVX2 set and must only be called once those features have been detected.
#![allow(unsafe_code)]

use super::super::blocks::{BlockQ8_0, BlockQ8K, as_blocks};
use super::super::gemm::{
    GEMM_ROWS, KPack, Q4KPack, Q5KPack, Q6KPack, SC_OFF, Z, d_off, mp_off, stride,
};
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Activation rows per micro-kernel call.
const NA: usize = 8;

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn ld(z: &Z) -> __m512i {
    // SAFETY: `Z` is 64 bytes with alignment 64, what the aligned load needs.
    unsafe { _mm512_load_si512(z.0.as_ptr().cast()) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn bcast(b: &[u8], i: usize) -> __m512i {
    _mm512_set1_epi32(i32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]))
}

/// Four signed bytes broadcast to every i32 lane.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn bcast_i8(b: &[i8], i: usize) -> __m512i {
    let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
    _mm512_set1_epi32(i32::from_le_bytes(w.map(|v| v as u8)))
}

/// `out[j][r]` = row r of the packed tile `tile` (`nb` blocks) · `acts[j]`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn kernel<K: KPack, const N: usize>(tile: &[Z], nb: usize, acts: [&[BlockQ8K]; N]) -> [__m512; N] {
    let st = stride(K::NSUB);
    let qps = 64 / K::NSUB;
    let mut acc = [_mm512_setzero_ps(); N];
    for (b, z) in tile[..nb * st].chunks_exact(st).enumerate() {
        let a: [&BlockQ8K; N] = std::array::from_fn(|j| &acts[j][b]);
        let mut iblk = [_mm512_setzero_si512(); N];
        for s in 0..K::NSUB {
            let mut isum = [_mm512_setzero_si512(); N];
            let quads = s * qps..(s + 1) * qps;
            for (t, zt) in quads.clone().zip(&z[quads]) {
                let w = ld(zt);
                for j in 0..N {
                    isum[j] = _mm512_dpbusd_epi32(isum[j], w, bcast_i8(&a[j].qs, 4 * t));
                }
            }
            let sc = ld(&z[SC_OFF + s]);
            for j in 0..N {
                iblk[j] = _mm512_add_epi32(iblk[j], _mm512_mullo_epi32(isum[j], sc));
            }
        }
        let mut imin = [_mm512_setzero_si512(); N];
        for p in 0..8 {
            let m = ld(&z[mp_off(K::NSUB) + p]);
            for j in 0..N {
                imin[j] = _mm512_dpwssd_epi32(imin[j], m, bcast(&a[j].bsums, 4 * p));
            }
        }
        let d = _mm512_castsi512_ps(ld(&z[d_off(K::NSUB)]));
        if K::MIN {
            let dm = _mm512_castsi512_ps(ld(&z[d_off(K::NSUB) + 1]));
            for j in 0..N {
                let ad = _mm512_set1_ps(a[j].d());
                acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(iblk[j]), _mm512_mul_ps(d, ad), acc[j]);
                acc[j] =
                    _mm512_fnmadd_ps(_mm512_cvtepi32_ps(imin[j]), _mm512_mul_ps(dm, ad), acc[j]);
            }
        } else {
            for j in 0..N {
                let ad = _mm512_set1_ps(a[j].d());
                let i = _mm512_add_epi32(iblk[j], imin[j]);
                acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(i), _mm512_mul_ps(d, ad), acc[j]);
            }
        }
    }
    acc
}

/// Runs the kernel for activation rows `j0..j0 + N` and stores each one's 16 results at
/// `out[j][r0..r0 + 16]`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn run<K: KPack, const N: usize>(
    tile: &[Z],
    nb: usize,
    acts: &[u8],
    stride_a: usize,
    j0: usize,
    r0: usize,
    out: &mut [&mut [f32]],
) {
    let ys: [&[BlockQ8K]; N] = std::array::from_fn(|j| {
        super::super::blocks::as_blocks::<BlockQ8K>(&acts[(j0 + j).saturating_mul(stride_a)..], nb)
    });
    let acc = kernel::<K, N>(tile, nb, ys);
    for (o, a) in out[j0..j0 + N].iter_mut().zip(acc) {
        let o = &mut o[r0..r0 + GEMM_ROWS];
        // SAFETY: `o` holds exactly 16 f32; `storeu` has no alignment requirement.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), a) };
    }
}

/// The 16 rows of a tile, for gathering the same dword of every row.
pub(crate) struct Rows16<'a> {
    w: &'a [u8],
    /// Byte offsets of the rows: r · row_bytes in lane r.
    vindex: __m512i,
    /// Offset of the last row.
    last: usize,
}

impl<'a> Rows16<'a> {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn new(w: &'a [u8], row_bytes: usize) -> Self {
        let rb = i32::try_from(row_bytes)
            .ok()
            .filter(|&rb| rb <= i32::MAX / 16);
        let rb = rb.expect("gemm: weight rows too long for 32-bit gather offsets");
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        Rows16 {
            w,
            vindex: _mm512_mullo_epi32(lanes, _mm512_set1_epi32(rb)),
            last: 15 * row_bytes,
        }
    }

    /// Lane r = the four bytes at `w[r * row_bytes + off..][..4]`.
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    fn at(&self, off: usize) -> __m512i {
        assert!(
            self.last + off + 4 <= self.w.len(),
            "gemm: gather past the weight rows"
        );
        // SAFETY: lane r reads 4 bytes at w + off + r·row_bytes, the furthest ending at
        // w + last + off + 4, within `w` by the assertion; gathers need no alignment.
        unsafe { _mm512_i32gather_epi32::<1>(self.vindex, self.w.as_ptr().add(off).cast()) }
    }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn st(z: &mut Z, v: __m512i) {
    // SAFETY: `Z` is 64 bytes with alignment 64, what the aligned store needs.
    unsafe { _mm512_store_si512(z.0.as_mut_ptr().cast(), v) }
}

/// A format whose `Q` entries this module builds with gathers (16 rows at a time) instead of
/// the portable [`KPack::pack_quants`] (one row at a time).
pub(crate) trait Gather: KPack {
    /// The `Q` entries of the block at byte `base` of every row.
    ///
    /// # Safety
    /// The CPU must have this module's features.
    unsafe fn gather_quants(g: &Rows16<'_>, base: usize, z: &mut [Z]);
}

impl Gather for Q4KPack {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn gather_quants(g: &Rows16<'_>, base: usize, z: &mut [Z]) {
        let m4 = _mm512_set1_epi8(0xF);
        for c in 0..4 {
            for t in 0..8 {
                // qs starts at byte 16 of a block_q4_K.
                let v = g.at(base + 16 + 32 * c + 4 * t);
                st(&mut z[16 * c + t], _mm512_and_si512(v, m4));
                st(
                    &mut z[16 * c + 8 + t],
                    _mm512_and_si512(_mm512_srli_epi32::<4>(v), m4),
                );
            }
        }
    }
}

impl Gather for Q5KPack {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn gather_quants(g: &Rows16<'_>, base: usize, z: &mut [Z]) {
        let m4 = _mm512_set1_epi8(0xF);
        let one = _mm512_set1_epi8(1);
        for t in 0..8 {
            // qh at byte 16 of a block_q5_K, qs at byte 48.
            let h = g.at(base + 16 + 4 * t);
            for c in 0..4 {
                let v = g.at(base + 48 + 32 * c + 4 * t);
                let bit = |k: u32| {
                    let hk = _mm512_srlv_epi32(h, _mm512_set1_epi32(k as i32));
                    _mm512_slli_epi32::<4>(_mm512_and_si512(hk, one))
                };
                let lo = _mm512_and_si512(v, m4);
                let hi = _mm512_and_si512(_mm512_srli_epi32::<4>(v), m4);
                st(&mut z[16 * c + t], _mm512_or_si512(lo, bit(2 * c as u32)));
                st(
                    &mut z[16 * c + 8 + t],
                    _mm512_or_si512(hi, bit(2 * c as u32 + 1)),
                );
            }
        }
    }
}

impl Gather for Q6KPack {
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn gather_quants(g: &Rows16<'_>, base: usize, z: &mut [Z]) {
        let m4 = _mm512_set1_epi8(0xF);
        let m3 = _mm512_set1_epi8(3);
        let hi2 = |qh: __m512i, k: u32| {
            let v = _mm512_srlv_epi32(qh, _mm512_set1_epi32(k as i32));
            _mm512_slli_epi32::<4>(_mm512_and_si512(v, m3))
        };
        for h in 0..2 {
            for t in 0..8 {
                // ql at byte 0 of a block_q6_K, qh at byte 128.
                let l0 = g.at(base + 64 * h + 4 * t);
                let l1 = g.at(base + 64 * h + 32 + 4 * t);
                let qh = g.at(base + 128 + 32 * h + 4 * t);
                let e = 32 * h + t;
                let low = |v: __m512i| _mm512_and_si512(v, m4);
                let high = |v: __m512i| _mm512_and_si512(_mm512_srli_epi32::<4>(v), m4);
                st(&mut z[e], _mm512_or_si512(low(l0), hi2(qh, 0)));
                st(&mut z[e + 8], _mm512_or_si512(low(l1), hi2(qh, 2)));
                st(&mut z[e + 16], _mm512_or_si512(high(l0), hi2(qh, 4)));
                st(&mut z[e + 24], _mm512_or_si512(high(l1), hi2(qh, 6)));
            }
        }
    }
}

/// Packs `GEMM_ROWS` rows of `nb` blocks into `dst` (the layout of `quant::gemm`): quants by
/// gathers, scales per row.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pack<K: Gather>(w: &[u8], row_bytes: usize, nb: usize, dst: &mut Vec<Z>) {
    let st = stride(K::NSUB);
    let len = nb * st;
    if dst.len() < len {
        dst.resize(len, Z::default());
    }
    let rows: [&[K::B]; GEMM_ROWS] =
        std::array::from_fn(|r| as_blocks::<K::B>(&w[r.saturating_mul(row_bytes)..], nb));
    let g = Rows16::new(w, row_bytes);
    let bb = size_of::<K::B>();
    for (b, z) in dst[..len].chunks_exact_mut(st).enumerate() {
        // SAFETY: this function's features include `gather_quants`'.
        unsafe { K::gather_quants(&g, b * bb, z) };
        for (r, row) in rows.iter().enumerate() {
            K::pack_params(&row[b], z, r);
        }
    }
}

thread_local! {
    static TILE: RefCell<Vec<Z>> = const { RefCell::new(Vec::new()) };
}

/// `out[j][r]` = weight row r (of `rows`, a multiple of `GEMM_ROWS`, `row_bytes` apart in `w`)
/// · activation row j (of `out.len()`, `stride_a` apart in `acts`), `n` elements each.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn gemm<K: Gather>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    acts: &[u8],
    stride_a: usize,
    rows: usize,
    out: &mut [&mut [f32]],
) {
    let nb = n / 256;
    TILE.with_borrow_mut(|tile| {
        for r0 in (0..rows).step_by(GEMM_ROWS) {
            pack::<K>(&w[r0 * row_bytes..], row_bytes, nb, tile);
            let tile = &tile[..];
            let mut j = 0;
            while j < out.len() {
                let m = (out.len() - j).min(NA);
                match m {
                    8 => run::<K, 8>(tile, nb, acts, stride_a, j, r0, out),
                    7 => run::<K, 7>(tile, nb, acts, stride_a, j, r0, out),
                    6 => run::<K, 6>(tile, nb, acts, stride_a, j, r0, out),
                    5 => run::<K, 5>(tile, nb, acts, stride_a, j, r0, out),
                    4 => run::<K, 4>(tile, nb, acts, stride_a, j, r0, out),
                    3 => run::<K, 3>(tile, nb, acts, stride_a, j, r0, out),
                    2 => run::<K, 2>(tile, nb, acts, stride_a, j, r0, out),
                    _ => run::<K, 1>(tile, nb, acts, stride_a, j, r0, out),
                }
                j += m;
            }
        }
    });
}

// ---------------------------------------------------------------------------------------------
// Legacy formats (Q4_0, Q5_0, Q8_0 × Q8_0 activations): blocks of 32 with one f16 scale each.
// ---------------------------------------------------------------------------------------------

/// Entries per packed legacy block: 8 of quants (unsigned: q, or q + 128 for Q8_0), then d.
const LSTRIDE: usize = 9;

/// A legacy format: byte offset of its scale, the offset `o` its unsigned quants carry
/// (x = d·(q − o)), and the gathering of its quants.
pub(crate) trait Legacy {
    type B: super::super::blocks::Block;
    const OFF: i32;
    /// The 8 `Q` entries of the block at byte `base` of every row.
    ///
    /// # Safety
    /// The CPU must have this module's features.
    unsafe fn gather_quants(g: &Rows16<'_>, base: usize, z: &mut [Z]);
}

/// Q4_0: d (2 bytes), 16 bytes of nibbles (elements j and j + 16 in byte j).
#[derive(Debug)]
pub(crate) struct Q4_0G;
impl Legacy for Q4_0G {
    type B = super::super::blocks::BlockQ4_0;
    const OFF: i32 = 8;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn gather_quants(g: &Rows16<'_>, base: usize, z: &mut [Z]) {
        let m4 = _mm512_set1_epi8(0xF);
        for t in 0..4 {
            let v = g.at(base + 2 + 4 * t);
            st(&mut z[t], _mm512_and_si512(v, m4));
            st(
                &mut z[t + 4],
                _mm512_and_si512(_mm512_srli_epi32::<4>(v), m4),
            );
        }
    }
}

/// Q5_0: d (2), qh (4: bit j is bit 4 of element j), 16 bytes of nibbles as Q4_0.
#[derive(Debug)]
pub(crate) struct Q5_0G;
impl Legacy for Q5_0G {
    type B = super::super::blocks::BlockQ5_0;
    const OFF: i32 = 16;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn gather_quants(g: &Rows16<'_>, base: usize, z: &mut [Z]) {
        let m4 = _mm512_set1_epi8(0xF);
        let qh = g.at(base + 2);
        // Bits 4t..4t + 4 of qh to bit 4 of bytes 0..4: ×0x00204081 moves bit k to bit 8k
        // (no two partial products overlap).
        let spread = |t: u32| {
            let b = _mm512_and_si512(
                _mm512_srlv_epi32(qh, _mm512_set1_epi32(4 * t as i32)),
                _mm512_set1_epi32(0xF),
            );
            let b = _mm512_mullo_epi32(b, _mm512_set1_epi32(0x0020_4081));
            _mm512_slli_epi32::<4>(_mm512_and_si512(b, _mm512_set1_epi32(0x0101_0101)))
        };
        for t in 0..4 {
            let v = g.at(base + 6 + 4 * t);
            let lo = _mm512_and_si512(v, m4);
            let hi = _mm512_and_si512(_mm512_srli_epi32::<4>(v), m4);
            st(&mut z[t], _mm512_or_si512(lo, spread(t as u32)));
            st(&mut z[t + 4], _mm512_or_si512(hi, spread(t as u32 + 4)));
        }
    }
}

/// Q8_0: d (2), 32 signed bytes, stored as q + 128.
#[derive(Debug)]
pub(crate) struct Q8_0G;
impl Legacy for Q8_0G {
    type B = super::super::blocks::BlockQ8_0;
    const OFF: i32 = 128;
    #[inline]
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
    unsafe fn gather_quants(g: &Rows16<'_>, base: usize, z: &mut [Z]) {
        let bias = _mm512_set1_epi8(-128);
        for (t, zt) in z[..8].iter_mut().enumerate() {
            st(zt, _mm512_xor_si512(g.at(base + 2 + 4 * t), bias));
        }
    }
}

/// Packs 16 rows of `nb` legacy blocks: the quants by gathers, d per row.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn pack_legacy<K: Legacy>(w: &[u8], row_bytes: usize, nb: usize, dst: &mut Vec<Z>) {
    let len = nb * LSTRIDE;
    if dst.len() < len {
        dst.resize(len, Z::default());
    }
    let bb = size_of::<K::B>();
    let rows: [&[u8]; GEMM_ROWS] =
        std::array::from_fn(|r| &w[r.saturating_mul(row_bytes)..][..nb * bb]);
    let g = Rows16::new(w, row_bytes);
    for (b, z) in dst[..len].chunks_exact_mut(LSTRIDE).enumerate() {
        // SAFETY: this function's features include `gather_quants`'.
        unsafe { K::gather_quants(&g, b * bb, z) };
        for (r, row) in rows.iter().enumerate() {
            // The f16 scale is the first field of every legacy block.
            let d = super::super::blocks::f16_le([row[b * bb], row[b * bb + 1]]);
            z[8].0[r] = d.to_bits();
        }
    }
}

/// Per activation block: its scale as f32 and −o·Σ y (the weights' offset, applied once per
/// block instead of per element).
#[derive(Clone, Copy, Debug, Default)]
struct ActInfo {
    d: f32,
    corr: i32,
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn legacy_kernel<const N: usize>(
    tile: &[Z],
    nb: usize,
    acts: [&[BlockQ8_0]; N],
    info: [&[ActInfo]; N],
) -> [__m512; N] {
    let mut acc = [_mm512_setzero_ps(); N];
    // The canonical order of the legacy formats (`avx512::legacy_pair`): per pair of blocks
    // t = i₁·s₁ + i₀·s₀ (one product, one fused multiply-add), then acc += t.
    let mut pair = [_mm512_setzero_ps(); N];
    for (b, z) in tile[..nb * LSTRIDE].chunks_exact(LSTRIDE).enumerate() {
        let a: [&BlockQ8_0; N] = std::array::from_fn(|j| &acts[j][b]);
        let inf: [ActInfo; N] = std::array::from_fn(|j| info[j][b]);
        let mut isum: [__m512i; N] = std::array::from_fn(|j| _mm512_set1_epi32(inf[j].corr));
        for (t, zt) in z[..8].iter().enumerate() {
            let w = ld(zt);
            for j in 0..N {
                isum[j] = _mm512_dpbusd_epi32(isum[j], w, bcast_i8(&a[j].qs, 4 * t));
            }
        }
        let d = _mm512_castsi512_ps(ld(&z[8]));
        let last = b + 1 == nb;
        for j in 0..N {
            let s = _mm512_mul_ps(d, _mm512_set1_ps(inf[j].d));
            let i = _mm512_cvtepi32_ps(isum[j]);
            if b % 2 == 0 {
                pair[j] = _mm512_mul_ps(i, s);
                if last {
                    acc[j] = _mm512_add_ps(acc[j], pair[j]);
                }
            } else {
                acc[j] = _mm512_add_ps(acc[j], _mm512_fmadd_ps(i, s, pair[j]));
            }
        }
    }
    acc
}

thread_local! {
    static LEGACY_INFO: RefCell<Vec<ActInfo>> = const { RefCell::new(Vec::new()) };
}

/// [`gemm`] for the legacy formats: `rows` (a multiple of `GEMM_ROWS`) weight rows × every
/// activation row (Q8_0), `out[j][r]`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn gemm_legacy<K: Legacy>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    acts: &[u8],
    stride_a: usize,
    rows: usize,
    out: &mut [&mut [f32]],
) {
    // SAFETY: only reachable through the AVX-512 table, handed out after detecting this
    // module's features.
    unsafe { gemm_legacy_impl::<K>(n, w, row_bytes, acts, stride_a, rows, out) }
}

#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn gemm_legacy_impl<K: Legacy>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    acts: &[u8],
    stride_a: usize,
    rows: usize,
    out: &mut [&mut [f32]],
) {
    let nb = n / 32;
    let n_acts = out.len();
    LEGACY_INFO.with_borrow_mut(|info| {
        // Once per call, for every tile: each activation block's scale and offset term.
        if info.len() < n_acts * nb {
            info.resize(n_acts * nb, ActInfo::default());
        }
        let bias = _mm256_set1_epi8(-128);
        for j in 0..n_acts {
            let ys = as_blocks::<BlockQ8_0>(&acts[j.saturating_mul(stride_a)..], nb);
            for (o, y) in info[j * nb..(j + 1) * nb].iter_mut().zip(ys) {
                // Σ y = Σ (y + 128) − 32·128, the unsigned sum by `vpsadbw`.
                let v = _mm256_xor_si256(super::avx2::load256(&y.qs), bias);
                let s = _mm256_sad_epu8(v, _mm256_setzero_si256());
                let s = _mm_add_epi64(_mm256_castsi256_si128(s), _mm256_extracti128_si256::<1>(s));
                let sum = (_mm_cvtsi128_si64(s) + _mm_extract_epi64::<1>(s)) as i32 - 32 * 128;
                *o = ActInfo {
                    d: super::super::blocks::f16_le(y.d),
                    corr: -K::OFF * sum,
                };
            }
        }
        let info = &info[..];
        TILE.with_borrow_mut(|tile| {
            for r0 in (0..rows).step_by(GEMM_ROWS) {
                pack_legacy::<K>(&w[r0 * row_bytes..], row_bytes, nb, tile);
                let tile = &tile[..];
                let mut j = 0;
                while j < n_acts {
                    let m = (n_acts - j).min(NA);
                    match m {
                        8 => legacy_run::<8>(tile, nb, acts, stride_a, info, j, r0, out),
                        7 => legacy_run::<7>(tile, nb, acts, stride_a, info, j, r0, out),
                        6 => legacy_run::<6>(tile, nb, acts, stride_a, info, j, r0, out),
                        5 => legacy_run::<5>(tile, nb, acts, stride_a, info, j, r0, out),
                        4 => legacy_run::<4>(tile, nb, acts, stride_a, info, j, r0, out),
                        3 => legacy_run::<3>(tile, nb, acts, stride_a, info, j, r0, out),
                        2 => legacy_run::<2>(tile, nb, acts, stride_a, info, j, r0, out),
                        _ => legacy_run::<1>(tile, nb, acts, stride_a, info, j, r0, out),
                    }
                    j += m;
                }
            }
        });
    });
}

#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
fn legacy_run<const N: usize>(
    tile: &[Z],
    nb: usize,
    acts: &[u8],
    stride_a: usize,
    info: &[ActInfo],
    j0: usize,
    r0: usize,
    out: &mut [&mut [f32]],
) {
    let ys: [&[BlockQ8_0]; N] = std::array::from_fn(|j| {
        as_blocks::<BlockQ8_0>(&acts[(j0 + j).saturating_mul(stride_a)..], nb)
    });
    let inf: [&[ActInfo]; N] = std::array::from_fn(|j| &info[(j0 + j) * nb..(j0 + j + 1) * nb]);
    let acc = legacy_kernel::<N>(tile, nb, ys, inf);
    for (o, a) in out[j0..j0 + N].iter_mut().zip(acc) {
        let o = &mut o[r0..r0 + GEMM_ROWS];
        // SAFETY: `o` holds exactly 16 f32; `storeu` has no alignment requirement.
        unsafe { _mm512_storeu_ps(o.as_mut_ptr(), a) };
    }
}

#[cfg(test)]
mod tests {
    use super::super::super::gemm::{Q4KPack, Q5KPack, Q6KPack, pack_tile};
    use super::*;

    /// The gathering packer against the portable one, entry for entry, on random bytes (any
    /// bytes are valid blocks) with rows an odd number of bytes apart.
    fn same_packing<K: Gather>(bb: usize) {
        if !super::super::has_avx512() {
            return;
        }
        let nb = 3;
        let row_bytes = nb * bb + 5;
        let mut x = 0x2545_f491_4f6c_dd1du64;
        let w: Vec<u8> = (0..16 * row_bytes)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect();
        let (mut a, mut b) = (Vec::new(), Vec::new());
        pack_tile::<K>(&w, row_bytes, nb, &mut a);
        // SAFETY: the features were detected above.
        unsafe { pack::<K>(&w, row_bytes, nb, &mut b) };
        assert_eq!(a.len(), b.len());
        for (i, (p, q)) in a.iter().zip(&b).enumerate() {
            assert_eq!(p.0, q.0, "entry {i}");
        }
    }

    #[test]
    fn gathered_packing_matches_portable_packing() {
        same_packing::<Q4KPack>(144);
        same_packing::<Q5KPack>(176);
        same_packing::<Q6KPack>(210);
    }
}
