//! Host-side weight matrices in their storage format (f32, f16, bf16 or a ggml block
//! quantization), either borrowed zero-copy from a memory-mapped checkpoint or owned.
//!
//! A [`QMatrix`] is `rows x cols`, in one of two layouts:
//! - [`Layout::RowMajor`] (as checkpoints store it): row `r` is `ty.row_bytes(cols)` bytes
//!   starting at `r * ty.row_bytes(cols)`;
//! - [`Layout::Cg16`] (Q4_0/Q4_1/Q8_0 only, what the CPU GEMM reads): column groups of 16
//!   rows, see `backend::packed`; the same bytes reordered, plus zero rows up to a multiple
//!   of 16.
//!
//! Linear layers store `W[out, in]` and compute `y = x W^T`, so `rows = out_features`,
//! `cols = in_features` (the GGUF/PyTorch convention).

use std::borrow::Cow;
use std::ops::Range;
use std::sync::Arc;

use memmap2::Mmap;

use super::blocks::dequantize_row;
use super::dtype::GgmlType;
use super::packed;

/// Bytes of a tensor: a range of a shared memory map, or an owned buffer (64-byte aligned
/// when the CPU kernels read it with full-line loads).
#[derive(Clone)]
pub enum Storage {
    Mapped(Arc<Mmap>, Range<usize>),
    Owned(Arc<Vec<u8>>),
    Aligned(Arc<AlignedBytes>),
}

impl Storage {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m, r) => &m[r.clone()],
            Storage::Owned(v) => v,
            Storage::Aligned(a) => a.as_slice(),
        }
    }

    /// Drops a mapped range's pages from this process's resident set (`MADV_DONTNEED`),
    /// once its bytes have been copied elsewhere (packed at load): otherwise the file's
    /// pages stay counted in RSS next to their copy until memory pressure evicts them (a
    /// 1.1 GB model would peak at twice its size). Reading the range again faults the
    /// pages back in from the file. A no-op for owned storage.
    pub fn release_pages(&self) {
        #[cfg(unix)]
        if let Storage::Mapped(m, r) = self {
            // SAFETY: the map is a read-only file mapping: dropping its pages loses nothing
            // (a later read of any byte, also of the neighbours in the first and last page,
            // reloads it from the file), and no reference into it is invalidated.
            let _ = unsafe {
                m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, r.start, r.len())
            };
        }
    }
}

/// A heap buffer whose first byte is on a cache line (64-byte aligned): the operand buffers
/// of the CPU kernels, where a 512-bit load or an AMX tile row that straddles two lines
/// costs two. Allocated as fresh zero pages (calloc; < 64 bytes of slack), so a buffer costs
/// no RSS until written.
#[derive(Default)]
pub struct AlignedBytes {
    buf: Vec<u8>,
    off: usize,
    len: usize,
}

impl Clone for AlignedBytes {
    fn clone(&self) -> Self {
        let mut c = AlignedBytes::zeroed(self.len);
        c.as_mut_slice().copy_from_slice(self.as_slice());
        c
    }
}

impl std::fmt::Debug for AlignedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AlignedBytes({} bytes)", self.len)
    }
}

impl AlignedBytes {
    /// `len` zero bytes.
    pub fn zeroed(len: usize) -> Self {
        // vec![0; n] comes from calloc: untouched zero pages until written.
        let buf = vec![0u8; len + 63];
        let off = buf.as_ptr().align_offset(64);
        AlignedBytes { buf, off, len }
    }

    /// Resizes to `len` bytes, all zero.
    pub fn reset(&mut self, len: usize) {
        *self = AlignedBytes::zeroed(len);
    }

    /// Resizes to `len` bytes without clearing when the allocation is large enough (bytes
    /// keep their old values; a grown buffer is new and zero): scratch the caller overwrites.
    pub fn resize_keep(&mut self, len: usize) {
        if self.buf.len() < len + 63 {
            *self = AlignedBytes::zeroed(len);
        }
        self.len = len;
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.off..self.off + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.off..self.off + self.len]
    }

    /// The bytes as `i8` (same size and alignment).
    pub fn as_i8(&self) -> &[i8] {
        let b = self.as_slice();
        // SAFETY: u8 and i8 have the same size, alignment and validity (every bit pattern);
        // the slice borrows self.
        unsafe { std::slice::from_raw_parts(b.as_ptr() as *const i8, b.len()) }
    }

    /// The bytes as `i8`, mutably.
    pub fn as_i8_mut(&mut self) -> &mut [i8] {
        let b = self.as_mut_slice();
        // SAFETY: as in `as_i8`, borrowed mutably from self.
        unsafe { std::slice::from_raw_parts_mut(b.as_mut_ptr() as *mut i8, b.len()) }
    }
}

