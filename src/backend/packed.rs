//! The CPU's layout of block-quantized weights (Q4_0, Q4_1, Q8_0): **column groups of 16**
//! (`Cg16`). The integer GEMM (`backend::cpu::matmul_q8`) computes 16 output columns per
//! SIMD vector, so it wants the same block of 16 consecutive weight rows side by side; the
//! AMX kernel reads the unpacked bytes as a tile directly.
//!
//! ```text
//!  group g = weight rows 16g..16g+16 (rows past `rows` are zero padding), nb = cols / 32
//!  blocks; group g at byte g * nb * (SB + QB), scales of all its blocks first, then quants:
//!    scales of block b at b * SB:              quants of block b at nb * SB + b * QB:
//!    Q4_1 (SB 64): d[16] f16 | m[16] f16       Q4_1, Q4_0 (QB 256): nib[4][16][4]
//!    Q4_0, Q8_0 (SB 32): d[16] f16             Q8_0 (QB 512): q[8][16][4]
//!  nib[c][n][e] = byte 4c+e of row n's ggml block: low nibble = element 4c+e, high nibble =
//!                 element 16+4c+e (so chunk c holds the 4-element "quads" c and c+4)
//!  q[j][n][e]   = element 4j+e of row n's block (int8)
//! ```
//!
//! Scales and quants are kept apart so that every 64-byte chunk starts on a cache line (the
//! buffer is 64-byte aligned; Q4_0/Q8_0 need an even `nb`, true of every Llama/Qwen2 width):
//! a 512-bit load or an AMX tile row that straddles two lines costs two (measured: AMX tile
//! loads ran 1.7x slower misaligned).
//!
//! A 64-byte chunk is one 512-bit vector: 16 columns x 4 consecutive elements, the operand
//! shape of `vpdpbusd` (4 products per 32-bit lane) and the row shape of an AMX B tile. The
//! layout has exactly the bytes of the ggml rows (plus padding to a multiple of 16 rows), so
//! packing costs no memory beyond the copy; the row-major bytes can be rebuilt exactly
//! ([`unpack_row`]) for the embedding lookup and the CUDA upload.

use super::dtype::GgmlType;

/// Columns (weight rows) per group.
pub const GROUP: usize = 16;

/// `(SB, QB)`: bytes of one block's scales and of its quants for 16 columns, or `None` for
/// types without this layout.
pub fn block_bytes(ty: GgmlType) -> Option<(usize, usize)> {
    match ty {
        GgmlType::Q4_1 => Some((64, 256)),
        GgmlType::Q4_0 => Some((32, 256)),
        GgmlType::Q8_0 => Some((32, 512)),
        _ => None,
    }
}

/// Where a group's blocks live: `scales(b)` and `quants(b)` as offsets from the group start.
#[derive(Debug, Clone, Copy)]
pub struct GroupLayout {
    pub nb: usize,
    pub sb: usize,
    pub qb: usize,
}

impl GroupLayout {
    /// The layout of `ty` rows of `cols` values (`ty` must have a Cg16 layout).
    pub fn new(ty: GgmlType, cols: usize) -> Self {
        let (sb, qb) = block_bytes(ty).expect("GroupLayout: type has no Cg16 layout");
        GroupLayout {
            nb: cols / 32,
            sb,
            qb,
        }
    }
    /// Bytes of one group.
    pub fn group_bytes(&self) -> usize {
        self.nb * (self.sb + self.qb)
    }
    pub fn scales(&self, b: usize) -> usize {
        b * self.sb
    }
    pub fn quants(&self, b: usize) -> usize {
        self.nb * self.sb + b * self.qb
    }
}

/// Groups covering `rows`.
pub fn groups(rows: usize) -> usize {
    rows.div_ceil(GROUP)
}

