//! A bounds-checked cursor over untrusted bytes. Every read names the structure and field, so a
//! truncated or malformed input produces an error that says where, never a panic.

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    what: &'static str,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(what: &'static str, buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0, what }
    }
    pub(crate) fn pos(&self) -> usize {
        self.pos
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    pub(crate) fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Error::Truncated {
            what: self.what,
            field,
            start: self.pos,
            end: usize::MAX,
            len: self.buf.len(),
        })?;
        let s = self.buf.get(self.pos..end).ok_or(Error::Truncated {
            what: self.what,
            field,
            start: self.pos,
            end,
            len: self.buf.len(),
        })?;
        self.pos = end;
        Ok(s)
    }
    pub(crate) fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N]> {
        let s = self.take(field, N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8> {
        Ok(self.array::<1>(field)?[0])
    }
    pub(crate) fn u16_le(&mut self, field: &'static str) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u32_le(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u64_le(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }
    pub(crate) fn u16_be(&mut self, field: &'static str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn u32_be(&mut self, field: &'static str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(field)?))
    }
    pub(crate) fn u64_be(&mut self, field: &'static str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(field)?))
    }
}

/// Read a fixed-size array at `offset` of `buf`, naming the field on error.
pub(crate) fn at<const N: usize>(
    what: &'static str,
    field: &'static str,
    buf: &[u8],
    offset: usize,
) -> Result<[u8; N]> {
    let end = offset + N;
    let s = buf.get(offset..end).ok_or(Error::Truncated {
        what,
        field,
        start: offset,
        end,
        len: buf.len(),
    })?;
    let mut a = [0u8; N];
    a.copy_from_slice(s);
    Ok(a)
}

/// Error unless `buf[range]` is all zero.
pub(crate) fn require_zero(
    what: &'static str,
    buf: &[u8],
    start: usize,
    end: usize,
    field: &str,
) -> Result<()> {
    let s = buf.get(start..end).ok_or(Error::Truncated {
        what,
        field: "reserved",
        start,
        end,
        len: buf.len(),
    })?;
    if let Some(i) = s.iter().position(|b| *b != 0) {
        return Err(Error::malformed(
            what,
            start + i,
            format!("{field} must be zero, found {:#04x}", s[i]),
        ));
    }
    Ok(())
}
