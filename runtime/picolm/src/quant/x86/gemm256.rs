//! AVX2 GEMM micro-kernel for packed K-quant tiles (see `quant::gemm`): the 16 rows of a tile
//! as two halves of 8 i32 lanes, × `NA` activation rows per call.
//!
//! Without VNNI, four elements cost a `pmaddubsw` (u8 quants × i8 activations → i16 pairs);
//! the i16 results of up to `I16_QUADS` quads are added (exact: their bound stays under 2^15)
//! and one `pmaddwd` with the sub-block scale as an i16 pair widens and scales them at once.
//! Mins/offsets are `pmaddwd`s of the i16 pairs with the bsums. The integers are the
//! per-row kernels', so results differ from them only in the order of f32 operations.
//!
//! Every function here is compiled for `avx2,fma,f16c` and must only be called once those
//! features have been detected.
#![allow(unsafe_code)]

use super::super::blocks::{BlockQ8K, as_blocks};
use super::super::gemm::{GEMM_ROWS, KPack, SC_OFF, Z, d_off, mp_off, pack_tile, stride};
use std::arch::x86_64::*;
use std::cell::RefCell;

/// Activation rows per micro-kernel call (16 ymm registers: three accumulators each).
const NA: usize = 4;

/// Half `h` (rows 8h..8h + 8) of an entry.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn ld(z: &Z, h: usize) -> __m256i {
    let s = &z.0[8 * h..8 * h + 8];
    // SAFETY: `s` holds 8 u32 (32 bytes); `loadu` has no alignment requirement.
    unsafe { _mm256_loadu_si256(s.as_ptr().cast()) }
}

/// Four signed bytes broadcast to every i32 lane.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast_i8(b: &[i8], i: usize) -> __m256i {
    let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
    _mm256_set1_epi32(i32::from_le_bytes(w.map(|v| v as u8)))
}

#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn bcast(b: &[u8], i: usize) -> __m256i {
    _mm256_set1_epi32(i32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]))
}

/// `out[j][r]` = row 8h + r of the packed tile · `acts[j]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn kernel<K: KPack, const N: usize>(
    tile: &[Z],
    nb: usize,
    h: usize,
    acts: [&[BlockQ8K]; N],
) -> [__m256; N] {
    let st = stride(K::NSUB);
    let qps = 64 / K::NSUB;
    let mut acc = [_mm256_setzero_ps(); N];
    for (b, z) in tile[..nb * st].chunks_exact(st).enumerate() {
        let a: [&BlockQ8K; N] = std::array::from_fn(|j| &acts[j][b]);
        let mut iblk = [_mm256_setzero_si256(); N];
        for s in 0..K::NSUB {
            // The scale as an i16 pair (sc, sc) per lane; |sc| < 2^7.
            let sc = ld(&z[SC_OFF + s], h);
            let scp = _mm256_or_si256(
                _mm256_and_si256(sc, _mm256_set1_epi32(0xFFFF)),
                _mm256_slli_epi32::<16>(sc),
            );
            let mut t = s * qps;
            while t < (s + 1) * qps {
                let mut p16 = [_mm256_setzero_si256(); N];
                let group = t..t + K::I16_QUADS.min(qps);
                for (q, zq) in group.clone().zip(&z[group]) {
                    let w = ld(zq, h);
                    for j in 0..N {
                        let p = _mm256_maddubs_epi16(w, bcast_i8(&a[j].qs, 4 * q));
                        p16[j] = _mm256_add_epi16(p16[j], p);
                    }
                }
                for j in 0..N {
                    iblk[j] = _mm256_add_epi32(iblk[j], _mm256_madd_epi16(p16[j], scp));
                }
                t += K::I16_QUADS.min(qps);
            }
        }
        let mut imin = [_mm256_setzero_si256(); N];
        for p in 0..8 {
            let m = ld(&z[mp_off(K::NSUB) + p], h);
            for j in 0..N {
                let v = _mm256_madd_epi16(m, bcast(&a[j].bsums, 4 * p));
                imin[j] = _mm256_add_epi32(imin[j], v);
            }
        }
        let d = _mm256_castsi256_ps(ld(&z[d_off(K::NSUB)], h));
        if K::MIN {
            let dm = _mm256_castsi256_ps(ld(&z[d_off(K::NSUB) + 1], h));
            for j in 0..N {
                let ad = _mm256_set1_ps(a[j].d());
                acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(iblk[j]), _mm256_mul_ps(d, ad), acc[j]);
                acc[j] =
                    _mm256_fnmadd_ps(_mm256_cvtepi32_ps(imin[j]), _mm256_mul_ps(dm, ad), acc[j]);
            }
        } else {
            for j in 0..N {
                let ad = _mm256_set1_ps(a[j].d());
                let i = _mm256_add_epi32(iblk[j], imin[j]);
                acc[j] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(i), _mm256_mul_ps(d, ad), acc[j]);
            }
        }
    }
    acc
}

/// Runs the kernel for activation rows `j0..j0 + N` and stores each one's 16 results at
/// `out[j][r0..r0 + 16]`.
#[allow(clippy::too_many_arguments)]
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
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
        as_blocks::<BlockQ8K>(&acts[(j0 + j).saturating_mul(stride_a)..], nb)
    });
    for h in 0..2 {
        let acc = kernel::<K, N>(tile, nb, h, ys);
        for (o, a) in out[j0..j0 + N].iter_mut().zip(acc) {
            let o = &mut o[r0 + 8 * h..r0 + 8 * h + 8];
            // SAFETY: `o` holds exactly 8 f32; `storeu` has no alignment requirement.
            unsafe { _mm256_storeu_ps(o.as_mut_ptr(), a) };
        }
    }
}

thread_local! {
    static TILE: RefCell<Vec<Z>> = const { RefCell::new(Vec::new()) };
}

/// `out[j][r]` = weight row r (of `rows`, a multiple of `GEMM_ROWS`, `row_bytes` apart in `w`)
/// · activation row j (of `out.len()`, `stride_a` apart in `acts`), `n` elements each.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma,f16c")]
pub(crate) fn gemm<K: KPack>(
    n: usize,
    w: &[u8],
    row_bytes: usize,
    acts: &[u8],
    stride_a: usize,
    rows: usize,
    out: &mut [&mut [f32]],
) {
    debug_assert_eq!(GEMM_ROWS, 16);
    let nb = n / 256;
    TILE.with_borrow_mut(|tile| {
        for r0 in (0..rows).step_by(GEMM_ROWS) {
            pack_tile::<K>(&w[r0 * row_bytes..], row_bytes, nb, tile);
            let tile = &tile[..];
            let mut j = 0;
            while j < out.len() {
                let m = (out.len() - j).min(NA);
                match m {
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
