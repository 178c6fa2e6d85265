//! One ggml storage block split into its integers and scales ([`Parts`]), and back. The
//! reference decoder (`blocks::dequantize_row`) and the CPU's weight packer
//! (`backend::packed`) both read blocks through this one place, so where each bit sits in a
//! block is written down once.
//!
//! Bit positions (e = element index in the block, ggml layout):
//!
//! ```text
//!  Q4_0/Q4_1   qs[e % 16], low nibble for e < 16, high nibble for e >= 16
//!  Q5_0/Q5_1   as Q4, plus bit e of qh (u32) as bit 4
//!  Q8_0/Q8_K   q[e] (the byte; the value is that byte as i8)
//!  Q2_K        n = e/128, r = e%128:  (qs[32n + r%32] >> 2(r/32)) & 3            scale/min: scales[e/16] low/high nibble
//!  Q3_K        as Q2_K for the low 2 bits, plus bit (4n + r/32) of hmask[r%32] as bit 2
//!              scales: 16 6-bit values in 12 bytes: low 4 bits of i from byte i (i < 8) or
//!              byte i-8's high nibble, top 2 bits from byte 8 + i%4, bits 2(i/4)
//!  Q4_K        qs[32(e/64) + e%32], low nibble when e%64 < 32
//!              scale/min j (6 bits each, 12 bytes): j < 4: sc = b[j] & 63, m = b[j+4] & 63;
//!              j >= 4: sc = b[j+4] & 15 | (b[j-4] >> 6) << 4, m = b[j+4] >> 4 | (b[j] >> 6) << 4
//!  Q5_K        as Q4_K, plus bit e/32 of qh[e%32] as bit 4
//!  Q6_K        n = e/128, r = e%128, k = r/32: low 4 bits from ql[64n + r%32 + 32(k&1)]
//!              (high nibble for k >= 2), top 2 bits (qh[32n + r%32] >> 2k) & 3; scale i8 [e/16]
//! ```

use half::{bf16, f16};

use super::dtype::GgmlType;

/// A block's integers and scales, as the format stores them.
#[derive(Debug, Clone, PartialEq)]
pub struct Parts {
    /// The unsigned element integers (`block_elems` of them are used): Q4: 0..15, Q5: 0..31,
    /// Q2_K: 0..3, Q3_K: 0..7 (low 2 bits + 4 x the high bit), Q6_K: 0..63, Q8_0/Q8_K: the
    /// stored byte (the value is `u as i8`).
    pub u: [u8; 256],
    /// f16 bits of `d` (unused by Q8_K).
    pub d: u16,
    /// f16 bits of `m` (Q4_1, Q5_1) or `dmin` (Q2_K, Q4_K, Q5_K).
    pub dmin: u16,
    /// Sub-block scales as stored: Q2_K 16 x 4 bits, Q3_K 16 x 6 bits (the value + 32),
    /// Q4_K/Q5_K 8 x 6 bits, Q6_K 16 x i8.
    pub sc: [u8; 16],
    /// Sub-block minimums: Q2_K 16 x 4 bits, Q4_K/Q5_K 8 x 6 bits.
    pub m: [u8; 16],
    /// f32 bits of Q8_K's `d`.
    pub d32: u32,
}

impl Default for Parts {
    fn default() -> Self {
        Parts {
            u: [0; 256],
            d: 0,
            dmin: 0,
            sc: [0; 16],
            m: [0; 16],
            d32: 0,
        }
    }
}

fn u16_at(b: &[u8], i: usize) -> u16 {
    u16::from_le_bytes([b[i], b[i + 1]])
}

/// Q4_K/Q5_K's 8 (scale, min) pairs from their 12 packed bytes.
fn k4_scales(b: &[u8]) -> ([u8; 8], [u8; 8]) {
    let (mut sc, mut m) = ([0u8; 8], [0u8; 8]);
    for j in 0..8 {
        if j < 4 {
            sc[j] = b[j] & 63;
            m[j] = b[j + 4] & 63;
        } else {
            sc[j] = (b[j + 4] & 15) | ((b[j - 4] >> 6) << 4);
            m[j] = (b[j + 4] >> 4) | ((b[j] >> 6) << 4);
        }
    }
    (sc, m)
}

