//! Storage element types of weight tensors (the ggml type ids used by GGUF, plus the
//! safetensors float types) and their block sizes.
//!
//! Block formats (ggml layout, little-endian; `u` = the unsigned element integer):
//!
//! ```text
//!  type  elems bytes  layout                                    x[e]
//!  Q4_0    32    18   d | qs[16]                                d (u - 8)
//!  Q4_1    32    20   d | m | qs[16]                            d u + m
//!  Q5_0    32    22   d | qh u32 | qs[16]                       d (u - 16)
//!  Q5_1    32    24   d | m | qh u32 | qs[16]                   d u + m
//!  Q8_0    32    34   d | i8 q[32]                              d q
//!  Q2_K   256    84   scales[16] | qs[64] | d | dmin            (d sc_i) u - dmin m_i      i = e / 16
//!  Q3_K   256   110   hmask[32] | qs[64] | scales[12] | d       (d (sc_i - 32)) (u - 4)    i = e / 16
//!  Q4_K   256   144   d | dmin | scales[12] | qs[128]           (d sc_j) u - dmin m_j      j = e / 32
//!  Q5_K   256   176   d | dmin | scales[12] | qh[32] | qs[128]  (d sc_j) u - dmin m_j      j = e / 32
//!  Q6_K   256   210   ql[128] | qh[64] | i8 scales[16] | d      (d sc_i) (u - 32)          i = e / 16
//!  Q8_K   256   292   f32 d | i8 q[256] | i16 bsums[16]         d q
//! ```
//!
//! `d`, `m`, `dmin` are f16 (Q8_K's d is f32). Where each element's bits sit inside a block is
//! in `backend::blocks`, which splits a block into its integers and scales (`Parts`) and holds
//! the reference decoder (`dequantize_row`) the fast kernels in `backend::cpu` are tested
//! against.

use half::f16;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q5_0,
    Q5_1,
    Q8_0,
    Q2K,
    Q3K,
    Q4K,
    Q5K,
    Q6K,
    Q8K,
}

/// Elements of a classic block (Q4_0..Q8_0) and of a K-quant sub-block pair.
pub const QK: usize = 32;
/// Elements of a K-quant super-block.
pub const QK_K: usize = 256;

impl GgmlType {
    pub fn from_u32(v: u32) -> Option<Self> {
        Some(match v {
            0 => Self::F32,
            1 => Self::F16,
            2 => Self::Q4_0,
            3 => Self::Q4_1,
            6 => Self::Q5_0,
            7 => Self::Q5_1,
            8 => Self::Q8_0,
            10 => Self::Q2K,
            11 => Self::Q3K,
            12 => Self::Q4K,
            13 => Self::Q5K,
            14 => Self::Q6K,
            15 => Self::Q8K,
            30 => Self::BF16,
            _ => return None,
        })
    }

    /// The names of the supported types, for error messages.
    pub const SUPPORTED: &'static str =
        "F32, F16, BF16, Q4_0, Q4_1, Q5_0, Q5_1, Q8_0, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K, Q8_K";

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
            (16, "IQ2_XXS"),
            (17, "IQ2_XS"),
            (18, "IQ3_XXS"),
            (19, "IQ1_S"),
            (20, "IQ4_NL"),
            (21, "IQ3_S"),
            (22, "IQ2_S"),
            (23, "IQ4_XS"),
            (24, "I8"),
            (25, "I16"),
            (26, "I32"),
            (27, "I64"),
            (28, "F64"),
            (29, "IQ1_M"),
            (30, "BF16"),
            (34, "TQ1_0"),
            (35, "TQ2_0"),
        ];
        known
            .iter()
            .find(|(id, _)| *id == v)
            .map(|(_, n)| n.to_string())
            .unwrap_or_else(|| format!("ggml type {v}"))
    }

    /// The ggml name (`Q4_K`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "F32",
            Self::F16 => "F16",
            Self::BF16 => "BF16",
            Self::Q4_0 => "Q4_0",
            Self::Q4_1 => "Q4_1",
            Self::Q5_0 => "Q5_0",
            Self::Q5_1 => "Q5_1",
            Self::Q8_0 => "Q8_0",
            Self::Q2K => "Q2_K",
            Self::Q3K => "Q3_K",
            Self::Q4K => "Q4_K",
            Self::Q5K => "Q5_K",
            Self::Q6K => "Q6_K",
            Self::Q8K => "Q8_K",
        }
    }

    /// Whether the type is a block quantization (not a float type).
    pub fn is_quantized(self) -> bool {
        !matches!(self, Self::F32 | Self::F16 | Self::BF16)
    }

    /// Elements per storage block.
    pub fn block_elems(self) -> usize {
        match self {
            Self::F32 | Self::F16 | Self::BF16 => 1,
            Self::Q4_0 | Self::Q4_1 | Self::Q5_0 | Self::Q5_1 | Self::Q8_0 => QK,
            Self::Q2K | Self::Q3K | Self::Q4K | Self::Q5K | Self::Q6K | Self::Q8K => QK_K,
        }
    }

    /// Bytes per storage block.
    pub fn block_bytes(self) -> usize {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::Q4_0 => 18,
            Self::Q4_1 => 20,
            Self::Q5_0 => 22,
            Self::Q5_1 => 24,
            Self::Q8_0 => 34,
            Self::Q2K => 84,
            Self::Q3K => 110,
            Self::Q4K => 144,
            Self::Q5K => 176,
            Self::Q6K => 210,
            Self::Q8K => 292,
        }
    }

    /// Bytes of a row of `n` elements (`n` must be a multiple of `block_elems`).
    pub fn row_bytes(self, n: usize) -> usize {
        n / self.block_elems() * self.block_bytes()
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

#[inline(always)]
pub fn f16_at(b: &[u8], i: usize) -> f32 {
    f16::from_le_bytes([b[i], b[i + 1]]).to_f32()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::blocks::dequantize_row;

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
        assert_eq!(GgmlType::from_u32(12), Some(GgmlType::Q4K));
        assert_eq!(GgmlType::from_u32(20), None);
        assert_eq!(GgmlType::name_of(12), "Q4_K");
        assert_eq!(GgmlType::name_of(20), "IQ4_NL");
        assert_eq!(GgmlType::Q4_1.row_bytes(576), 18 * 20);
        assert_eq!(GgmlType::Q8_0.row_bytes(576), 18 * 34);
        assert_eq!(GgmlType::Q6K.row_bytes(1536), 6 * 210);
        // bits per weight of the K-quants, as llama.cpp states them
        let bpw = |t: GgmlType| t.block_bytes() as f64 * 8.0 / t.block_elems() as f64;
        assert_eq!(bpw(GgmlType::Q2K), 2.625);
        assert_eq!(bpw(GgmlType::Q3K), 3.4375);
        assert_eq!(bpw(GgmlType::Q4K), 4.5);
        assert_eq!(bpw(GgmlType::Q5K), 5.5);
        assert_eq!(bpw(GgmlType::Q6K), 6.5625);
    }
}
