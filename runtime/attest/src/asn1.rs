//! Minimal strict DER: a bounds-checked TLV reader for the small extension values we interpret
//! (AMD SPL integers, Intel SGX extension sequences, our RA-TLS extension) and a writer used to
//! build the simulated AMD-style certificates. Definite lengths only, at most 4 length bytes.

use crate::error::{Error, Result};

pub(crate) const TAG_BOOLEAN: u8 = 0x01;
pub(crate) const TAG_INTEGER: u8 = 0x02;
pub(crate) const TAG_BIT_STRING: u8 = 0x03;
pub(crate) const TAG_OCTET_STRING: u8 = 0x04;
pub(crate) const TAG_NULL: u8 = 0x05;
pub(crate) const TAG_OID: u8 = 0x06;
pub(crate) const TAG_UTF8: u8 = 0x0C;
pub(crate) const TAG_IA5: u8 = 0x16;
pub(crate) const TAG_GENERALIZED_TIME: u8 = 0x18;
pub(crate) const TAG_SEQUENCE: u8 = 0x30;
pub(crate) const TAG_SET: u8 = 0x31;

/// One TLV and what follows it.
pub(crate) fn read_tlv<'a>(what: &'static str, buf: &'a [u8]) -> Result<(u8, &'a [u8], &'a [u8])> {
    let tag = *buf
        .first()
        .ok_or_else(|| Error::malformed(what, 0, "empty DER value"))?;
    if tag & 0x1F == 0x1F {
        return Err(Error::malformed(
            what,
            0,
            "multi-byte DER tags are not accepted",
        ));
    }
    let l0 = *buf
        .get(1)
        .ok_or_else(|| Error::malformed(what, 1, "DER length missing"))?;
    let (len, hdr) = if l0 < 0x80 {
        (l0 as usize, 2)
    } else {
        let n = (l0 & 0x7F) as usize;
        if n == 0 || n > 4 {
            return Err(Error::malformed(
                what,
                1,
                format!("unsupported DER length form {l0:#04x}"),
            ));
        }
        let bytes = buf
            .get(2..2 + n)
            .ok_or_else(|| Error::malformed(what, 2, "DER length truncated"))?;
        if bytes[0] == 0 {
            return Err(Error::malformed(what, 2, "non-minimal DER length"));
        }
        let mut len = 0usize;
        for b in bytes {
            len = (len << 8) | *b as usize;
        }
        if len < 0x80 {
            return Err(Error::malformed(what, 2, "non-minimal DER length"));
        }
        (len, 2 + n)
    };
    let end = hdr
        .checked_add(len)
        .ok_or_else(|| Error::malformed(what, 1, "DER length overflow"))?;
    let content = buf.get(hdr..end).ok_or_else(|| {
        Error::malformed(
            what,
            hdr,
            format!("DER value needs {len} bytes, {} present", buf.len() - hdr),
        )
    })?;
    Ok((tag, content, &buf[end..]))
}

/// The whole of `buf` must be exactly one TLV with `tag`; returns its content.
pub(crate) fn expect_single<'a>(what: &'static str, tag: u8, buf: &'a [u8]) -> Result<&'a [u8]> {
    let (t, content, rest) = read_tlv(what, buf)?;
    if t != tag {
        return Err(Error::malformed(
            what,
            0,
            format!("expected DER tag {tag:#04x}, found {t:#04x}"),
        ));
    }
    if !rest.is_empty() {
        return Err(Error::malformed(
            what,
            buf.len() - rest.len(),
            format!("{} trailing bytes after DER value", rest.len()),
        ));
    }
    Ok(content)
}

/// A non-negative DER INTEGER content that fits in a u32.
pub(crate) fn uint_content(what: &'static str, content: &[u8]) -> Result<u32> {
    if content.is_empty() {
        return Err(Error::malformed(what, 0, "empty INTEGER"));
    }
    if content[0] & 0x80 != 0 {
        return Err(Error::malformed(what, 0, "negative INTEGER"));
    }
    if content.len() > 1 && content[0] == 0 && content[1] & 0x80 == 0 {
        return Err(Error::malformed(what, 0, "non-minimal INTEGER"));
    }
    let digits = if content[0] == 0 && content.len() > 1 {
        &content[1..]
    } else {
        content
    };
    if digits.len() > 4 {
        return Err(Error::malformed(what, 0, "INTEGER larger than 32 bits"));
    }
    Ok(digits.iter().fold(0u32, |a, b| (a << 8) | *b as u32))
}

/// Decode an OID body into its dotted form.
pub(crate) fn oid_to_string(what: &'static str, content: &[u8]) -> Result<String> {
    if content.is_empty() || content.len() > 64 {
        return Err(Error::malformed(what, 0, "OID length out of range"));
    }
    let mut arcs: Vec<u64> = Vec::new();
    let mut v: u64 = 0;
    for (i, b) in content.iter().enumerate() {
        if v == 0 && *b == 0x80 {
            return Err(Error::malformed(what, i, "non-minimal OID arc"));
        }
        if v > (u64::MAX >> 7) {
            return Err(Error::malformed(what, i, "OID arc too large"));
        }
        v = (v << 7) | (*b & 0x7F) as u64;
        if b & 0x80 == 0 {
            if arcs.is_empty() {
                let first = (v / 40).min(2);
                arcs.push(first);
                arcs.push(v - first * 40);
            } else {
                arcs.push(v);
            }
            v = 0;
        } else if i == content.len() - 1 {
            return Err(Error::malformed(what, i, "OID ends inside an arc"));
        }
    }
    Ok(arcs
        .iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join("."))
}

// ---------------------------------------------------------------- writer

pub(crate) fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    out.push(tag);
    let n = content.len();
    if n < 0x80 {
        out.push(n as u8);
    } else {
        let bytes = (n as u32).to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (4 - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
    out.extend_from_slice(content);
    out
}

pub(crate) fn seq(parts: &[&[u8]]) -> Vec<u8> {
    tlv(TAG_SEQUENCE, &parts.concat())
}

pub(crate) fn oid(dotted: &str) -> Vec<u8> {
    let arcs: Vec<u64> = dotted.split('.').filter_map(|a| a.parse().ok()).collect();
    let mut body = Vec::new();
    let mut push = |mut v: u64| {
        let mut tmp = vec![(v & 0x7F) as u8];
        v >>= 7;
        while v > 0 {
            tmp.push(0x80 | (v & 0x7F) as u8);
            v >>= 7;
        }
        tmp.reverse();
        body.extend_from_slice(&tmp);
    };
    if arcs.len() >= 2 {
        push(arcs[0] * 40 + arcs[1]);
        for a in &arcs[2..] {
            push(*a);
        }
    }
    tlv(TAG_OID, &body)
}

/// Unsigned big-endian integer bytes → DER INTEGER.
pub(crate) fn uint(be: &[u8]) -> Vec<u8> {
    let skip = be.iter().take_while(|b| **b == 0).count();
    let digits = &be[skip.min(be.len().saturating_sub(1))..];
    let mut c = Vec::with_capacity(digits.len() + 1);
    if digits.first().is_some_and(|b| b & 0x80 != 0) {
        c.push(0);
    }
    c.extend_from_slice(digits);
    if c.is_empty() {
        c.push(0);
    }
    tlv(TAG_INTEGER, &c)
}