/// The inverse of [`k4_scales`] (values < 64).
fn k4_pack(sc: &[u8], m: &[u8], b: &mut [u8]) {
    for j in 0..4 {
        b[j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6);
        b[j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6);
        b[j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4);
    }
}

/// Q3_K's 16 6-bit scales from their 12 packed bytes.
fn q3_scales(b: &[u8]) -> [u8; 16] {
    std::array::from_fn(|i| {
        let low = if i < 8 { b[i] & 15 } else { b[i - 8] >> 4 };
        let high = (b[8 + i % 4] >> (2 * (i / 4))) & 3;
        low | (high << 4)
    })
}

/// The inverse of [`q3_scales`] (values < 64).
fn q3_pack(sc: &[u8], b: &mut [u8]) {
    b[..12].fill(0);
    for (i, &s) in sc.iter().enumerate().take(16) {
        if i < 8 {
            b[i] |= s & 15;
        } else {
            b[i - 8] |= (s & 15) << 4;
        }
        b[8 + i % 4] |= ((s >> 4) & 3) << (2 * (i / 4));
    }
}

/// Byte and shift of element `e`'s low bits in Q2_K/Q3_K's `qs[64]`.
fn q2_at(e: usize) -> (usize, u32) {
    let (n, r) = (e / 128, e % 128);
    (32 * n + r % 32, 2 * (r / 32) as u32)
}

/// Byte of element `e` in Q4_K/Q5_K's `qs[128]`, and whether it is the high nibble.
fn k4_at(e: usize) -> (usize, bool) {
    (32 * (e / 64) + e % 32, e % 64 >= 32)
}

/// Q6_K: byte of the low 4 bits in `ql` (and whether high nibble), byte and shift in `qh`.
fn q6_at(e: usize) -> (usize, bool, usize, u32) {
    let (n, r) = (e / 128, e % 128);
    let k = r / 32;
    (
        64 * n + r % 32 + 32 * (k & 1),
        k >= 2,
        32 * n + r % 32,
        2 * k as u32,
    )
}

