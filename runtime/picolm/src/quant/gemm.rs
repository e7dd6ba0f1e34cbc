//! Weight tiles for the prefill GEMM kernels: [`GEMM_ROWS`] weight rows of a K-quant format
//! re-laid out so that one SIMD register holds the same four elements of every row of the tile.
//!
//! A register-blocked GEMM wants each vector lane to be one output (weight row × activation
//! row): then a `vpdpbusd` of a tile register with four activation bytes broadcast to every
//! lane adds 16 rows × 4 products at once, with no horizontal reduction, and the activation
//! bytes are loaded once for all rows. GGUF stores rows one after another, so the kernels pack
//! a tile (for every activation row of a prefill chunk, which amortises the packing over up to
//! 256 uses) into this layout first; nothing is kept between calls and the weights are never
//! copied for the whole model (llama.cpp's load-time repack doubles their memory).
//!
//! Per super-block of 256 elements the tile holds, each entry one 64-byte [`Z`] of 16 lanes
//! (lane r = row r of the tile):
//! * `Q`: 64 entries, entry t = elements 4t..4t+4 as unsigned bytes (Q4_K 0..16, Q5_K 0..32,
//!   Q6_K 0..64, without Q6_K's -32 offset);
//! * `SC`: `nsub` entries, the sub-block scales as i32 (8 sub-blocks of 32 for Q4_K/Q5_K, 16
//!   of 16 for Q6_K);
//! * `MP`: 8 entries, entry p = an i16 pair that multiplies the activation's bsums 2p and
//!   2p + 1 (sums of 16 quants): Q4_K/Q5_K the min (m_p, m_p) of sub-block p, Q6_K the
//!   offset (-32·sc_2p, -32·sc_2p+1);
//! * `D`, `DM`: the f32 scales d and dmin of every row (`DM` unused for Q6_K).
//!
//! A row's dot with a Q8_K activation block is then d·a_d·(Σ_s sc_s·Σ q·y) − dmin·a_d·Σ mp·bsums
//! (Q6_K: d·a_d·(Σ_s sc_s·Σ q·y + Σ mp·bsums)): the same integers as the per-row kernels, so
//! results differ from them only in the order of f32 operations.
#![cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]

use super::blocks::{BlockQ4K, BlockQ5K, BlockQ6K, f16_le, k4_scales_mins};

/// Weight rows per GEMM tile: one per lane of a 512-bit vector of i32.
pub const GEMM_ROWS: usize = 16;

/// One 64-byte, 64-byte-aligned entry of a packed tile: 16 lanes of 32 bits.
#[repr(C, align(64))]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Z(pub(crate) [u32; 16]);

/// A K-quant format's packed layout: the number of sub-blocks with their own scale, and the
/// decoder of one block.
pub(crate) trait KPack {
    type B: super::blocks::Block;
    /// Sub-blocks (with their own scale) per super-block.
    const NSUB: usize;
    /// Whether the format has mins (`DM` is used).
    const MIN: bool;
    /// Writes one row's block into lane `r` of the block's entries `z` (`stride(NSUB)` long).
    #[cfg(test)]
    fn pack(b: &Self::B, z: &mut [Z], r: usize) {
        Self::pack_quants(b, z, r);
        Self::pack_params(b, z, r);
    }
    /// The `Q` entries of [`KPack::pack`] (the AVX-512 packer gathers them instead).
    #[cfg_attr(not(test), allow(dead_code))]
    fn pack_quants(b: &Self::B, z: &mut [Z], r: usize);
    /// The `SC`, `MP`, `D` and `DM` entries of [`KPack::pack`].
    fn pack_params(b: &Self::B, z: &mut [Z], r: usize);
}

/// Entries per packed super-block.
pub(crate) const fn stride(nsub: usize) -> usize {
    64 + nsub + 8 + 2
}

/// Offset of the `SC` entries in a packed block.
pub(crate) const SC_OFF: usize = 64;
/// Offset of the `MP` entries.
pub(crate) const fn mp_off(nsub: usize) -> usize {
    64 + nsub
}
/// Offset of `D` (`DM` follows).
pub(crate) const fn d_off(nsub: usize) -> usize {
    64 + nsub + 8
}

