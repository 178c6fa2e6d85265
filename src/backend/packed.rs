//! The CPU's layout of block-quantized weights: **column groups of 16** (`Cg16`). The
//! integer GEMM (`backend::cpu::matmul_q8`) computes 16 output columns per SIMD vector, so
//! it wants the same element of 16 consecutive weight rows side by side; the AMX kernel
//! reads the bytes as a tile directly.
//!
//! Every format is cut into 32-element blocks (a K-quant super-block of 256 is 8 of them).
//! A group holds, for its 16 columns (weight rows; rows past `rows` are zero padding), first
//! the scale records of all its super-blocks, then the quants of all its 32-blocks:
//!
//! ```text
//!  group g at byte g * (nsb * SB + nb * QB);  super-block s's record at s * SB,
//!  32-block b's quants at nsb * SB + b * QB   (nb = cols / 32, nsb = nb / SBK)
//!
//!  quants of a 32-block (QB), by the element integer's width:
//!    4 bits (Q4_0, Q4_1, Q4_K, Q2_K, Q3_K)  nib[4][16][4]                               256
//!    5 bits (Q5_0, Q5_1, Q5_K)              nib[4][16][4] | plane4[8] (u64)            320
//!    6 bits (Q6_K)                          nib[4][16][4] | plane4[8] | plane5[8]      384
//!    8 bits (Q8_0)                          q[8][16][4]                                 512
//!  nib[c][n][e]: low nibble = bits 0..4 of element 4c+e of column n, high nibble = of
//!                element 16+4c+e (chunk c holds quads c and c+4; quad j = elements 4j..4j+4)
//!  planeK[j]:    bit 4n+e = bit K of element 4j+e of column n (one bit per byte of quad j)
//!  q[j][n][e]:   the byte of element 4j+e of column n
//!
//!  scale records (16 columns each; f16 unless said; SBK = 32-blocks per record):
//!    Q4_0, Q5_0, Q8_0   SBK 1   d[16]                                                 32
//!    Q4_1, Q5_1         SBK 1   d[16] | m[16]                                          64
//!    Q4_K, Q5_K         SBK 8   d[16] | dmin[16] | sc[8][16] u8 | m[8][16] u8         320
//!    Q2_K               SBK 8   d[16] | dmin[16] | sc[16][16] u8 | m[16][16] u8       576
//!    Q3_K, Q6_K         SBK 8   d[16] | sc[16][16] i8 (Q3_K: the 6-bit value - 32)    288
//!    (K-quant sub-block scales: per 32 elements for Q4_K/Q5_K, per 16 for the others)
//! ```
//!
//! The element integers are the unsigned `u` of `backend::blocks::Parts`; Q2_K and Q3_K
//! (2 and 3 bits) sit in the 4-bit form, Q5/Q6's top bits in bit planes so that a quad is
//! rebuilt with one masked add per plane. Scales and quants are kept apart so that every
//! 64-byte chunk starts on a cache line (the buffer is 64-byte aligned; Q4_0/Q8_0 need an
//! even `nb`, true of every Llama/Qwen2 width): a 512-bit load or an AMX tile row that
//! straddles two lines costs two (measured: AMX tile loads ran 1.7x slower misaligned).
//!
//! Size against the ggml rows: the same for Q4_0/Q4_1/Q8_0/Q5_0/Q5_1 and Q6_K, +2.8% for
//! Q4_K, +2.3% for Q5_K, +33% for Q3_K and +95% for Q2_K (their 2-3 bit integers take 4
//! bits here, and their 16-element sub-blocks' scales one byte each: these rare low-bit
//! types trade memory for one kernel form). Rows are rebuilt exactly ([`unpack_row`]) for the embedding lookup and the
//! CUDA upload. Q8_K (no file stores weights in it) has no Cg16 form.

use super::blocks::Parts;
use super::dtype::GgmlType;

/// Columns (weight rows) per group.
pub const GROUP: usize = 16;

