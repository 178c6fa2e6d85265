//! Storage element types of weight tensors (the ggml type ids used by GGUF, plus the
//! safetensors float types) and their scalar reference decoders.
//!
//! Block formats (32 elements per block, ggml layout):
//!
//! ```text
//! Q8_0: f16 d | i8 q[32]             x[i]    = d * q[i]                       34 bytes
//! Q4_0: f16 d | u8 qs[16]            x[j]    = d * ((qs[j] & 15) - 8)          18 bytes
//!                                    x[j+16] = d * ((qs[j] >> 4) - 8)
//! Q4_1: f16 d | f16 m | u8 qs[16]    x[j]    = d * (qs[j] & 15) + m            20 bytes
//!                                    x[j+16] = d * (qs[j] >> 4) + m
//! ```
//!
//! The decoders here are the reference the fast kernels in `backend::cpu` are tested against.

use half::{bf16, f16};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
}

pub const QK: usize = 32;

impl GgmlType {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            8 => Self::Q8_0,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// Human name of a ggml type id, including the ones we do not support.
    pub fn name_of(v: u32) -> String {
        let known = [
            (0, "F32"),
            (1, "F16"),
            (2, "Q4_0"),
            (3, "Q4_1"),
            (6, "Q5_0"),
            (7, "Q5_1"),
            (8, "Q8_0"),
            (9, "Q8_1"),
            (10, "Q2_K"),
            (11, "Q3_K"),
            (12, "Q4_K"),
            (13, "Q5_K"),
            (14, "Q6_K"),
            (15, "Q8_K"),
            (30, "BF16"),
        ];
        known
            .iter()
            .find(|(id, _)| *id == v)
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| format!("ggml type {v}"))
    }

    /// Elements per storage block.
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q8_0 => QK,
        }
    }

    /// Bytes per storage block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q8_0 => 34,
        }
    }

    /// Bytes of a row of `n` elements (`n` must be a multiple of `block_elems`).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }
}

#[inline(always)]
pub fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

/// Decode one row of `out.len()` elements stored as `ty` in `src`.
pub fn dequantize_row(ty: GgmlType, src: &[u8], out: &mut [f32]) {
    let n = out.len();
    debug_assert_eq!(src.len(), ty.row_bytes(n));
    match ty {
        GgmlType::F32 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        GgmlType::F16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::BF16 => {
            for (o, c) in out.iter_mut().zip(src.chunks_exact(2)) {
                *o = bf16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        GgmlType::Q8_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(src.chunks_exact(34)) {
                let d = f16_at(b, 0);
                for (x, &q) in o.iter_mut().zip(&b[2..34]) {
                    *x = d * (q as i8) as f32;
                }
            }
        }
        GgmlType::Q4_0 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(src.chunks_exact(18)) {
                let d = f16_at(b, 0);
                for j in 0..16 {
                    let q = b[2 + j];
                    o[j] = d * ((q & 15) as i32 - 8) as f32;
                    o[j + 16] = d * ((q >> 4) as i32 - 8) as f32;
                }
            }
        }
        GgmlType::Q4_1 => {
            for (o, b) in out.chunks_exact_mut(QK).zip(src.chunks_exact(20)) {
                let d = f16_at(b, 0);
                let m = f16_at(b, 2);
                for j in 0..16 {
                    let q = b[4 + j];
                    o[j] = d * (q & 15) as f32 + m;
                    o[j + 16] = d * (q >> 4) as f32 + m;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(v: f32) -> [u8; 2] {
        f16::from_f32(v).to_le_bytes()
    }

    #[test]
    fn q4_1_block_decodes_low_then_high_nibbles() {
        let mut b = Vec::new();
        b.extend_from_slice(&h(0.5));
        b.extend_from_slice(&h(-1.0));
        for j in 0..16u8 {
            b.push(j | ((15 - j) << 4));
        }
        let mut out = [0f32; 32];
        dequantize_row(GgmlType::Q4_1, &b, &mut out);
        assert_eq!(out[0], -1.0);
        assert_eq!(out[3], 0.5 * 3.0 - 1.0);
        assert_eq!(out[16], 0.5 * 15.0 - 1.0);
        assert_eq!(out[31], -1.0);
    }

    #[test]
    fn q4_0_and_q8_0_blocks() {
        let mut b = h(2.0).to_vec();
        b.extend(std::iter::repeat_n(0x80u8 | 0x0f, 16));
        let mut out = [0f32; 32];
        dequantize_row(GgmlType::Q4_0, &b, &mut out);
        assert_eq!(out[0], 2.0 * 7.0);
        assert_eq!(out[16], 0.0);
        let mut b = h(0.25).to_vec();
        b.extend((0..32).map(|i| (i as i8 - 16) as u8));
        dequantize_row(GgmlType::Q8_0, &b, &mut out);
        assert_eq!(out[0], -4.0);
        assert_eq!(out[31], 0.25 * 15.0);
    }

    #[test]
    fn type_ids_and_sizes() {
        assert_eq!(GgmlType::from_u32(3), Some(GgmlType::Q4_1));
        assert_eq!(GgmlType::from_u32(12), None);
        assert_eq!(GgmlType::name_of(12), "Q4_K");
        assert_eq!(GgmlType::Q4_1.row_bytes(576), 18 * 20);
        assert_eq!(GgmlType::Q8_0.row_bytes(576), 18 * 34);
    }
}
