//! GGUF v2/v3 reader: header, metadata key/values, tensor directory, and zero-copy access
//! to tensor bytes through a shared memory map.
//!
//! File layout (all little-endian):
//!
//! ```text
//! "GGUF" u32 version u64 n_tensors u64 n_kv
//! n_kv  x { string key, u32 type, value }
//! n_tensors x { string name, u32 n_dims, u64 ne[n_dims], u32 ggml_type, u64 offset }
//! padding to `general.alignment` (default 32)
//! tensor data: tensor i occupies [data_start + offset_i, + nbytes(type, ne))
//! ```
//!
//! Invariants: every length and offset read from the file is checked against the file size
//! before use, so a truncated or hostile file yields a [`GgufError`], never a panic or an
//! out-of-bounds read; array lengths are capped so a bogus count cannot allocate unbounded
//! memory. `ne[0]` is the innermost (contiguous) dimension: a matrix `[ne0, ne1]` has `ne1`
//! rows of `ne0` elements.

use std::collections::BTreeMap;
use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use memmap2::Mmap;

use crate::backend::dtype::GgmlType;

const MAGIC: &[u8; 4] = b"GGUF";
/// Bound on metadata strings and array lengths: real files have ~150k-entry vocab arrays and
/// templates of a few KiB; anything beyond this is corruption, not data.
const MAX_ARRAY_LEN: u64 = 16 << 20;
const MAX_STRING_LEN: u64 = 64 << 20;
const MAX_DIMS: u32 = 4;

#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("cannot open {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("not a GGUF file: magic is {found:?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    Version(u32),
    #[error("GGUF file truncated: needed {needed} bytes at offset {offset}, file has {len}")]
    Truncated { offset: u64, needed: u64, len: u64 },
    #[error("GGUF metadata: {0}")]
    Invalid(String),
    #[error(
        "tensor `{name}` has unsupported type {ty} (supported: F32, F16, BF16, Q4_0, Q4_1, \
         Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K)"
    )]
    UnsupportedType { name: String, ty: String },
}

/// One metadata value.
#[derive(Debug, Clone, PartialEq)]
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
    String(String),
    Array(Vec<Value>),
}

impl Value {
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v as u64),
            Value::U16(v) => Some(v as u64),
            Value::U32(v) => Some(v as u64),
            Value::U64(v) => Some(v),
            Value::I8(v) if v >= 0 => Some(v as u64),
            Value::I16(v) if v >= 0 => Some(v as u64),
            Value::I32(v) if v >= 0 => Some(v as u64),
            Value::I64(v) if v >= 0 => Some(v as u64),
            _ => None,
        }
    }
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Value::I8(v) => Some(v as i64),
            Value::I16(v) => Some(v as i64),
            Value::I32(v) => Some(v as i64),
            Value::I64(v) => Some(v),
            _ => self.as_u64().and_then(|v| i64::try_from(v).ok()),
        }
    }
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v as f64),
            Value::F64(v) => Some(v),
            _ => self.as_i64().map(|v| v as f64),
        }
    }
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            Value::Bool(b) => Some(b),
            _ => None,
        }
    }
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Directory entry of one tensor.
#[derive(Debug, Clone)]
pub struct TensorInfo {
    pub name: String,
    /// `dims[0]` is the contiguous dimension.
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte range in the file.
    pub start: usize,
    pub len: usize,
}