/// The Cg16 form of a type: scale record size, 32-blocks per record, quant bytes, bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Form {
    /// Bytes of one scale record (16 columns).
    pub sb: usize,
    /// 32-blocks per scale record (1, or 8 for the K-quants).
    pub sbk: usize,
    /// Bytes of one 32-block's quants (16 columns).
    pub qb: usize,
    /// Width of the element integers as stored (4, 5, 6 or 8).
    pub bits: u32,
}

/// The Cg16 form of `ty`, or `None` for types without one (floats, Q8_K).
pub fn form(ty: GgmlType) -> Option<Form> {
    let f = |sb, sbk, bits| {
        let qb = match bits {
            4 => 256,
            5 => 320,
            6 => 384,
            _ => 512,
        };
        Some(Form { sb, sbk, qb, bits })
    };
    match ty {
        GgmlType::Q4_0 => f(32, 1, 4),
        GgmlType::Q4_1 => f(64, 1, 4),
        GgmlType::Q5_0 => f(32, 1, 5),
        GgmlType::Q5_1 => f(64, 1, 5),
        GgmlType::Q8_0 => f(32, 1, 8),
        GgmlType::Q4K => f(320, 8, 4),
        GgmlType::Q5K => f(320, 8, 5),
        GgmlType::Q2K => f(576, 8, 4),
        GgmlType::Q3K => f(288, 8, 4),
        GgmlType::Q6K => f(288, 8, 6),
        _ => None,
    }
}

/// Offsets inside a scale record (16 entries each).
pub mod rec {
    /// f16 `d[16]`.
    pub const D: usize = 0;
    /// f16 `m[16]` (Q4_1, Q5_1) or `dmin[16]` (Q2_K, Q4_K, Q5_K).
    pub const M: usize = 32;
    /// Q4_K/Q5_K: u8 `sc[j][16]` and `m[j][16]` of 32-block `j` of the super-block.
    pub fn k4_sc(j: usize) -> usize {
        64 + 16 * j
    }
    pub fn k4_m(j: usize) -> usize {
        192 + 16 * j
    }
    /// Q2_K: u8 `sc[i][16]` and `m[i][16]` of 16-element sub-block `i`.
    pub fn q2_sc(i: usize) -> usize {
        64 + 16 * i
    }
    pub fn q2_m(i: usize) -> usize {
        320 + 16 * i
    }
    /// Q3_K/Q6_K: i8 `sc[i][16]` of 16-element sub-block `i`.
    pub fn k16_sc(i: usize) -> usize {
        32 + 16 * i
    }
}

/// Offsets inside a 32-block's quants.
pub mod qoff {
    /// The nibble chunks (4 x 64 bytes; 8-bit types: 8 x 64 bytes of bytes).
    pub const NIB: usize = 0;
    /// Bit plane `k` (4 or 5) of quad `j`: a u64.
    pub fn plane(k: u32, j: usize) -> usize {
        256 + 64 * (k as usize - 4) + 8 * j
    }
}

/// Where a group's records and blocks live, as offsets from the group's first byte.
#[derive(Debug, Clone, Copy)]
pub struct GroupLayout {
    /// 32-blocks per row.
    pub nb: usize,
    pub form: Form,
    /// Bytes of one block's quants (`form.qb`).
    pub qb: usize,
}

impl GroupLayout {
    /// The layout of `ty` rows of `cols` values (`ty` must have a Cg16 form).
    pub fn new(ty: GgmlType, cols: usize) -> Self {
        let form = form(ty).expect("GroupLayout: type has no Cg16 form");
        GroupLayout {
            nb: cols / 32,
            form,
            qb: form.qb,
        }
    }
    /// Scale records per group.
    pub fn nsb(&self) -> usize {
        self.nb / self.form.sbk
    }
    /// Bytes of one group.
    pub fn group_bytes(&self) -> usize {
        self.nsb() * self.form.sb + self.nb * self.qb
    }
    /// The record holding block `b`'s scales.
    pub fn record(&self, b: usize) -> usize {
        (b / self.form.sbk) * self.form.sb
    }
    pub fn quants(&self, b: usize) -> usize {
        self.nsb() * self.form.sb + b * self.qb
    }
}

