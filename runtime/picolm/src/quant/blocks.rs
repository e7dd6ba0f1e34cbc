//! Block layouts of the ggml formats picolm computes with, byte for byte as in llama.cpp's
//! `ggml-common.h`.
//!
//! Every field is a byte array (multi-byte scalars are stored little-endian, as in GGUF), so
//! every block has alignment 1 and no padding, and every bit pattern is a valid value. That is
//! what lets [`as_blocks`] view an arbitrary (unaligned, mmapped) byte slice as a slice of
//! blocks without copying.
#![allow(unsafe_code)]

use half::{bf16, f16};
use std::mem::{align_of, size_of};

/// Elements per K-quant super-block.
pub(crate) const QK_K: usize = 256;
/// Elements per block of the legacy formats (Q4_0 … Q8_1).
pub(crate) const QK: usize = 32;

/// A block type that may be viewed in place over raw bytes.
///
/// # Safety
/// Implementors must be `#[repr(C)]`, have alignment 1 and no padding, and consist only of
/// fields for which every bit pattern is valid (`u8`/`i8` arrays).
pub(crate) unsafe trait Block: Sized {}

/// Reads a little-endian IEEE half as f32 (exact: every f16 is representable in f32).
#[inline(always)]
pub(crate) fn f16_le(b: [u8; 2]) -> f32 {
    f16::from_le_bytes(b).to_f32()
}

#[inline(always)]
pub(crate) fn bf16_le(b: [u8; 2]) -> f32 {
    bf16::from_le_bytes(b).to_f32()
}