impl Parts {
    /// Splits block `b` (`ty.block_bytes()` bytes) of a quantized type.
    pub fn decode(ty: GgmlType, b: &[u8]) -> Parts {
        let mut p = Parts::default();
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                p.d = u16_at(b, 0);
                let with_min = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
                if with_min {
                    p.dmin = u16_at(b, 2);
                }
                let mut o = if with_min { 4 } else { 2 };
                let qh = if matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1) {
                    let v = u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
                    o += 4;
                    v
                } else {
                    0
                };
                for j in 0..16 {
                    let q = b[o + j];
                    p.u[j] = (q & 15) | (((qh >> j) & 1) as u8) << 4;
                    p.u[j + 16] = (q >> 4) | (((qh >> (j + 16)) & 1) as u8) << 4;
                }
            }
            GgmlType::Q8_0 => {
                p.d = u16_at(b, 0);
                p.u[..32].copy_from_slice(&b[2..34]);
            }
            GgmlType::Q8K => {
                p.d32 = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                p.u.copy_from_slice(&b[4..260]);
            }
            GgmlType::Q2K => {
                for (i, &v) in b[..16].iter().enumerate() {
                    p.sc[i] = v & 15;
                    p.m[i] = v >> 4;
                }
                let qs = &b[16..80];
                for e in 0..256 {
                    let (at, sh) = q2_at(e);
                    p.u[e] = (qs[at] >> sh) & 3;
                }
                p.d = u16_at(b, 80);
                p.dmin = u16_at(b, 82);
            }
            GgmlType::Q3K => {
                let (hm, qs) = (&b[0..32], &b[32..96]);
                p.sc = q3_scales(&b[96..108]);
                p.d = u16_at(b, 108);
                for e in 0..256 {
                    let (at, sh) = q2_at(e);
                    let hbit = (hm[e % 128 % 32] >> (4 * (e / 128) + (e % 128) / 32)) & 1;
                    p.u[e] = ((qs[at] >> sh) & 3) | (hbit << 2);
                }
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                p.d = u16_at(b, 0);
                p.dmin = u16_at(b, 2);
                let (sc, m) = k4_scales(&b[4..16]);
                p.sc[..8].copy_from_slice(&sc);
                p.m[..8].copy_from_slice(&m);
                let (qh, qs) = if ty == GgmlType::Q5K {
                    (Some(&b[16..48]), &b[48..176])
                } else {
                    (None, &b[16..144])
                };
                for e in 0..256 {
                    let (at, high) = k4_at(e);
                    let nib = if high { qs[at] >> 4 } else { qs[at] & 15 };
                    let hb = qh.map_or(0, |qh| (qh[e % 32] >> (e / 32)) & 1);
                    p.u[e] = nib | (hb << 4);
                }
            }
            GgmlType::Q6K => {
                let (ql, qh) = (&b[0..128], &b[128..192]);
                p.sc.copy_from_slice(&b[192..208]);
                p.d = u16_at(b, 208);
                for e in 0..256 {
                    let (l, high, h, sh) = q6_at(e);
                    let low = if high { ql[l] >> 4 } else { ql[l] & 15 };
                    p.u[e] = low | (((qh[h] >> sh) & 3) << 4);
                }
            }
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                unreachable!("Parts::decode: {ty} is not block-quantized")
            }
        }
        p
    }

    /// Writes these parts as a `ty` block into `b` (`ty.block_bytes()` bytes); the inverse of
    /// [`Parts::decode`] for every block `decode` can produce.
    pub fn encode(&self, ty: GgmlType, b: &mut [u8]) {
        b[..ty.block_bytes()].fill(0);
        match ty {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q5_0 | GgmlType::Q5_1 => {
                b[0..2].copy_from_slice(&self.d.to_le_bytes());
                let with_min = matches!(ty, GgmlType::Q4_1 | GgmlType::Q5_1);
                let mut o = 2;
                if with_min {
                    b[2..4].copy_from_slice(&self.dmin.to_le_bytes());
                    o = 4;
                }
                if matches!(ty, GgmlType::Q5_0 | GgmlType::Q5_1) {
                    let qh = (0..32).fold(0u32, |acc, e| acc | (u32::from(self.u[e] >> 4) << e));
                    b[o..o + 4].copy_from_slice(&qh.to_le_bytes());
                    o += 4;
                }
                for j in 0..16 {
                    b[o + j] = (self.u[j] & 15) | ((self.u[j + 16] & 15) << 4);
                }
            }
            GgmlType::Q8_0 => {
                b[0..2].copy_from_slice(&self.d.to_le_bytes());
                b[2..34].copy_from_slice(&self.u[..32]);
            }
            GgmlType::Q8K => {
                b[0..4].copy_from_slice(&self.d32.to_le_bytes());
                b[4..260].copy_from_slice(&self.u);
                for (i, chunk) in self.u.chunks_exact(16).enumerate() {
                    let s: i16 = chunk.iter().map(|&v| i16::from(v as i8)).sum();
                    b[260 + 2 * i..262 + 2 * i].copy_from_slice(&s.to_le_bytes());
                }
            }
            GgmlType::Q2K => {
                for (i, v) in b[..16].iter_mut().enumerate() {
                    *v = (self.sc[i] & 15) | (self.m[i] << 4);
                }
                for e in 0..256 {
                    let (at, sh) = q2_at(e);
                    b[16 + at] |= (self.u[e] & 3) << sh;
                }
                b[80..82].copy_from_slice(&self.d.to_le_bytes());
                b[82..84].copy_from_slice(&self.dmin.to_le_bytes());
            }
            GgmlType::Q3K => {
                for e in 0..256 {
                    let (at, sh) = q2_at(e);
                    b[32 + at] |= (self.u[e] & 3) << sh;
                    b[e % 128 % 32] |= ((self.u[e] >> 2) & 1) << (4 * (e / 128) + (e % 128) / 32);
                }
                q3_pack(&self.sc, &mut b[96..108]);
                b[108..110].copy_from_slice(&self.d.to_le_bytes());
            }
            GgmlType::Q4K | GgmlType::Q5K => {
                b[0..2].copy_from_slice(&self.d.to_le_bytes());
                b[2..4].copy_from_slice(&self.dmin.to_le_bytes());
                k4_pack(&self.sc[..8], &self.m[..8], &mut b[4..16]);
                let qs0 = if ty == GgmlType::Q5K { 48 } else { 16 };
                for e in 0..256 {
                    let (at, high) = k4_at(e);
                    let nib = self.u[e] & 15;
                    b[qs0 + at] |= if high { nib << 4 } else { nib };
                    if ty == GgmlType::Q5K {
                        b[16 + e % 32] |= ((self.u[e] >> 4) & 1) << (e / 32);
                    }
                }
            }
            GgmlType::Q6K => {
                for e in 0..256 {
                    let (l, high, h, sh) = q6_at(e);
                    let low = self.u[e] & 15;
                    b[l] |= if high { low << 4 } else { low };
                    b[128 + h] |= ((self.u[e] >> 4) & 3) << sh;
                }
                b[192..208].copy_from_slice(&self.sc);
                b[208..210].copy_from_slice(&self.d.to_le_bytes());
            }
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                unreachable!("Parts::encode: {ty} is not block-quantized")
            }
        }
    }

    /// The block's values (`out.len() == ty.block_elems()`), each computed in f32 in the
    /// order ggml writes it (sub-block scale first: `(d * sc) * u - dmin * m`).
    pub fn values(&self, ty: GgmlType, out: &mut [f32]) {
        let d = f16::from_bits(self.d).to_f32();
        let dmin = f16::from_bits(self.dmin).to_f32();
        for (e, o) in out.iter_mut().enumerate() {
            let u = f32::from(self.u[e]);
            *o = match ty {
                GgmlType::Q4_0 => d * (u - 8.0),
                GgmlType::Q5_0 => d * (u - 16.0),
                GgmlType::Q4_1 | GgmlType::Q5_1 => d * u + dmin,
                GgmlType::Q8_0 => d * f32::from(self.u[e] as i8),
                GgmlType::Q8K => f32::from_bits(self.d32) * f32::from(self.u[e] as i8),
                GgmlType::Q2K => {
                    let i = e / 16;
                    (d * f32::from(self.sc[i])) * u - dmin * f32::from(self.m[i])
                }
                GgmlType::Q3K => (d * (f32::from(self.sc[e / 16]) - 32.0)) * (u - 4.0),
                GgmlType::Q4K | GgmlType::Q5K => {
                    let j = e / 32;
                    (d * f32::from(self.sc[j])) * u - dmin * f32::from(self.m[j])
                }
                GgmlType::Q6K => (d * f32::from(self.sc[e / 16] as i8)) * (u - 32.0),
                GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => {
                    unreachable!("Parts::values: {ty} is not block-quantized")
                }
            };
        }
    }
}