/// Groups covering `rows`.
pub fn groups(rows: usize) -> usize {
    rows.div_ceil(GROUP)
}

/// Byte offset of element `e` (0..32) of column `n` in a 32-block's nibble chunks, and
/// whether it is the high nibble.
#[inline]
pub fn nib_at(n: usize, e: usize) -> (usize, bool) {
    let quad = e / 4;
    ((quad % 4) * 64 + n * 4 + e % 4, quad >= 4)
}

/// Writes column `n`'s 32 element integers `u` into a 32-block's quants `q` (the layout of
/// the module header; the bytes of column `n` start out zero).
fn put_quants(form: Form, q: &mut [u8], n: usize, u: &[u8]) {
    let lane = n * 4;
    if form.bits == 8 {
        for j in 0..8 {
            q[j * 64 + lane..j * 64 + lane + 4].copy_from_slice(&u[4 * j..4 * j + 4]);
        }
        return;
    }
    for c in 0..4 {
        for e in 0..4 {
            q[c * 64 + lane + e] = (u[4 * c + e] & 15) | ((u[16 + 4 * c + e] & 15) << 4);
        }
    }
    // Plane bits 4n..4n+4 of quad j's u64: byte n / 2, nibble n % 2.
    for k in 4..form.bits {
        for j in 0..8 {
            let bits = (0..4).fold(0u8, |b, e| b | (((u[4 * j + e] >> k) & 1) << e));
            q[qoff::plane(k, j) + n / 2] |= bits << (4 * (n % 2));
        }
    }
}

/// Column `n`'s 32 element integers from a 32-block's quants `q`.
pub fn get_quants(form: Form, q: &[u8], n: usize) -> [u8; 32] {
    std::array::from_fn(|e| {
        let (j, lane) = (e / 4, n * 4 + e % 4);
        if form.bits == 8 {
            return q[j * 64 + lane];
        }
        let (at, high) = nib_at(n, e);
        let mut v = if high { q[at] >> 4 } else { q[at] & 15 };
        for k in 4..form.bits {
            v |= (q[qoff::plane(k, j) + lane / 8] >> (lane % 8) & 1) << k;
        }
        v
    })
}

fn put16(r: &mut [u8], at: usize, n: usize, bits: u16) {
    r[at + 2 * n..at + 2 * n + 2].copy_from_slice(&bits.to_le_bytes());
}

fn get16(r: &[u8], at: usize, n: usize) -> u16 {
    u16::from_le_bytes([r[at + 2 * n], r[at + 2 * n + 1]])
}

/// Writes column `n`'s scales of one ggml block into its record `r`.
fn put_record(ty: GgmlType, r: &mut [u8], n: usize, p: &Parts) {
    put16(r, rec::D, n, p.d);
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => put16(r, rec::M, n, p.dmin),
        GgmlType::Q4K | GgmlType::Q5K => {
            put16(r, rec::M, n, p.dmin);
            for j in 0..8 {
                r[rec::k4_sc(j) + n] = p.sc[j];
                r[rec::k4_m(j) + n] = p.m[j];
            }
        }
        GgmlType::Q2K => {
            put16(r, rec::M, n, p.dmin);
            for i in 0..16 {
                r[rec::q2_sc(i) + n] = p.sc[i];
                r[rec::q2_m(i) + n] = p.m[i];
            }
        }
        GgmlType::Q3K => {
            for i in 0..16 {
                r[rec::k16_sc(i) + n] = (i32::from(p.sc[i]) - 32) as i8 as u8;
            }
        }
        GgmlType::Q6K => {
            for i in 0..16 {
                r[rec::k16_sc(i) + n] = p.sc[i];
            }
        }
        _ => {}
    }
}