/// Packs row-major ggml rows (`rows x cols`, `bytes.len() == rows * ty.row_bytes(cols)`)
/// into the Cg16 layout. Panics on a type without the layout (callers check
/// [`group_block_bytes`]).
pub fn pack(ty: GgmlType, rows: usize, cols: usize, bytes: &[u8], out: &mut [u8]) {
    let gl = GroupLayout::new(ty, cols);
    let (bb, rb) = (ty.block_bytes(), ty.row_bytes(cols));
    assert_eq!(bytes.len(), rows * rb, "pack: byte count");
    assert_eq!(
        out.len(),
        groups(rows) * gl.group_bytes(),
        "pack: output size"
    );
    out.fill(0);
    for (r, row) in bytes.chunks_exact(rb).enumerate() {
        let (g, n) = (r / GROUP, r % GROUP);
        let o = &mut out[g * gl.group_bytes()..(g + 1) * gl.group_bytes()];
        for (b, blk) in row.chunks_exact(bb).enumerate() {
            let sc = gl.scales(b);
            o[sc + 2 * n..sc + 2 * n + 2].copy_from_slice(&blk[..2]);
            let q = match ty {
                GgmlType::Q4_1 => {
                    o[sc + 32 + 2 * n..sc + 34 + 2 * n].copy_from_slice(&blk[2..4]);
                    &blk[4..]
                }
                _ => &blk[2..],
            };
            // Both layouts: chunk c = bytes 4c..4c+4 of every row, rows side by side.
            for (c, quad) in q.chunks_exact(4).enumerate() {
                let at = gl.quants(b) + c * 64 + n * 4;
                o[at..at + 4].copy_from_slice(quad);
            }
        }
    }
}

/// Bytes of the Cg16 form of a `rows x cols` matrix of `ty`.
pub fn packed_bytes(ty: GgmlType, rows: usize, cols: usize) -> usize {
    groups(rows) * GroupLayout::new(ty, cols).group_bytes()
}

/// Rebuilds the ggml bytes of row `r` (`out.len() == ty.row_bytes(cols)`).
pub fn unpack_row(ty: GgmlType, cols: usize, packed: &[u8], r: usize, out: &mut [u8]) {
    let gl = GroupLayout::new(ty, cols);
    let bb = ty.block_bytes();
    let (g, n) = (r / GROUP, r % GROUP);
    let o = &packed[g * gl.group_bytes()..(g + 1) * gl.group_bytes()];
    for (b, blk) in out.chunks_exact_mut(bb).enumerate() {
        let sc = gl.scales(b);
        blk[..2].copy_from_slice(&o[sc + 2 * n..sc + 2 * n + 2]);
        let q = match ty {
            GgmlType::Q4_1 => {
                blk[2..4].copy_from_slice(&o[sc + 32 + 2 * n..sc + 34 + 2 * n]);
                &mut blk[4..]
            }
            _ => &mut blk[2..],
        };
        for (c, quad) in q.chunks_exact_mut(4).enumerate() {
            let at = gl.quants(b) + c * 64 + n * 4;
            quad.copy_from_slice(&o[at..at + 4]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_positions_are_exact() {
        // Two Q4_1 rows of one block: row n has d = n + 1, m = 10 + n, byte j = 16n + j.
        let mut bytes = Vec::new();
        for n in 0..2u8 {
            bytes.extend_from_slice(&[n + 1, 0, 10 + n, 0]);
            bytes.extend((0..16u8).map(|j| 16 * n + j));
        }
        let mut p = vec![0xffu8; packed_bytes(GgmlType::Q4_1, 2, 32)];
        pack(GgmlType::Q4_1, 2, 32, &bytes, &mut p);
        assert_eq!(p.len(), 320);
        assert_eq!(&p[0..4], &[1, 0, 2, 0]); // d of rows 0 and 1
        assert_eq!(&p[32..36], &[10, 0, 11, 0]); // m of rows 0 and 1
        assert_eq!(&p[64..72], &[0, 1, 2, 3, 16, 17, 18, 19]); // chunk 0: bytes 0..4 per row
        assert_eq!(&p[64 + 64..64 + 68], &[4, 5, 6, 7]); // chunk 1, row 0
        assert_eq!(&p[64 + 3 * 64 + 4..64 + 3 * 64 + 8], &[28, 29, 30, 31]); // chunk 3, row 1
        assert!(
            p[72..128].iter().all(|&v| v == 0),
            "rows 2..16 are zero padding"
        );
    }

    #[test]
    fn rows_round_trip_for_every_type() {
        for ty in [GgmlType::Q4_1, GgmlType::Q4_0, GgmlType::Q8_0] {
            let (rows, cols) = (37, 96);
            let rb = ty.row_bytes(cols);
            let bytes: Vec<u8> = (0..rows * rb).map(|i| (i * 7919 % 251) as u8).collect();
            let mut p = vec![0u8; packed_bytes(ty, rows, cols)];
            pack(ty, rows, cols, &bytes, &mut p);
            let (sb, qb) = block_bytes(ty).unwrap();
            assert_eq!(p.len(), 3 * 3 * (sb + qb));
            let mut row = vec![0u8; rb];
            for r in 0..rows {
                unpack_row(ty, cols, &p, r, &mut row);
                assert_eq!(&row[..], &bytes[r * rb..(r + 1) * rb], "{ty:?} row {r}");
            }
        }
    }
}
