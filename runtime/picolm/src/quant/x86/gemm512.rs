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

use super::super::blocks::BlockQ8K;
use super::super::gemm::{GEMM_ROWS, KPack, SC_OFF, Z, d_off, mp_off, pack_tile, stride};
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
            for t in s * qps..(s + 1) * qps {
                let w = ld(&z[t]);
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

thread_local! {
    static TILE: RefCell<Vec<Z>> = const { RefCell::new(Vec::new()) };
}

/// `out[j][r0 + r]` = weight row r (of `GEMM_ROWS`, `row_bytes` apart in `w`) · activation
/// row j (of `out.len()`, `stride_a` apart in `acts`), `n` elements each.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512vnni,avx2,fma,f16c")]
pub(crate) fn gemm<K: KPack>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    acts: &[u8],
    stride_a: usize,
    r0: usize,
    out: &mut [&mut [f32]],
) {
    let nb = n / 256;
    TILE.with_borrow_mut(|tile| {
        pack_tile::<K>(w, row_bytes, nb, tile);
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
    });
}