/// Column `n`'s scales of one ggml block from its record `r` (the inverse of `put_record`).
fn get_record(ty: GgmlType, r: &[u8], n: usize, p: &mut Parts) {
    p.d = get16(r, rec::D, n);
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 => p.dmin = get16(r, rec::M, n),
        GgmlType::Q4K | GgmlType::Q5K => {
            p.dmin = get16(r, rec::M, n);
            for j in 0..8 {
                p.sc[j] = r[rec::k4_sc(j) + n];
                p.m[j] = r[rec::k4_m(j) + n];
            }
        }
        GgmlType::Q2K => {
            p.dmin = get16(r, rec::M, n);
            for i in 0..16 {
                p.sc[i] = r[rec::q2_sc(i) + n];
                p.m[i] = r[rec::q2_m(i) + n];
            }
        }
        GgmlType::Q3K => {
            for i in 0..16 {
                p.sc[i] = (i32::from(r[rec::k16_sc(i) + n] as i8) + 32) as u8;
            }
        }
        GgmlType::Q6K => {
            for i in 0..16 {
                p.sc[i] = r[rec::k16_sc(i) + n];
            }
        }
        _ => {}
    }
}

/// Packs row-major ggml rows (`rows x cols`, `bytes.len() == rows * ty.row_bytes(cols)`)
/// into the Cg16 layout. Panics on a type without the form (callers check [`form`]).
pub fn pack(ty: GgmlType, rows: usize, cols: usize, bytes: &[u8], out: &mut [u8]) {
    let gl = GroupLayout::new(ty, cols);
    let (bb, rb, be) = (ty.block_bytes(), ty.row_bytes(cols), ty.block_elems());
    assert_eq!(bytes.len(), rows * rb, "pack: byte count");
    assert_eq!(
        out.len(),
        groups(rows) * gl.group_bytes(),
        "pack: output size"
    );
    out.fill(0);
    let (sb, qb) = (gl.form.sb, gl.qb);
    // Groups own disjoint bytes of `out`: packed in parallel (a 1.1 GB model's 2.2 billion
    // elements would take several seconds on one core).
    use rayon::prelude::*;
    out.par_chunks_mut(gl.group_bytes())
        .enumerate()
        .for_each(|(g, o)| {
            for n in 0..GROUP.min(rows.saturating_sub(g * GROUP)) {
                let src = &bytes[(g * GROUP + n) * rb..(g * GROUP + n + 1) * rb];
                for (k, blk) in src.chunks_exact(bb).enumerate() {
                    let p = Parts::decode(ty, blk);
                    // ggml block k covers 32-blocks k * be / 32 ..; its scales go to one
                    // record.
                    let b0 = k * be / 32;
                    let r = gl.record(b0);
                    put_record(ty, &mut o[r..r + sb], n, &p);
                    for j in 0..be / 32 {
                        let q = gl.quants(b0 + j);
                        put_quants(gl.form, &mut o[q..q + qb], n, &p.u[32 * j..32 * j + 32]);
                    }
                }
            }
        });
}

/// Bytes of the Cg16 form of a `rows x cols` matrix of `ty`.
pub fn packed_bytes(ty: GgmlType, rows: usize, cols: usize) -> usize {
    groups(rows) * GroupLayout::new(ty, cols).group_bytes()
}