impl TensorInfo {
    pub fn num_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF file; tensor bytes stay in the shared map.
pub struct GgufFile {
    pub version: u32,
    pub metadata: BTreeMap<String, Value>,
    pub tensors: Vec<TensorInfo>,
    map: Arc<Mmap>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("n_metadata", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .finish()
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: u64) -> Result<&'a [u8], GgufError> {
        let len = self.buf.len() as u64;
        let end = (self.pos as u64).checked_add(n).filter(|&e| e <= len);
        match end {
            Some(end) => {
                let s = &self.buf[self.pos..end as usize];
                self.pos = end as usize;
                Ok(s)
            }
            None => Err(GgufError::Truncated {
                offset: self.pos as u64,
                needed: n,
                len,
            }),
        }
    }
    fn arr<const N: usize>(&mut self) -> Result<[u8; N], GgufError> {
        let s = self.take(N as u64)?;
        let mut a = [0u8; N];
        a.copy_from_slice(s);
        Ok(a)
    }
    fn u32(&mut self) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.arr()?))
    }
    fn u64(&mut self) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.arr()?))
    }
    fn string(&mut self) -> Result<String, GgufError> {
        let n = self.u64()?;
        if n > MAX_STRING_LEN {
            return Err(GgufError::Invalid(format!(
                "string length {n} exceeds the limit {MAX_STRING_LEN}"
            )));
        }
        let bytes = self.take(n)?;
        // Vocabularies of some converters contain invalid UTF-8 fragments; keep them lossy.
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
    fn value(&mut self, ty: u32, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            0 => Value::U8(self.arr::<1>()?[0]),
            1 => Value::I8(self.arr::<1>()?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.arr()?)),
            3 => Value::I16(i16::from_le_bytes(self.arr()?)),
            4 => Value::U32(self.u32()?),
            5 => Value::I32(i32::from_le_bytes(self.arr()?)),
            6 => Value::F32(f32::from_le_bytes(self.arr()?)),
            7 => Value::Bool(self.arr::<1>()?[0] != 0),
            8 => Value::String(self.string()?),
            9 => {
                if depth > 2 {
                    return Err(GgufError::Invalid("arrays nested deeper than 2".into()));
                }
                let inner = self.u32()?;
                let n = self.u64()?;
                if n > MAX_ARRAY_LEN {
                    return Err(GgufError::Invalid(format!(
                        "array length {n} exceeds the limit {MAX_ARRAY_LEN}"
                    )));
                }
                // Every element takes at least one byte: a count beyond the remaining bytes
                // is a truncated file, caught before allocating.
                let remaining = (self.buf.len() - self.pos) as u64;
                if n > remaining {
                    return Err(GgufError::Truncated {
                        offset: self.pos as u64,
                        needed: n,
                        len: self.buf.len() as u64,
                    });
                }
                let mut v = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    v.push(self.value(inner, depth + 1)?);
                }
                Value::Array(v)
            }
            10 => Value::U64(self.u64()?),
            11 => Value::I64(i64::from_le_bytes(self.arr()?)),
            12 => Value::F64(f64::from_le_bytes(self.arr()?)),
            t => {
                return Err(GgufError::Invalid(format!(
                    "unknown metadata value type {t}"
                )))
            }
        })
    }
}