/// How a matrix's bytes are ordered (module header).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    RowMajor,
    Cg16,
}

#[derive(Clone)]
pub struct QMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: Storage,
    pub layout: Layout,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "QMatrix({:?}, {}x{}, {:?})",
            self.ty, self.rows, self.cols, self.layout
        )
    }
}

impl QMatrix {
    /// Checks that `data` holds exactly `rows x cols` elements of `ty`.
    pub fn new(ty: GgmlType, rows: usize, cols: usize, data: Storage) -> Result<Self, String> {
        if !cols.is_multiple_of(ty.block_elems()) {
            return Err(format!(
                "row length {cols} is not a multiple of the {ty:?} block size {}",
                ty.block_elems()
            ));
        }
        let want = ty.row_bytes(cols) * rows;
        let got = data.bytes().len();
        if want != got {
            return Err(format!(
                "{rows}x{cols} {ty:?} needs {want} bytes, storage has {got}"
            ));
        }
        Ok(QMatrix {
            ty,
            rows,
            cols,
            data,
            layout: Layout::RowMajor,
        })
    }

    /// This matrix in the CPU GEMM's Cg16 layout (an owned copy of the same size), or a
    /// clone when the type has no such layout or it is already packed.
    pub fn to_cg16(&self) -> QMatrix {
        if self.layout == Layout::Cg16 || packed::form(self.ty).is_none() {
            return self.clone();
        }
        let mut bytes = AlignedBytes::zeroed(packed::packed_bytes(self.ty, self.rows, self.cols));
        packed::pack(
            self.ty,
            self.rows,
            self.cols,
            self.data.bytes(),
            bytes.as_mut_slice(),
        );
        self.data.release_pages();
        QMatrix {
            data: Storage::Aligned(Arc::new(bytes)),
            layout: Layout::Cg16,
            ..self.clone()
        }
    }

    /// The row-major (checkpoint) bytes: borrowed, or rebuilt from the Cg16 layout.
    pub fn row_major_bytes(&self) -> Cow<'_, [u8]> {
        match self.layout {
            Layout::RowMajor => Cow::Borrowed(self.data.bytes()),
            Layout::Cg16 => {
                let rb = self.row_bytes();
                let mut out = vec![0u8; rb * self.rows];
                for (r, o) in out.chunks_exact_mut(rb).enumerate() {
                    packed::unpack_row(self.ty, self.cols, self.data.bytes(), r, o);
                }
                Cow::Owned(out)
            }
        }
    }

    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> Self {
        assert_eq!(values.len(), rows * cols, "from_f32: shape mismatch");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        QMatrix {
            ty: GgmlType::F32,
            rows,
            cols,
            data: Storage::Owned(Arc::new(bytes)),
            layout: Layout::RowMajor,
        }
    }

    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols)
    }

    /// Row `r`'s bytes; row-major matrices only (a Cg16 row is not contiguous: use
    /// [`QMatrix::dequantize_row_into`] or [`QMatrix::row_major_bytes`]).
    pub fn row(&self, r: usize) -> &[u8] {
        assert_eq!(
            self.layout,
            Layout::RowMajor,
            "QMatrix::row on a Cg16 matrix"
        );
        let rb = self.row_bytes();
        &self.data.bytes()[r * rb..(r + 1) * rb]
    }

    /// Bytes in memory (for Cg16, including the padding rows).
    pub fn size_bytes(&self) -> usize {
        self.data.bytes().len()
    }

    /// Decode row `r` into `out` (`out.len() == cols`).
    pub fn dequantize_row_into(&self, r: usize, out: &mut [f32]) {
        match self.layout {
            Layout::RowMajor => dequantize_row(self.ty, self.row(r), out),
            Layout::Cg16 => {
                // One row's ggml bytes, rebuilt (<= 34 bytes per 32 weights).
                let mut row = vec![0u8; self.row_bytes()];
                packed::unpack_row(self.ty, self.cols, self.data.bytes(), r, &mut row);
                dequantize_row(self.ty, &row, out);
            }
        }
    }

    /// Decode the whole matrix (tests and the CUDA upload path).
    pub fn to_f32(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.rows * self.cols];
        for (r, o) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row_into(r, o);
        }
        out
    }
}
