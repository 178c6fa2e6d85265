//! Host-side weight matrices in their storage format (f32, f16, bf16 or a ggml block
//! quantization), either borrowed zero-copy from a memory-mapped checkpoint or owned.
//!
//! A [`QMatrix`] is `rows x cols` row-major: row `r` is `ty.row_bytes(cols)` bytes starting
//! at `r * ty.row_bytes(cols)`. Linear layers store `W[out, in]` and compute `y = x W^T`,
//! so `rows = out_features`, `cols = in_features` (the GGUF/PyTorch convention).

use std::ops::Range;
use std::sync::Arc;

use memmap2::Mmap;

use super::dtype::{dequantize_row, GgmlType};

/// Bytes of a tensor: a range of a shared memory map, or an owned buffer.
#[derive(Clone)]
pub enum Storage {
    Mapped(Arc<Mmap>, Range<usize>),
    Owned(Arc<Vec<u8>>),
}

impl Storage {
    pub fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m, r) => &m[r.clone()],
            Storage::Owned(v) => v,
        }
    }
}

#[derive(Clone)]
pub struct QMatrix {
    pub ty: GgmlType,
    pub rows: usize,
    pub cols: usize,
    pub data: Storage,
}

impl std::fmt::Debug for QMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "QMatrix({:?}, {}x{})", self.ty, self.rows, self.cols)
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
        })
    }

    pub fn from_f32(rows: usize, cols: usize, values: &[f32]) -> Self {
        assert_eq!(values.len(), rows * cols, "from_f32: shape mismatch");
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        QMatrix {
            ty: GgmlType::F32,
            rows,
            cols,
            data: Storage::Owned(Arc::new(bytes)),
        }
    }

    pub fn row_bytes(&self) -> usize {
        self.ty.row_bytes(self.cols)
    }

    pub fn row(&self, r: usize) -> &[u8] {
        let rb = self.row_bytes();
        &self.data.bytes()[r * rb..(r + 1) * rb]
    }

    pub fn size_bytes(&self) -> usize {
        self.row_bytes() * self.rows
    }

    /// Decode row `r` into `out` (`out.len() == cols`).
    pub fn dequantize_row_into(&self, r: usize, out: &mut [f32]) {
        dequantize_row(self.ty, self.row(r), out);
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