impl GgufFile {
    pub fn open(path: &Path) -> Result<Self, GgufError> {
        let io = |source| GgufError::Io {
            path: path.display().to_string(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        // SAFETY: the map is read-only and private to this process; ponder never writes model
        // files, and a file truncated underneath us by another process is outside the contract
        // (same as every mmap-based loader).
        let map = unsafe { Mmap::map(&file) }.map_err(io)?;
        Self::parse(Arc::new(map))
    }

    pub fn parse(map: Arc<Mmap>) -> Result<Self, GgufError> {
        let buf: &[u8] = &map;
        let mut c = Cursor { buf, pos: 0 };
        let magic: [u8; 4] = c.arr()?;
        if &magic != MAGIC {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = c.u32()?;
        if !(2..=3).contains(&version) {
            return Err(GgufError::Version(version));
        }
        let n_tensors = c.u64()?;
        let n_kv = c.u64()?;
        if n_tensors > 1 << 20 || n_kv > 1 << 20 {
            return Err(GgufError::Invalid(format!(
                "implausible counts: {n_tensors} tensors, {n_kv} metadata keys"
            )));
        }
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = c.string()?;
            let ty = c.u32()?;
            let v = c.value(ty, 0)?;
            metadata.insert(key, v);
        }
        let alignment = metadata
            .get("general.alignment")
            .and_then(Value::as_u64)
            .unwrap_or(32);
        if alignment == 0 || !alignment.is_power_of_two() {
            return Err(GgufError::Invalid(format!(
                "general.alignment must be a power of two, given {alignment}"
            )));
        }
        let mut raw = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = c.string()?;
            let n_dims = c.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::Invalid(format!(
                    "tensor `{name}` has {n_dims} dimensions (allowed 1..={MAX_DIMS})"
                )));
            }
            let mut dims = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                dims.push(c.u64()?);
            }
            let ty = c.u32()?;
            let offset = c.u64()?;
            raw.push((name, dims, ty, offset));
        }
        let data_start = (c.pos as u64).div_ceil(alignment) * alignment;
        let file_len = buf.len() as u64;
        let mut tensors = Vec::with_capacity(raw.len());
        for (name, dims, ty, offset) in raw {
            let ty = GgmlType::from_u32(ty).ok_or_else(|| GgufError::UnsupportedType {
                name: name.clone(),
                ty: GgmlType::name_of(ty),
            })?;
            let n: u64 = dims
                .iter()
                .try_fold(1u64, |a, &d| a.checked_mul(d))
                .ok_or_else(|| {
                    GgufError::Invalid(format!("tensor `{name}` has overflowing dims {dims:?}"))
                })?;
            if !n.is_multiple_of(ty.block_elems() as u64)
                || !dims[0].is_multiple_of(ty.block_elems() as u64)
            {
                return Err(GgufError::Invalid(format!(
                    "tensor `{name}` row length {} is not a multiple of the {ty:?} block size {}",
                    dims[0],
                    ty.block_elems()
                )));
            }
            // Checked: a hostile `dims` can make the byte count overflow u64 (found by
            // fuzz/fuzz_targets/gguf.rs); wrapped, it would pass the bounds check below.
            let nbytes = (n / ty.block_elems() as u64)
                .checked_mul(ty.block_bytes() as u64)
                .ok_or_else(|| {
                    GgufError::Invalid(format!(
                        "tensor `{name}` with dims {dims:?} has more bytes than fit in 64 bits"
                    ))
                })?;
            let start = data_start.checked_add(offset);
            match start.and_then(|s| s.checked_add(nbytes).map(|e| (s, e))) {
                Some((s, e)) if e <= file_len => tensors.push(TensorInfo {
                    name,
                    dims,
                    ty,
                    start: s as usize,
                    len: nbytes as usize,
                }),
                _ => {
                    return Err(GgufError::Truncated {
                        offset: data_start.saturating_add(offset),
                        needed: nbytes,
                        len: file_len,
                    })
                }
            }
        }
        Ok(GgufFile {
            version,
            metadata,
            tensors,
            map,
        })
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.get(key)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The bytes of a tensor (bounds were checked at parse time).
    pub fn tensor_bytes(&self, t: &TensorInfo) -> &[u8] {
        &self.map[t.start..t.start + t.len]
    }

    pub fn map(&self) -> &Arc<Mmap> {
        &self.map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A GGUF v3 file with no metadata and one F32 tensor of `dims` at offset 0.
    fn one_tensor(dims: &[u64]) -> Arc<Mmap> {
        let mut b = b"GGUF".to_vec();
        b.extend(3u32.to_le_bytes());
        b.extend(1u64.to_le_bytes()); // tensors
        b.extend(0u64.to_le_bytes()); // metadata keys
        b.extend(1u64.to_le_bytes());
        b.push(b'w');
        b.extend((dims.len() as u32).to_le_bytes());
        for d in dims {
            b.extend(d.to_le_bytes());
        }
        b.extend(0u32.to_le_bytes()); // F32
        b.extend(0u64.to_le_bytes()); // offset
        b.resize(b.len().div_ceil(32) * 32 + 64, 0);
        let mut m = memmap2::MmapMut::map_anon(b.len()).unwrap();
        m.copy_from_slice(&b);
        Arc::new(m.make_read_only().unwrap())
    }

    #[test]
    fn tensor_byte_count_overflow_is_an_error_not_a_wrap() {
        // 2^62 f32 elements = 2^64 bytes: wraps to 0 without the checked multiply.
        let e = GgufFile::parse(one_tensor(&[1 << 31, 1 << 31])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "GGUF metadata: tensor `w` with dims [2147483648, 2147483648] has more bytes than fit in 64 bits"
        );
        let g = GgufFile::parse(one_tensor(&[4, 4])).unwrap();
        assert_eq!(
            (g.tensors[0].len, g.tensor_bytes(&g.tensors[0]).len()),
            (64, 64)
        );
    }
}