macro_rules! block {
    ($(#[$m:meta])* $name:ident, $bytes:expr, { $($field:ident : $ty:ty),* $(,)? }) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug)]
        pub(crate) struct $name { $(pub(crate) $field: $ty),* }
        // SAFETY: repr(C) over u8/i8 arrays only; the assertions below pin size and alignment.
        unsafe impl Block for $name {}
        const _: () = assert!(size_of::<$name>() == $bytes && align_of::<$name>() == 1);
    };
}

block!(
    /// `block_q4_0`: x = d * (q - 8); low nibbles hold elements 0..16, high nibbles 16..32.
    BlockQ4_0, 18, { d: [u8; 2], qs: [u8; 16] }
);
block!(
    /// `block_q4_1`: x = d * q + m.
    BlockQ4_1, 20, { d: [u8; 2], m: [u8; 2], qs: [u8; 16] }
);
block!(
    /// `block_q5_0`: x = d * (q - 16); bit j of `qh` (a little-endian u32) is bit 4 of element j.
    BlockQ5_0, 22, { d: [u8; 2], qh: [u8; 4], qs: [u8; 16] }
);
block!(
    /// `block_q5_1`: x = d * q + m.
    BlockQ5_1, 24, { d: [u8; 2], m: [u8; 2], qh: [u8; 4], qs: [u8; 16] }
);
block!(
    /// `block_q8_0`: x = d * q.
    BlockQ8_0, 34, { d: [u8; 2], qs: [i8; 32] }
);
block!(
    /// `block_q8_1`: x = d * q; `s` = d * Σq, so that Q4_1/Q5_1 mins cost one multiply a block.
    BlockQ8_1, 36, { d: [u8; 2], s: [u8; 2], qs: [i8; 32] }
);
block!(
    /// `block_q2_K`: 16 sub-blocks of 16, x = d * sc * q - dmin * m (4-bit sc and m).
    BlockQ2K, 84, { scales: [u8; 16], qs: [u8; 64], d: [u8; 2], dmin: [u8; 2] }
);
block!(
    /// `block_q3_K`: 16 sub-blocks of 16, x = d * (sc - 32) * (q - 4·!hbit), 6-bit scales.
    BlockQ3K, 110, { hmask: [u8; 32], qs: [u8; 64], scales: [u8; 12], d: [u8; 2] }
);
block!(
    /// `block_q4_K`: 8 sub-blocks of 32, x = d * sc * q - dmin * m, 6-bit sc/m packed in 12 bytes.
    BlockQ4K, 144, { d: [u8; 2], dmin: [u8; 2], scales: [u8; 12], qs: [u8; 128] }
);
block!(
    /// `block_q5_K`: as Q4_K plus a fifth bit per element in `qh`.
    BlockQ5K, 176, { d: [u8; 2], dmin: [u8; 2], scales: [u8; 12], qh: [u8; 32], qs: [u8; 128] }
);
block!(
    /// `block_q6_K`: 16 sub-blocks of 16, x = d * sc * (q - 32), 8-bit signed scales.
    BlockQ6K, 210, { ql: [u8; 128], qh: [u8; 64], scales: [i8; 16], d: [u8; 2] }
);
block!(
    /// `block_q8_K`: activations for K-quant dots; `d` is an f32 and `bsums` (i16) hold the sums
    /// of each 16 quants, so the kernels can apply mins and offsets per sub-block cheaply.
    BlockQ8K, 292, { d: [u8; 4], qs: [i8; 256], bsums: [u8; 32] }
);

impl BlockQ8K {
    #[inline(always)]
    pub(crate) fn d(&self) -> f32 {
        f32::from_le_bytes(self.d)
    }

    #[inline(always)]
    pub(crate) fn bsum(&self, j: usize) -> i32 {
        i32::from(i16::from_le_bytes([
            self.bsums[2 * j],
            self.bsums[2 * j + 1],
        ]))
    }
}

/// Unpacks the eight 6-bit (scale, min) pairs of Q4_K/Q5_K (`get_scale_min_k4` in llama.cpp):
/// bytes 0..4 hold scales 0..4 and the top bits of scales 4..8, bytes 4..8 the same for mins,
/// bytes 8..12 the low nibbles of scales and mins 4..8.
#[inline(always)]
pub(crate) fn k4_scales_mins(s: &[u8; 12]) -> ([u8; 8], [u8; 8]) {
    // Four bytes at a time, as llama.cpp does with its `utmp` words: 12 ALU ops per block
    // instead of 40 byte operations.
    const LOW6: u32 = 0x3f3f_3f3f;
    const LOW4: u32 = 0x0f0f_0f0f;
    const LOW2: u32 = 0x0303_0303;
    let w = |i: usize| u32::from_le_bytes([s[i], s[i + 1], s[i + 2], s[i + 3]]);
    let (w0, w1, w2) = (w(0), w(4), w(8));
    let sc_lo = w0 & LOW6;
    let sc_hi = (w2 & LOW4) | (((w0 >> 6) & LOW2) << 4);
    let m_lo = w1 & LOW6;
    let m_hi = ((w2 >> 4) & LOW4) | (((w1 >> 6) & LOW2) << 4);
    let join = |lo: u32, hi: u32| (u64::from(lo) | (u64::from(hi) << 32)).to_le_bytes();
    (join(sc_lo, sc_hi), join(m_lo, m_hi))
}

/// Views the first `nb` blocks of `bytes` in place.
///
/// # Panics
/// If `bytes` is shorter than `nb` blocks (an overflowing size counts as longer than any slice): callers validate lengths first (public entry points
/// return errors), so this is a bounds check against internal bugs, never an over-read.
#[inline(always)]
pub(crate) fn as_blocks<B: Block>(bytes: &[u8], nb: usize) -> &[B] {
    let len = nb.saturating_mul(size_of::<B>());
    let bytes = &bytes[..len];
    // SAFETY: `bytes` covers exactly `nb` blocks; `B: Block` guarantees alignment 1, no padding
    // and that every bit pattern is valid, so any byte slice of that length is a valid `[B]`.
    unsafe { std::slice::from_raw_parts(bytes.as_ptr().cast::<B>(), nb) }
}

/// Mutable counterpart of [`as_blocks`].
#[inline(always)]
pub(crate) fn as_blocks_mut<B: Block>(bytes: &mut [u8], nb: usize) -> &mut [B] {
    let len = nb.saturating_mul(size_of::<B>());
    let bytes = &mut bytes[..len];
    // SAFETY: as in `as_blocks`; the exclusive borrow of `bytes` is moved into the result.
    unsafe { std::slice::from_raw_parts_mut(bytes.as_mut_ptr().cast::<B>(), nb) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn k4_scales_match_get_scale_min_k4() {
        // get_scale_min_k4 written out as in ggml-quants.c, to check the unrolled version.
        fn reference(j: usize, q: &[u8; 12]) -> (u8, u8) {
            if j < 4 {
                (q[j] & 63, q[j + 4] & 63)
            } else {
                (
                    (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
                    (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
                )
            }
        }
        let mut s = [0u8; 12];
        for seed in 0..64u32 {
            for (i, b) in s.iter_mut().enumerate() {
                *b = (seed.wrapping_mul(2_654_435_761).rotate_left(i as u32 * 5) >> 7) as u8;
            }
            let (sc, m) = k4_scales_mins(&s);
            for j in 0..8 {
                assert_eq!((sc[j], m[j]), reference(j, &s), "j={j} scales={s:?}");
            }
        }
    }

    #[test]
    fn views_unaligned_bytes() {
        let buf: Vec<u8> = (0..=(2 * 34) as u8).collect();
        // Offset by one byte so the view starts at an odd address.
        let blocks = as_blocks::<BlockQ8_0>(&buf[1..], 2);
        assert_eq!(blocks[1].d, [35, 36]);
        assert_eq!(blocks[1].qs[31], 68);
    }
}
