//! Zero-copy GGUF v2/v3 reader.
//!
//! The header, metadata and tensor infos are parsed from a byte slice (usually an mmap of the
//! file) by a bounds-checked cursor. Every count, length, offset and shape coming from the file
//! is validated before it is used, and no allocation is ever sized by a number from the file
//! without first checking that the file actually holds that many bytes. Tensor data is never
//! copied from a resident source: [`GgufFile::tensor_data`] returns a slice of the map. The
//! header can also be parsed from a prefix of a streaming source ([`GgufHeader::parse_prefix`]).
//!
//! Layout (all little-endian): magic `GGUF`, u32 version, u64 tensor count, u64 metadata count,
//! metadata key/value pairs, tensor infos, padding to `general.alignment` (default 32), data.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::quant::GgmlType;
use crate::source::{ByteSource, MmapSource, slice_range};

const MAGIC: &[u8; 4] = b"GGUF";
const DEFAULT_ALIGNMENT: u64 = 32;
/// ggml tensors have at most four dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays of arrays are legal but never used by real models; bound the recursion.
const MAX_ARRAY_DEPTH: u32 = 2;

/// A metadata value. Arrays hold values of one type.
#[derive(Clone, PartialEq)]
pub enum Value {
    U8(u8),
    I8(i8),
    U16(u16),
    I16(i16),
    U32(u32),
    I32(i32),
    U64(u64),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    Array(Vec<Value>),
}

impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::U8(v) => write!(f, "{v}u8"),
            Value::I8(v) => write!(f, "{v}i8"),
            Value::U16(v) => write!(f, "{v}u16"),
            Value::I16(v) => write!(f, "{v}i16"),
            Value::U32(v) => write!(f, "{v}u32"),
            Value::I32(v) => write!(f, "{v}i32"),
            Value::U64(v) => write!(f, "{v}u64"),
            Value::I64(v) => write!(f, "{v}i64"),
            Value::F32(v) => write!(f, "{v}f32"),
            Value::F64(v) => write!(f, "{v}f64"),
            Value::Bool(v) => write!(f, "{v}"),
            Value::Str(s) if s.len() > 64 => write!(
                f,
                "{:?}… ({} bytes)",
                &s[..s.floor_char_boundary(64)],
                s.len()
            ),
            Value::Str(s) => write!(f, "{s:?}"),
            Value::Array(a) if a.len() > 8 => write!(f, "[{:?}, … {} items]", &a[0], a.len()),
            Value::Array(a) => f.debug_list().entries(a).finish(),
        }
    }
}

impl Value {
    /// The GGUF type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::U8(_) => "u8",
            Value::I8(_) => "i8",
            Value::U16(_) => "u16",
            Value::I16(_) => "i16",
            Value::U32(_) => "u32",
            Value::I32(_) => "i32",
            Value::U64(_) => "u64",
            Value::I64(_) => "i64",
            Value::F32(_) => "f32",
            Value::F64(_) => "f64",
            Value::Bool(_) => "bool",
            Value::Str(_) => "string",
            Value::Array(_) => "array",
        }
    }

    /// Any integer value that fits in an `i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::I8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::I16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::I32(v) => Some(v.into()),
            Value::U64(v) => i64::try_from(v).ok(),
            Value::I64(v) => Some(v),
            _ => None,
        }
    }

    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// The metadata key/value pairs, in file order.