fn word(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

const LOW4: u32 = 0x0F0F_0F0F;

/// Q4_K / Q5_K scales, mins and f16 scales.
fn pack_k4_params(scales: &[u8; 12], d: [u8; 2], dmin: [u8; 2], z: &mut [Z], r: usize) {
    let (sc, m) = k4_scales_mins(scales);
    for s in 0..8 {
        z[SC_OFF + s].0[r] = u32::from(sc[s]);
        z[mp_off(8) + s].0[r] = u32::from(m[s]) * 0x1_0001;
    }
    z[d_off(8)].0[r] = f16_le(d).to_bits();
    z[d_off(8) + 1].0[r] = f16_le(dmin).to_bits();
}

#[derive(Debug)]
pub(crate) struct Q4KPack;
impl KPack for Q4KPack {
    type B = BlockQ4K;
    const NSUB: usize = 8;
    const MIN: bool = true;
    #[inline]
    fn pack_quants(b: &BlockQ4K, z: &mut [Z], r: usize) {
        // Bytes 32c..32c + 32 hold sub-block 2c in their low nibbles, 2c + 1 in the high ones.
        for c in 0..4 {
            for t in 0..8 {
                let w = word(&b.qs, 32 * c + 4 * t);
                z[16 * c + t].0[r] = w & LOW4;
                z[16 * c + 8 + t].0[r] = (w >> 4) & LOW4;
            }
        }
    }
    #[inline]
    fn pack_params(b: &BlockQ4K, z: &mut [Z], r: usize) {
        pack_k4_params(&b.scales, b.d, b.dmin, z, r);
    }
}

#[derive(Debug)]
pub(crate) struct Q5KPack;
impl KPack for Q5KPack {
    type B = BlockQ5K;
    const NSUB: usize = 8;
    const MIN: bool = true;
    #[inline]
    fn pack_quants(b: &BlockQ5K, z: &mut [Z], r: usize) {
        // Bit 2c of qh[l] is the fifth bit of element 64c + l, bit 2c + 1 that of 64c + 32 + l.
        for c in 0..4 {
            for t in 0..8 {
                let w = word(&b.qs, 32 * c + 4 * t);
                let h = word(&b.qh, 4 * t);
                let h0 = ((h >> (2 * c)) & 0x0101_0101) << 4;
                let h1 = ((h >> (2 * c + 1)) & 0x0101_0101) << 4;
                z[16 * c + t].0[r] = (w & LOW4) | h0;
                z[16 * c + 8 + t].0[r] = ((w >> 4) & LOW4) | h1;
            }
        }
    }
    #[inline]
    fn pack_params(b: &BlockQ5K, z: &mut [Z], r: usize) {
        pack_k4_params(&b.scales, b.d, b.dmin, z, r);
    }
}

#[derive(Debug)]
pub(crate) struct Q6KPack;
impl KPack for Q6KPack {
    type B = BlockQ6K;
    const NSUB: usize = 16;
    const MIN: bool = false;
    #[inline]
    fn pack_quants(b: &BlockQ6K, z: &mut [Z], r: usize) {
        const LOW2: u32 = 0x0303_0303;
        for h in 0..2 {
            for t in 0..8 {
                let l0 = word(&b.ql, 64 * h + 4 * t);
                let l1 = word(&b.ql, 64 * h + 32 + 4 * t);
                let qh = word(&b.qh, 32 * h + 4 * t);
                let e = 32 * h + t;
                z[e].0[r] = (l0 & LOW4) | ((qh & LOW2) << 4);
                z[e + 8].0[r] = (l1 & LOW4) | (((qh >> 2) & LOW2) << 4);
                z[e + 16].0[r] = ((l0 >> 4) & LOW4) | (((qh >> 4) & LOW2) << 4);
                z[e + 24].0[r] = ((l1 >> 4) & LOW4) | (((qh >> 6) & LOW2) << 4);
            }
        }
    }
    #[inline]
    fn pack_params(b: &BlockQ6K, z: &mut [Z], r: usize) {
        for k in 0..16 {
            z[SC_OFF + k].0[r] = i32::from(b.scales[k]) as u32;
        }
        for p in 0..8 {
            let lo = (-32 * i32::from(b.scales[2 * p])) as u16;
            let hi = (-32 * i32::from(b.scales[2 * p + 1])) as u16;
            z[mp_off(16) + p].0[r] = u32::from(lo) | (u32::from(hi) << 16);
        }
        z[d_off(16)].0[r] = f16_le(b.d).to_bits();
        z[d_off(16) + 1].0[r] = 0;
    }
}

/// Packs `GEMM_ROWS` rows of `nb` blocks (row `r` at `w[r * row_bytes..]`) into `dst`, one
/// row at a time: the reference the gathering AVX-512 packer is tested against.
///
/// # Panics
/// If a row lies past the end of `w`.
#[cfg(test)]
pub(crate) fn pack_tile<K: KPack>(w: &[u8], row_bytes: usize, nb: usize, dst: &mut Vec<Z>) {
    let st = stride(K::NSUB);
    let len = nb * st;
    if dst.len() < len {
        dst.resize(len, Z::default());
    }
    let rows: [&[K::B]; GEMM_ROWS] = std::array::from_fn(|r| {
        super::blocks::as_blocks::<K::B>(&w[r.saturating_mul(row_bytes)..], nb)
    });
    // Block by block, so that the entries being filled stay in L1 for all the rows.
    for (b, z) in dst[..len].chunks_exact_mut(st).enumerate() {
        for (r, row) in rows.iter().enumerate() {
            K::pack(&row[b], z, r);
        }
    }
}