/// Rebuilds the ggml bytes of row `r` (`out.len() == ty.row_bytes(cols)`).
pub fn unpack_row(ty: GgmlType, cols: usize, packed: &[u8], r: usize, out: &mut [u8]) {
    let gl = GroupLayout::new(ty, cols);
    let (bb, be) = (ty.block_bytes(), ty.block_elems());
    let (g, n) = (r / GROUP, r % GROUP);
    let o = &packed[g * gl.group_bytes()..(g + 1) * gl.group_bytes()];
    for (k, blk) in out.chunks_exact_mut(bb).enumerate() {
        let mut p = Parts::default();
        let b0 = k * be / 32;
        let rr = gl.record(b0);
        get_record(ty, &o[rr..rr + gl.form.sb], n, &mut p);
        for j in 0..be / 32 {
            let q = gl.quants(b0 + j);
            p.u[32 * j..32 * j + 32].copy_from_slice(&get_quants(gl.form, &o[q..q + gl.qb], n));
        }
        p.encode(ty, blk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::blocks::random_blocks;

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
    fn bit_planes_and_k_records_are_where_the_header_says() {
        // One Q5_0 row: element 5 = 17 (nibble 1, bit 4 set), element 20 = 16.
        let mut p = Parts {
            d: 0x3c00,
            ..Default::default()
        };
        p.u[5] = 17;
        p.u[20] = 16;
        let mut blk = [0u8; 22];
        p.encode(GgmlType::Q5_0, &mut blk);
        let mut out = vec![0u8; packed_bytes(GgmlType::Q5_0, 1, 32)];
        pack(GgmlType::Q5_0, 1, 32, &blk, &mut out);
        assert_eq!(out.len(), 32 + 320);
        let q = &out[32..];
        assert_eq!(
            q[64 + 1],
            1,
            "element 5 = quad 1 lane 1, chunk 1, low nibble"
        );
        // quad 1 (elements 4..8) of column 0: lane 1 -> bit 1 of plane4's u64 for quad 1
        assert_eq!(q[qoff::plane(4, 1)], 0b10);
        // element 20 = quad 5 lane 0 -> chunk 1 high nibble 0, plane bit 0 of quad 5
        assert_eq!(q[qoff::plane(4, 5)], 1);
        // A Q4_K row of 256: column 3's sub-block 6 scale 45, min 9 at rec offsets.
        let mut k = Parts {
            d: 0x3c00,
            dmin: 0x3800,
            ..Default::default()
        };
        k.sc[6] = 45;
        k.m[6] = 9;
        let mut kb = [0u8; 144];
        k.encode(GgmlType::Q4K, &mut kb);
        let mut rows = vec![0u8; 4 * 144];
        rows[3 * 144..].copy_from_slice(&kb);
        let mut out = vec![0u8; packed_bytes(GgmlType::Q4K, 4, 256)];
        pack(GgmlType::Q4K, 4, 256, &rows, &mut out);
        assert_eq!(out.len(), 320 + 8 * 256);
        assert_eq!(out[rec::k4_sc(6) + 3], 45);
        assert_eq!(out[rec::k4_m(6) + 3], 9);
        assert_eq!(&out[rec::M + 6..rec::M + 8], &[0x00, 0x38]);
    }

    #[test]
    fn rows_round_trip_for_every_type() {
        for ty in [
            GgmlType::Q4_1,
            GgmlType::Q4_0,
            GgmlType::Q8_0,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q2K,
            GgmlType::Q3K,
            GgmlType::Q4K,
            GgmlType::Q5K,
            GgmlType::Q6K,
        ] {
            let (rows, cols) = (37, 512);
            let rb = ty.row_bytes(cols);
            let bytes = random_blocks(ty, rows * cols / ty.block_elems(), 11);
            let mut p = vec![0u8; packed_bytes(ty, rows, cols)];
            pack(ty, rows, cols, &bytes, &mut p);
            let f = form(ty).unwrap();
            assert_eq!(p.len(), 3 * (16 / f.sbk * f.sb + 16 * f.qb), "{ty}");
            let mut row = vec![0u8; rb];
            for r in 0..rows {
                unpack_row(ty, cols, &p, r, &mut row);
                assert_eq!(&row[..], &bytes[r * rb..(r + 1) * rb], "{ty} row {r}");
            }
        }
    }

    #[test]
    fn packed_sizes_against_the_ggml_rows() {
        // The header's size table, for a 4096 x 4096 matrix.
        let ratio =
            |ty: GgmlType| packed_bytes(ty, 4096, 4096) as f64 / (4096 * ty.row_bytes(4096)) as f64;
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q4_1,
            GgmlType::Q5_0,
            GgmlType::Q5_1,
            GgmlType::Q8_0,
            GgmlType::Q6K,
        ] {
            assert_eq!(ratio(ty), 1.0, "{ty}");
        }
        assert!((ratio(GgmlType::Q4K) - 1.0278).abs() < 1e-3);
        assert!((ratio(GgmlType::Q5K) - 1.0227).abs() < 1e-3);
        assert!((ratio(GgmlType::Q3K) - 1.3273).abs() < 1e-3);
        assert!((ratio(GgmlType::Q2K) - 1.9524).abs() < 1e-3);
    }
}