#[derive(Debug, Default, Clone)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).map(|&i| &self.entries[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// An integer key, converted to `T` (any GGUF integer type is accepted if the value fits).
    pub fn get_int<T: TryFrom<i64>>(&self, key: &str) -> Result<Option<T>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let i = v.as_i64().ok_or_else(|| {
            Error::metadata(key, format!("expected an integer, found {}", v.type_name()))
        })?;
        T::try_from(i)
            .map(Some)
            .map_err(|_| Error::metadata(key, format!("value {i} is out of range")))
    }

    /// A required integer key.
    pub fn require_int<T: TryFrom<i64>>(&self, key: &str) -> Result<T> {
        self.get_int(key)?
            .ok_or_else(|| Error::metadata(key, "missing"))
    }

    pub fn get_f32(&self, key: &str) -> Result<Option<f32>> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        match v.as_f64() {
            Some(f) if f.is_finite() => Ok(Some(f as f32)),
            Some(f) => Err(Error::metadata(key, format!("value {f} is not finite"))),
            None => Err(Error::metadata(
                key,
                format!("expected a number, found {}", v.type_name()),
            )),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(Error::metadata(
                key,
                format!("expected a bool, found {}", v.type_name()),
            )),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Str(s)) => Ok(Some(s)),
            Some(v) => Err(Error::metadata(
                key,
                format!("expected a string, found {}", v.type_name()),
            )),
        }
    }

    pub fn get_array(&self, key: &str) -> Result<Option<&[Value]>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(Error::metadata(
                key,
                format!("expected an array, found {}", v.type_name()),
            )),
        }
    }

    /// An array of strings.
    pub fn get_str_array(&self, key: &str) -> Result<Option<Vec<&str>>> {
        let Some(a) = self.get_array(key)? else {
            return Ok(None);
        };
        a.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_str().ok_or_else(|| {
                    Error::metadata(
                        key,
                        format!("element {i}: expected a string, found {}", v.type_name()),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// An array of numbers, as `f32`.
    pub fn get_f32_array(&self, key: &str) -> Result<Option<Vec<f32>>> {
        let Some(a) = self.get_array(key)? else {
            return Ok(None);
        };
        a.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_f64().map(|f| f as f32).ok_or_else(|| {
                    Error::metadata(
                        key,
                        format!("element {i}: expected a number, found {}", v.type_name()),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    /// An array of integers, as `i64`.
    pub fn get_int_array(&self, key: &str) -> Result<Option<Vec<i64>>> {
        let Some(a) = self.get_array(key)? else {
            return Ok(None);
        };
        a.iter()
            .enumerate()
            .map(|(i, v)| {
                v.as_i64().ok_or_else(|| {
                    Error::metadata(
                        key,
                        format!("element {i}: expected an integer, found {}", v.type_name()),
                    )
                })
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

/// Where a tensor lives and what it is. `shape[0]` is the innermost (row) dimension, as in ggml.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub shape: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub size: u64,
}

impl TensorInfo {
    /// Number of elements.
    pub fn n_elements(&self) -> u64 {
        self.shape.iter().product()
    }
    /// Elements per row (`shape[0]`).
    pub fn row_len(&self) -> usize {
        self.shape.first().copied().unwrap_or(1) as usize
    }
    /// Number of rows (product of the outer dimensions).
    pub fn n_rows(&self) -> usize {
        self.shape.iter().skip(1).product::<u64>() as usize
    }
}

/// The parsed header of a GGUF file: everything but the tensor data.
#[derive(Debug, Clone)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: Metadata,
    pub tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

impl GgufHeader {
    /// Parse and validate the header from the complete file contents. Tensor data ranges are
    /// checked against `bytes.len()`.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        Self::parse_from(&mut Cursor::new(bytes, bytes.len() as u64))
    }

    /// Parse from `prefix`, the first bytes of a file of `file_len` bytes (a streaming source
    /// reads the header without the tensor data). `Ok(None)`: the header runs past `prefix`;
    /// read a longer prefix and try again. Tensor data ranges are checked against `file_len`.
    pub fn parse_prefix(prefix: &[u8], file_len: u64) -> Result<Option<Self>> {
        let mut c = Cursor::new(prefix, file_len);
        match Self::parse_from(&mut c) {
            Ok(h) => Ok(Some(h)),
            Err(_) if c.short => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn parse_from(c: &mut Cursor<'_>) -> Result<Self> {
        let magic = c.take(4, "magic")?;
        if magic != MAGIC {
            return Err(Error::gguf(
                0,
                format!("bad magic {magic:02x?}, expected \"GGUF\""),
            ));
        }
        let version = c.u32("version")?;
        if !(2..=3).contains(&version) {
            return Err(Error::gguf(
                4,
                format!("unsupported GGUF version {version} (picolm reads 2 and 3)"),
            ));
        }
        let n_tensors = c.u64("tensor count")?;
        let n_kv = c.u64("metadata count")?;
        // Each metadata pair takes at least 8 (key length) + 4 (type) + 1 bytes, each tensor
        // info at least 8 + 4 + 8 + 4 + 8. Refuse counts the file cannot possibly hold before
        // reserving anything.
        c.check_count(n_kv, 13, "metadata count")?;
        let mut metadata = Metadata::default();
        for _ in 0..n_kv {
            let key_at = c.pos;
            let key = c.string("metadata key")?;
            let ty = c.u32("metadata value type")?;
            let value = c.value(ty, 0).map_err(|e| annotate(e, &key))?;
            if metadata.index.contains_key(&key) {
                return Err(Error::gguf(
                    key_at as u64,
                    format!("duplicate metadata key `{key}`"),
                ));
            }
            metadata.index.insert(key.clone(), metadata.entries.len());
            metadata.entries.push((key, value));
        }

        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(Value::U32(a)) if a.is_power_of_two() => u64::from(*a),
            Some(v) => {
                return Err(Error::metadata(
                    "general.alignment",
                    format!("expected a u32 power of two, found {v:?}"),
                ));
            }
        };

        c.check_count(n_tensors, 32, "tensor count")?;
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let at = c.pos as u64;
            let name = c.string("tensor name")?;
            let n_dims = c.u32("tensor dimension count")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(Error::gguf(
                    at,
                    format!("tensor `{name}`: {n_dims} dimensions (1..={MAX_DIMS} allowed)"),
                ));
            }
            let mut shape = Vec::with_capacity(n_dims as usize);
            for d in 0..n_dims {
                let dim = c.u64("tensor dimension")?;
                if dim == 0 || dim > i64::MAX as u64 {
                    return Err(Error::gguf(
                        at,
                        format!("tensor `{name}`: dimension {d} is {dim}"),
                    ));
                }
                shape.push(dim);
            }
            let type_id = c.u32("tensor type")?;
            let offset = c.u64("tensor offset")?;
            raw.push((at, name, shape, type_id, offset));
        }
        let data_offset = align_up(c.pos as u64, alignment)
            .ok_or_else(|| Error::gguf(c.pos as u64, "data offset overflows"))?;
        let file_len = c.file_len;
        if n_tensors > 0 && data_offset > file_len {
            return Err(Error::gguf(
                c.pos as u64,
                format!(
                    "data section starts at {data_offset}, past the end of the file ({file_len} bytes)"
                ),
            ));
        }

        let mut tensors = Vec::with_capacity(raw.len());
        let mut tensor_index = HashMap::with_capacity(raw.len());
        for (at, name, shape, type_id, rel) in raw {
            let fail = |what: String| Error::gguf(at, format!("tensor `{name}`: {what}"));
            let ty = GgmlType::from_u32(type_id)
                .ok_or_else(|| fail(format!("unknown tensor type id {type_id}")))?;
            let n_elem = shape
                .iter()
                .try_fold(1u64, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| fail(format!("element count of shape {shape:?} overflows")))?;
            let row = usize::try_from(shape[0]).map_err(|_| fail("row too long".into()))?;
            let row_bytes = ty.row_bytes(row).ok_or_else(|| {
                fail(format!(
                    "row length {} is not a multiple of the {} block size {}",
                    shape[0],
                    ty.name(),
                    ty.block_len()
                ))
            })?;
            let size = (row_bytes as u64)
                .checked_mul(n_elem / shape[0])
                .ok_or_else(|| fail("byte size overflows".into()))?;
            if rel % alignment != 0 {
                return Err(fail(format!(
                    "data offset {rel} is not aligned to {alignment}"
                )));
            }
            let offset = data_offset
                .checked_add(rel)
                .ok_or_else(|| fail(format!("data offset {rel} overflows")))?;
            let end = offset
                .checked_add(size)
                .ok_or_else(|| fail("data range overflows".into()))?;
            if end > file_len {
                return Err(fail(format!(
                    "data [{offset}, {end}) runs past the end of the file ({file_len} bytes); the file is truncated"
                )));
            }
            if tensor_index.insert(name.clone(), tensors.len()).is_some() {
                return Err(fail("duplicate tensor name".into()));
            }
            tensors.push(TensorInfo {
                name,
                shape,
                ty,
                offset,
                size,
            });
        }
        Ok(GgufHeader {
            version,
            metadata,
            tensors,
            tensor_index,
            alignment,
            data_offset,
        })
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
}

fn annotate(e: Error, key: &str) -> Error {
    match e {
        Error::Gguf { offset, what } => Error::Gguf {
            offset,
            what: format!("metadata `{key}`: {what}"),
        },
        other => other,
    }
}

fn align_up(x: u64, a: u64) -> Option<u64> {
    Some(x.checked_add(a - 1)? / a * a)
}

/// A bounds-checked little-endian reader over the first `buf.len()` bytes of a file of
/// `file_len` bytes (usually the whole file).
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
    file_len: u64,
    /// A read failed only because `buf` ends before the file does.
    short: bool,
}

impl<'a> Cursor<'a> {
    fn new(buf: &'a [u8], file_len: u64) -> Self {
        Cursor {
            buf,
            pos: 0,
            file_len: file_len.max(buf.len() as u64),
            short: false,
        }
    }

    /// Bytes left in the file (not only in `buf`): bounds counts and lengths.
    fn remaining(&self) -> usize {
        usize::try_from(self.file_len - self.pos as u64).unwrap_or(usize::MAX)
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.buf.len() - self.pos && n <= self.remaining() {
            self.short = true;
            return Err(Error::gguf(
                self.pos as u64,
                format!("{what} lies past the bytes read so far"),
            ));
        }
        if n > self.remaining() {
            return Err(Error::gguf(
                self.pos as u64,
                format!(
                    "truncated: {what} needs {n} bytes, {} left",
                    self.remaining()
                ),
            ));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let s = self.take(N, what)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// Refuse `count` items of at least `min_size` bytes each if they cannot fit.
    fn check_count(&self, count: u64, min_size: u64, what: &str) -> Result<()> {
        match count.checked_mul(min_size) {
            Some(need) if need <= self.remaining() as u64 => Ok(()),
            _ => Err(Error::gguf(
                self.pos as u64,
                format!(
                    "{what} {count} cannot fit in the {} bytes left",
                    self.remaining()
                ),
            )),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let at = self.pos as u64;
        let len = self.u64(what)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l <= self.remaining())
            .ok_or_else(|| {
                Error::gguf(
                    at,
                    format!(
                        "{what}: length {len} exceeds the {} bytes left",
                        self.remaining()
                    ),
                )
            })?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|e| {
            Error::gguf(
                at,
                format!(
                    "{what}: invalid UTF-8 at byte {}",
                    e.utf8_error().valid_up_to()
                ),
            )
        })
    }

    fn value(&mut self, ty: u32, depth: u32) -> Result<Value> {
        let at = self.pos as u64;
        Ok(match ty {
            0 => Value::U8(self.array::<1>("u8")?[0]),
            1 => Value::I8(self.array::<1>("i8")?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array("u16")?)),
            3 => Value::I16(i16::from_le_bytes(self.array("i16")?)),
            4 => Value::U32(self.u32("u32")?),
            5 => Value::I32(i32::from_le_bytes(self.array("i32")?)),
            6 => Value::F32(f32::from_le_bytes(self.array("f32")?)),
            7 => match self.array::<1>("bool")?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(Error::gguf(
                        at,
                        format!("bool value {b} is neither 0 nor 1"),
                    ));
                }
            },
            8 => Value::Str(self.string("string value")?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(Error::gguf(at, "arrays nested too deeply"));
                }
                let elem_ty = self.u32("array element type")?;
                let count = self.u64("array length")?;
                let min = match elem_ty {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8 | 10..=12 => 8,
                    9 => 12,
                    t => return Err(Error::gguf(at, format!("unknown array element type {t}"))),
                };
                self.check_count(count, min, "array length")?;
                let mut items = Vec::with_capacity(count as usize);
                for _ in 0..count {
                    items.push(self.value(elem_ty, depth + 1)?);
                }
                Value::Array(items)
            }
            10 => Value::U64(self.u64("u64")?),
            11 => Value::I64(i64::from_le_bytes(self.array("i64")?)),
            12 => Value::F64(f64::from_le_bytes(self.array("f64")?)),
            t => return Err(Error::gguf(at, format!("unknown value type {t}"))),
        })
    }
}

/// First header read from a streaming source; grown 4x until the header fits.
const HEADER_PREFIX: usize = 1 << 20;

/// A GGUF file: its parsed header and the [`ByteSource`] its bytes come from (usually a
/// read-only mmap, see [`GgufFile::open`]).
pub struct GgufFile {
    path: PathBuf,
    source: Box<dyn ByteSource>,
    header: GgufHeader,
}

impl fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("source", &self.source)
            .field("version", &self.header.version)
            .field("tensors", &self.header.tensors.len())
            .finish()
    }
}

/// A tensor's bytes: borrowed from a resident source, or read from a streaming one into a
/// buffer that is wiped when dropped.
#[derive(Debug)]
pub enum TensorBytes<'a> {
    Borrowed(&'a [u8]),
    Read(Zeroizing<Vec<u8>>),
}

impl std::ops::Deref for TensorBytes<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match self {
            TensorBytes::Borrowed(b) => b,
            TensorBytes::Read(v) => v,
        }
    }
}

impl GgufFile {
    /// Map a plaintext GGUF file read-only.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        Self::from_source(path, Box::new(MmapSource::open(path)?))
    }

    /// A GGUF file whose bytes come from `source`; `path` names it in errors. A streaming
    /// source is asked for the header only (a growing prefix), never for tensor data here.
    pub fn from_source(path: impl Into<PathBuf>, source: Box<dyn ByteSource>) -> Result<Self> {
        let path = path.into();
        let name = |e: Error| match e {
            Error::Gguf { offset, what } => Error::Gguf {
                offset,
                what: format!("{}: {what}", path.display()),
            },
            other => other,
        };
        let header = match source.resident() {
            Some(bytes) => GgufHeader::parse(bytes).map_err(name)?,
            None => {
                let len = source.len();
                let mut want = usize::try_from(len).map_or(HEADER_PREFIX, |l| l.min(HEADER_PREFIX));
                loop {
                    // The header holds the tokenizer and other plaintext metadata: wipe the copy.
                    let mut prefix = Zeroizing::new(vec![0u8; want]);
                    source.read_at(0, &mut prefix)?;
                    if let Some(h) = GgufHeader::parse_prefix(&prefix, len).map_err(name)? {
                        break h;
                    }
                    if want as u64 >= len {
                        return Err(name(Error::gguf(0, "header does not fit in the file")));
                    }
                    want = usize::try_from(len)
                        .map_or(want.saturating_mul(4), |l| l.min(want.saturating_mul(4)));
                }
            }
        };
        Ok(GgufFile {
            path,
            source,
            header,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn header(&self) -> &GgufHeader {
        &self.header
    }
    pub fn metadata(&self) -> &Metadata {
        &self.header.metadata
    }
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.header.tensors
    }
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.header.tensor(name)
    }
    /// File size in bytes.
    pub fn len(&self) -> u64 {
        self.source.len()
    }
    pub fn is_empty(&self) -> bool {
        self.source.is_empty()
    }
    pub fn source(&self) -> &dyn ByteSource {
        self.source.as_ref()
    }
    /// The whole file when its source is resident (mmap, memory); `None` when streaming.
    pub fn resident(&self) -> Option<&[u8]> {
        self.source.resident()
    }
    /// Bytes `[offset, offset + buf.len())`, from whatever the source is.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.source.read_at(offset, buf)
    }

    /// Residency hint after use: an mmap drops the pages (`madvise(MADV_DONTNEED)`); layer
    /// streaming calls this after each layer.
    pub fn release(&self, offset: usize, len: usize) {
        self.source.release(offset as u64, len as u64);
    }

    /// Residency hint before use: an mmap populates the pages (`MADV_POPULATE_READ`).
    pub fn prefetch(&self, offset: usize, len: usize) {
        self.source.prefetch(offset as u64, len as u64);
    }

    /// The tensor's bytes: borrowed from a resident source, read from a streaming one.
    /// Ranges were validated at parse time.
    pub fn tensor_data(&self, t: &TensorInfo) -> Result<TensorBytes<'_>> {
        let len = usize::try_from(t.size)
            .map_err(|_| Error::tensor(&t.name, "size does not fit in memory"))?;
        match self.source.resident() {
            Some(b) => slice_range(&self.path.display().to_string(), b, t.offset, len)
                .map(TensorBytes::Borrowed),
            None => {
                let mut v = Zeroizing::new(vec![0u8; len]);
                self.source.read_at(t.offset, &mut v)?;
                Ok(TensorBytes::Read(v))
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod test_writer {
    //! A minimal GGUF writer for tests: builds files byte by byte so adversarial variants are
    //! easy to express.

    use super::Value;

    #[derive(Default)]
    pub struct Writer {
        pub kv: Vec<(String, Value)>,
        /// name, shape, type id, data
        pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
        pub alignment: u64,
    }

    fn put_str(out: &mut Vec<u8>, s: &str) {
        out.extend((s.len() as u64).to_le_bytes());
        out.extend(s.as_bytes());
    }

    fn type_id(v: &Value) -> u32 {
        match v {
            Value::U8(_) => 0,
            Value::I8(_) => 1,
            Value::U16(_) => 2,
            Value::I16(_) => 3,
            Value::U32(_) => 4,
            Value::I32(_) => 5,
            Value::F32(_) => 6,
            Value::Bool(_) => 7,
            Value::Str(_) => 8,
            Value::Array(_) => 9,
            Value::U64(_) => 10,
            Value::I64(_) => 11,
            Value::F64(_) => 12,
        }
    }

    fn put_value(out: &mut Vec<u8>, v: &Value) {
        match v {
            Value::U8(x) => out.push(*x),
            Value::I8(x) => out.push(*x as u8),
            Value::U16(x) => out.extend(x.to_le_bytes()),
            Value::I16(x) => out.extend(x.to_le_bytes()),
            Value::U32(x) => out.extend(x.to_le_bytes()),
            Value::I32(x) => out.extend(x.to_le_bytes()),
            Value::F32(x) => out.extend(x.to_le_bytes()),
            Value::Bool(x) => out.push(u8::from(*x)),
            Value::Str(s) => put_str(out, s),
            Value::Array(a) => {
                let t = a.first().map(type_id).unwrap_or(0);
                out.extend(t.to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                for x in a {
                    put_value(out, x);
                }
            }
            Value::U64(x) => out.extend(x.to_le_bytes()),
            Value::I64(x) => out.extend(x.to_le_bytes()),
            Value::F64(x) => out.extend(x.to_le_bytes()),
        }
    }

    impl Writer {
        pub fn kv(mut self, k: &str, v: Value) -> Self {
            self.kv.push((k.into(), v));
            self
        }
        pub fn tensor(mut self, name: &str, shape: &[u64], ty: u32, data: Vec<u8>) -> Self {
            self.tensors.push((name.into(), shape.to_vec(), ty, data));
            self
        }
        pub fn build(&self) -> Vec<u8> {
            let align = if self.alignment == 0 {
                32
            } else {
                self.alignment
            };
            let mut out = b"GGUF".to_vec();
            out.extend(3u32.to_le_bytes());
            out.extend((self.tensors.len() as u64).to_le_bytes());
            out.extend((self.kv.len() as u64).to_le_bytes());
            for (k, v) in &self.kv {
                put_str(&mut out, k);
                out.extend(type_id(v).to_le_bytes());
                put_value(&mut out, v);
            }
            let mut off = 0u64;
            let mut offsets = vec![];
            for (name, shape, ty, data) in &self.tensors {
                put_str(&mut out, name);
                out.extend((shape.len() as u32).to_le_bytes());
                for d in shape {
                    out.extend(d.to_le_bytes());
                }
                out.extend(ty.to_le_bytes());
                out.extend(off.to_le_bytes());
                offsets.push(off);
                off = (off + data.len() as u64).div_ceil(align) * align;
            }
            while !(out.len() as u64).is_multiple_of(align) {
                out.push(0);
            }
            let base = out.len();
            for ((_, _, _, data), o) in self.tensors.iter().zip(offsets) {
                out.resize(base + o as usize, 0);
                out.extend(data);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::test_writer::Writer;
    use super::*;

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn sample() -> Writer {
        Writer::default()
            .kv("general.architecture", Value::Str("llama".into()))
            .kv("llama.block_count", Value::U32(2))
            .kv("answer", Value::I64(-42))
            .kv(
                "flags",
                Value::Array(vec![Value::Bool(true), Value::Bool(false)]),
            )
            .kv(
                "tokens",
                Value::Array(vec![Value::Str("a".into()), Value::Str("bc".into())]),
            )
            .kv("pi", Value::F64(std::f64::consts::PI))
            .tensor(
                "a",
                &[4, 2],
                0,
                f32_bytes(&[1., 2., 3., 4., 5., 6., 7., 8.]),
            )
            .tensor("b", &[3], 0, f32_bytes(&[9., 10., 11.]))
    }

    #[test]
    fn reads_metadata_and_tensors_zero_copy() {
        let bytes = sample().build();
        let h = GgufHeader::parse(&bytes).unwrap();
        assert_eq!(h.version, 3);
        let m = &h.metadata;
        assert_eq!(m.get_str("general.architecture").unwrap(), Some("llama"));
        assert_eq!(m.require_int::<u32>("llama.block_count").unwrap(), 2);
        assert_eq!(m.require_int::<i32>("answer").unwrap(), -42);
        assert!(m.require_int::<u32>("answer").is_err());
        assert_eq!(m.get_str_array("tokens").unwrap().unwrap(), vec!["a", "bc"]);
        assert_eq!(m.get_f32("pi").unwrap(), Some(std::f32::consts::PI));
        let a = h.tensor("a").unwrap();
        assert_eq!((a.row_len(), a.n_rows(), a.size), (4, 2, 32));
        assert_eq!(a.offset % 32, 0);
        let data = &bytes[a.offset as usize..(a.offset + a.size) as usize];
        assert_eq!(&data[..4], &1f32.to_le_bytes());
        let b = h.tensor("b").unwrap();
        assert_eq!(&bytes[b.offset as usize..][..4], &9f32.to_le_bytes());
    }

    fn err(bytes: &[u8]) -> String {
        GgufHeader::parse(bytes).unwrap_err().to_string()
    }

    #[test]
    fn every_truncation_is_an_error_never_a_panic() {
        let bytes = sample().build();
        let data_start = GgufHeader::parse(&bytes).unwrap().data_offset as usize;
        for n in 0..bytes.len() {
            let r = GgufHeader::parse(&bytes[..n]);
            // Truncation inside padding before the data is fine only if no tensor reaches it.
            assert!(r.is_err() || n >= data_start, "prefix of {n} bytes parsed");
        }
    }

    #[test]
    fn a_prefix_asks_for_more_until_the_header_fits() {
        let bytes = sample().build();
        let full = GgufHeader::parse(&bytes).unwrap();
        // Tensor infos end before the alignment padding; from there on the prefix suffices.
        let mut first_ok = None;
        for n in 0..=bytes.len() {
            match GgufHeader::parse_prefix(&bytes[..n], bytes.len() as u64) {
                Ok(None) => assert!(
                    first_ok.is_none(),
                    "prefix {n}: asked for more after fitting"
                ),
                Ok(Some(h)) => {
                    first_ok.get_or_insert(n);
                    assert_eq!(h.tensors, full.tensors, "prefix {n}");
                    assert_eq!(h.data_offset, full.data_offset);
                }
                Err(e) => panic!("prefix {n}: {e}"),
            }
        }
        assert!(first_ok.is_some_and(|n| n <= full.data_offset as usize));
        // A real error in the prefix is an error, not a request for more.
        let mut bad = bytes.clone();
        bad[0] = b'X';
        assert!(GgufHeader::parse_prefix(&bad[..16], bad.len() as u64).is_err());
        // Tensor data past the end of the (declared) file is still refused.
        let short = bytes.len() as u64 - 4;
        assert!(GgufHeader::parse_prefix(&bytes[..full.data_offset as usize], short).is_err());
    }

    #[test]
    fn bad_magic_and_version() {
        let mut b = sample().build();
        b[0] = b'X';
        assert!(err(&b).contains("bad magic"));
        let mut b = sample().build();
        b[4] = 1;
        assert!(err(&b).contains("unsupported GGUF version 1"));
    }

    #[test]
    fn counts_near_u64_max_are_refused_without_allocating() {
        let mut b = sample().build();
        b[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(err(&b).contains("tensor count"));
        let mut b = sample().build();
        b[16..24].copy_from_slice(&(u64::MAX / 2).to_le_bytes());
        assert!(err(&b).contains("metadata count"));
        // A string length near u64::MAX.
        let mut b = sample().build();
        b[24..32].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        assert!(err(&b).contains("exceeds"));
        // An array length that cannot fit.
        let w = Writer::default().kv("x", Value::Array(vec![Value::U32(1)]));
        let mut b = w.build();
        let at = 24 + 8 + 1 + 4 + 4; // key len + "x" + value type + elem type
        b[at..at + 8].copy_from_slice(&(u64::MAX / 4).to_le_bytes());
        assert!(err(&b).contains("array length"), "{}", err(&b));
    }

    #[test]
    fn offsets_past_eof_misalignment_and_wrong_dims() {
        let bytes = sample().build();
        let h = GgufHeader::parse(&bytes).unwrap();
        // Cut the last tensor's data.
        let cut = &bytes[..(h.tensor("b").unwrap().offset + 4) as usize];
        let e = err(cut);
        assert!(e.contains("tensor `b`") && e.contains("truncated"), "{e}");

        let mut w = sample();
        w.alignment = 32;
        let mut b = w.build();
        // Patch tensor `b`'s relative offset to 4 (misaligned). It is the last u64 before padding.
        let info_end = {
            let mut c = 0;
            for i in (0..h.data_offset as usize - 8).rev() {
                if b[i..i + 8] == 32u64.to_le_bytes() {
                    c = i;
                    break;
                }
            }
            c
        };
        b[info_end..info_end + 8].copy_from_slice(&4u64.to_le_bytes());
        assert!(err(&b).contains("not aligned"), "{}", err(&b));

        let w = Writer::default().tensor("q", &[33, 1], 2, vec![0; 18]);
        assert!(
            err(&w.build()).contains("not a multiple"),
            "{}",
            err(&w.build())
        );
        let w = Writer::default().tensor("z", &[0], 0, vec![]);
        assert!(err(&w.build()).contains("dimension 0 is 0"));
        let w = Writer::default().tensor("big", &[1 << 40, 1 << 40], 0, vec![]);
        assert!(err(&w.build()).contains("overflows") || err(&w.build()).contains("past the end"));
        let w = Writer::default().tensor("t", &[4], 9999, vec![0; 16]);
        assert!(err(&w.build()).contains("unknown tensor type id 9999"));
        let w =
            Writer::default()
                .tensor("t", &[4], 0, vec![0; 16])
                .tensor("t", &[4], 0, vec![0; 16]);
        assert!(err(&w.build()).contains("duplicate tensor name"));
    }

    #[test]
    fn bad_alignment_and_duplicate_keys() {
        let w = Writer::default().kv("general.alignment", Value::U32(3));
        assert!(err(&w.build()).contains("power of two"));
        let w = Writer::default()
            .kv("k", Value::U8(1))
            .kv("k", Value::U8(2));
        assert!(err(&w.build()).contains("duplicate metadata key"));
        // header (24) + key length (8) + "b" (1) + value type (4): the bool's byte is at 37.
        let mut b = Writer::default().kv("b", Value::Bool(true)).build();
        assert_eq!(b[37], 1);
        b[37] = 2;
        assert!(err(&b).contains("neither 0 nor 1"));
    }
}