/// `n` random blocks of `ty` with finite, modest scales (weights mostly within +-2): the
/// weights of the kernels' tests and benchmarks.
pub fn random_blocks(ty: GgmlType, n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.max(1);
    let mut next = move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    };
    let bb = ty.block_bytes();
    let mut out = vec![0u8; n * bb];
    for blk in out.chunks_exact_mut(bb) {
        for v in blk.iter_mut() {
            *v = next() as u8;
        }
        let mut p = Parts::decode(ty, blk);
        let unit = |r: u64, lo: f32, span: f32| lo + (r % 1000) as f32 * span / 1000.0;
        // Scale so that d * (largest sub-scale) * (largest integer) stays near 1.
        let d = match ty {
            GgmlType::Q2K | GgmlType::Q4K | GgmlType::Q5K => unit(next(), 0.0005, 0.002),
            GgmlType::Q3K | GgmlType::Q6K => unit(next(), 0.0002, 0.0008),
            _ => unit(next(), 0.005, 0.02),
        };
        p.d = f16::from_f32(d).to_bits();
        p.dmin = f16::from_f32(unit(next(), -0.1, 0.2)).to_bits();
        if matches!(ty, GgmlType::Q2K | GgmlType::Q4K | GgmlType::Q5K) {
            p.dmin = f16::from_f32(unit(next(), 0.0, 0.004)).to_bits();
        }
        p.d32 = unit(next(), 0.002, 0.01).to_bits();
        p.encode(ty, blk);
    }
    out
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
        _ => {
            let (be, bb) = (ty.block_elems(), ty.block_bytes());
            for (o, b) in out.chunks_exact_mut(be).zip(src.chunks_exact(bb)) {
                Parts::decode(ty, b).values(ty, o);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) const QUANTIZED: [GgmlType; 11] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::Q2K,
        GgmlType::Q3K,
        GgmlType::Q4K,
        GgmlType::Q5K,
        GgmlType::Q6K,
        GgmlType::Q8K,
    ];

    fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                s as u8
            })
            .collect()
    }

    #[test]
    fn every_block_round_trips_through_parts() {
        for ty in QUANTIZED {
            for seed in 1..20 {
                let mut b = bytes(ty.block_bytes(), seed);
                if ty == GgmlType::Q8K {
                    // bsums are derived from q: make them consistent.
                    let p = Parts::decode(ty, &b);
                    p.encode(ty, &mut b);
                }
                let p = Parts::decode(ty, &b);
                let mut back = vec![0u8; ty.block_bytes()];
                p.encode(ty, &mut back);
                assert_eq!(back, b, "{ty} seed {seed}");
            }
        }
    }

    #[test]
    fn element_integers_stay_in_their_ranges() {
        let max = |t: GgmlType| match t {
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q4K => 15,
            GgmlType::Q5_0 | GgmlType::Q5_1 | GgmlType::Q5K => 31,
            GgmlType::Q2K => 3,
            GgmlType::Q3K => 7,
            GgmlType::Q6K => 63,
            _ => 255,
        };
        for ty in QUANTIZED {
            let p = Parts::decode(ty, &bytes(ty.block_bytes(), 7));
            let n = ty.block_elems();
            assert!(p.u[..n].iter().all(|&u| u <= max(ty)), "{ty}");
            // and every value of the range occurs somewhere in 40 random blocks
            let mut seen = [false; 256];
            for seed in 1..40 {
                let p = Parts::decode(ty, &bytes(ty.block_bytes(), seed));
                for &u in &p.u[..n] {
                    seen[u as usize] = true;
                }
            }
            assert!(seen[..=max(ty) as usize].iter().all(|&s| s), "{ty}");
        }
    }

    /// Q6_K decoded by ggml's loop order (two halves of 128, 32 lanes, four values per lane)
    /// agrees with the element-wise positions above.
    #[test]
    fn q6_k_matches_the_lane_order() {
        let b = bytes(210, 3);
        let p = Parts::decode(GgmlType::Q6K, &b);
        let (ql, qh) = (&b[0..128], &b[128..192]);
        for n in 0..2 {
            for l in 0..32 {
                let (lo, hi) = (&ql[64 * n..], qh[32 * n + l]);
                let want = [
                    (lo[l] & 15) | ((hi & 3) << 4),
                    (lo[l + 32] & 15) | (((hi >> 2) & 3) << 4),
                    (lo[l] >> 4) | (((hi >> 4) & 3) << 4),
                    (lo[l + 32] >> 4) | (((hi >> 6) & 3) << 4),
                ];
                for (k, w) in want.iter().enumerate() {
                    assert_eq!(p.u[128 * n + 32 * k + l], *w, "n {n} l {l} k {k}");
                }
            }
        }
    }

    #[test]
    fn k_quant_values_by_hand() {
        // Q4_K: d = 0.5, dmin = 0.25, sub-block 0 scale 3 min 2, sub-block 5 scale 33 min 40.
        let mut p = Parts {
            d: f16::from_f32(0.5).to_bits(),
            dmin: f16::from_f32(0.25).to_bits(),
            ..Default::default()
        };
        p.sc[0] = 3;
        p.m[0] = 2;
        p.sc[5] = 33;
        p.m[5] = 40;
        p.u[0] = 7;
        p.u[5 * 32 + 1] = 15;
        let mut b = [0u8; 144];
        p.encode(GgmlType::Q4K, &mut b);
        let mut out = [0f32; 256];
        crate::backend::blocks::dequantize_row(GgmlType::Q4K, &b, &mut out);
        assert_eq!(out[0], 0.5 * 3.0 * 7.0 - 0.5);
        assert_eq!(out[1], -0.5);
        assert_eq!(out[161], 0.5 * 33.0 * 15.0 - 10.0);
        // Q3_K: scale 6-bit value 40 -> 8; u = 6 -> 2.
        let mut p = Parts {
            d: f16::from_f32(0.125).to_bits(),
            ..Default::default()
        };
        p.sc[15] = 40;
        p.u[255] = 6;
        let mut b = [0u8; 110];
        p.encode(GgmlType::Q3K, &mut b);
        crate::backend::blocks::dequantize_row(GgmlType::Q3K, &b, &mut out);
        assert_eq!(out[255], 0.125 * 8.0 * 2.0);
        // scale 0 of every other sub-block -> -32; u = 0 -> -4
        assert_eq!(out[0], 0.125 * -32.0 * -4.0);
    }
}
