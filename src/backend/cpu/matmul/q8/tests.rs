//! Tests of the integer GEMM: the quantizer's exact values, the portable definition against
//! an f64 reference, and every SIMD kernel bitwise against the definition on every type,
//! tile shape, batch composition and activation precision.

use super::*;
use crate::backend::blocks::random_blocks;
use crate::backend::dtype::GgmlType;
use crate::backend::tensor::Storage;
use std::sync::Arc;

/// Both activation precisions.
const BITS: [ActBits; 2] = [ActBits::Twelve, ActBits::Eight];

/// Every type with a Cg16 form.
const TYPES: [GgmlType; 10] = [
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
];

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

/// A random row-major matrix with modest scales (`rows x cols`).
fn matrix(ty: GgmlType, rows: usize, cols: usize, seed: u64) -> QMatrix {
    let bytes = random_blocks(ty, rows * cols / ty.block_elems(), seed);
    QMatrix::new(ty, rows, cols, Storage::Owned(Arc::new(bytes))).unwrap()
}

fn activations(m: usize, k: usize, seed: u64) -> Vec<f32> {
    let mut next = xorshift(seed);
    let mut x: Vec<f32> = (0..m * k)
        .map(|_| (next() % 20000) as f32 / 10000.0 - 1.0)
        .collect();
    if x.len() > 40 {
        x[40] = 37.5; // an outlier channel
    }
    if x.len() >= 96 {
        x[64..96].fill(0.0); // an all-zero block
    }
    x
}

type Kernel = unsafe fn(&QActs, &QMatrix, Option<&[f32]>, Out, usize, usize);

fn run(kernel: Kernel, acts: &QActs, w: &QMatrix, bias: Option<&[f32]>) -> Vec<u32> {
    let n = w.rows;
    let mut y = vec![f32::NAN; acts.m * n];
    let out = Out {
        y: y.as_mut_ptr(),
        n,
        ld: n,
    };
    // SAFETY: w is Cg16 (callers pack it) with w.cols == acts.k; this thread writes every
    // column of y, which has m * n floats.
    unsafe { kernel(acts, w, bias, out, 0, packed::groups(n)) };
    y.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn quantization_values_are_exact() {
    // Block 0: amax 2032 / 1024 -> d = 2^-10 exactly; block 1: all zero -> d = 0, q = 0.
    let step = 1.0 / 1024.0;
    let mut x = vec![0f32; 64];
    x[0] = 2032.0 * step;
    x[1] = -2032.0 * step;
    x[2] = 1.5 * step; // ties to even: 2
    x[3] = 2.5 * step; // 2
    x[4] = 8.0 * step; // hi 1, lo -8
    x[5] = -9.0 * step; // hi -1, lo 7
    x[17] = -5.5 * step; // -6
    let mut a = QActs::default();
    quantize(&x, 64, &mut a, ActBits::Twelve);
    let q: Vec<i32> = [0, 1, 2, 3, 4, 5, 17].iter().map(|&j| a.q(0, j)).collect();
    assert_eq!(q, vec![2032, -2032, 2, 2, 8, -9, -6]);
    // Row 0, block 0: the 32 high bytes, then the 32 low bytes.
    let p = a.planes.as_i8();
    let (hi, lo) = (&p[..32], &p[LO..LO + 32]);
    assert_eq!((hi[0], lo[0], hi[1], lo[1]), (127, 0, -127, 0));
    assert_eq!((hi[4], lo[4], hi[5], lo[5]), (1, -8, -1, 7));
    assert_eq!(a.plane_at(1, 0), 64, "row 1's planes follow row 0's");
    assert_eq!(
        a.plane_at(0, 1),
        1024,
        "a block's A tile is 16 rows x 64 bytes"
    );
    assert_eq!(
        (a.d[0], a.s[0]),
        (step, 2 + 2 + 8 - 9 - 6) // +-2032 cancel
    );
    assert_eq!(a.ds[0], step * -3.0);
    let b1 = a.at(0, 1);
    assert_eq!(b1, 16, "scales are [row tile, block, 16 rows]");
    assert_eq!((a.d[b1], a.s[b1], a.ds[b1]), (0.0, 0, 0.0));
    assert!((32..64).all(|j| a.q(0, j) == 0));
    // NaN products quantize to 0 (an infinite input makes d infinite and every product NaN
    // or 0); the SIMD quantizers agree (next test).
    let mut x = vec![1.0f32; 32];
    x[3] = f32::INFINITY;
    for bits in BITS {
        quantize(&x, 32, &mut a, bits);
        assert!((0..32).all(|j| a.q(0, j) == 0), "{bits}-bit");
    }
}

#[test]
fn eight_bit_quantization_values_are_exact() {
    // d = 2^-10 as with 12 bits; q = 16 round_ties_even(x / d / 16).
    let step = 1.0 / 1024.0;
    let mut x = vec![0f32; 64];
    for (j, v) in [
        (0, 2032.0),
        (1, -2032.0),
        (2, 1.5),
        (4, 8.0),
        (5, -9.0),
        (6, 24.0),
    ] {
        x[j] = v * step;
    }
    x[7] = 40.0 * step; // 2.5 ties to even: 2
    x[17] = -5.5 * step; // 0
    x[40] = 1000.0 * step; // block 1: amax 1000 -> d = 1000 / 2032 steps, q = 2032
    let mut a = QActs::default();
    quantize(&x, 64, &mut a, ActBits::Eight);
    assert_eq!(a.bits, ActBits::Eight);
    let q: Vec<i32> = [0, 1, 2, 4, 5, 6, 7, 17, 40]
        .iter()
        .map(|&j| a.q(0, j))
        .collect();
    assert_eq!(q, vec![2032, -2032, 0, 0, -16, 32, 32, 0, 2032]);
    let p = a.planes.as_i8();
    let (hi, lo) = (&p[..32], &p[LO..LO + 32]);
    assert_eq!((hi[0], hi[1], hi[5], hi[6]), (127, -127, -1, 2));
    assert!(lo.iter().all(|&l| l == 0), "the low plane is all zeros");
    assert_eq!((a.d[0], a.s[0], a.s0[0]), (step, 48, 48));
    assert_eq!(a.ds[0], step * 48.0);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn simd_quantizers_match_the_scalar_definition() {
    let k = 256;
    let mut x = activations(1, k, 5);
    x[100] = 1e6;
    x[200] = f32::NAN;
    let quant = |f: &dyn Fn(&[f32], RowOut<'_>)| {
        let mut buf = RowBuf::new(k);
        f(&x, buf.out());
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        (buf.hi, buf.lo, bits(&buf.d), bits(&buf.ds), buf.s, buf.s0)
    };
    for bits in BITS {
        let want = quant(&|x, r| quantize_row(x, r, bits));
        if vnni::available() {
            // SAFETY: AVX-512 present; buffer sizes as required.
            let got = quant(&|x, r| unsafe { vnni::quantize_row(x, r, bits) });
            assert_eq!(want, got, "{bits}-bit");
        }
        if avx2::available() {
            // SAFETY: AVX2 present; buffer sizes as required.
            let got = quant(&|x, r| unsafe { avx2::quantize_row(x, r, bits) });
            assert_eq!(want, got, "{bits}-bit");
        }
    }
}

/// `quantize` (16-row tiles, the AVX-512 tile quantizer for tiles of 8+ rows, in parallel
/// from 32 rows) gives every row exactly what the scalar definition gives it alone, at both
/// precisions; with 8 bits every low byte the kernels would read is 0.
#[test]
fn batched_quantization_equals_the_row_definition() {
    let (m, k) = (45, 96);
    let mut x = activations(m, k, 9);
    x[5 * k + 3] = f32::NAN;
    x[20 * k + 40] = f32::INFINITY;
    x[33 * k..34 * k].fill(0.0);
    x[40 * k + 7] = -1e30;
    for bits in BITS {
        batched_quantization_case(&x, m, k, bits);
    }
}

fn batched_quantization_case(x: &[f32], m: usize, k: usize, bits: ActBits) {
    let mut a = QActs::default();
    quantize(x, k, &mut a, bits);
    for i in 0..m {
        let nb = k / 32;
        let mut buf = RowBuf::new(k);
        quantize_row(&x[i * k..(i + 1) * k], buf.out(), bits);
        let RowBuf {
            hi,
            lo,
            d,
            ds,
            s,
            s0,
        } = &buf;
        for j in 0..k {
            let want = 16 * i32::from(hi[j]) + i32::from(lo[j]);
            assert_eq!(a.q(i, j), want, "{bits}-bit row {i} element {j}");
            if bits == ActBits::Eight {
                let low = a.planes.as_i8()[a.plane_at(i, j / 32) + LO + j % 32];
                assert_eq!(low, 0, "row {i} element {j}: low byte");
            }
        }
        for b in 0..nb {
            let at = a.at(i, b);
            assert_eq!(
                (a.d[at].to_bits(), a.ds[at].to_bits(), a.s[at], a.s0[at]),
                (d[b].to_bits(), ds[b].to_bits(), s[b], s0[b]),
                "{bits}-bit row {i} block {b} scales"
            );
        }
    }
}

/// The definition against an f64 dot of the dequantized operands.
#[test]
fn portable_definition_matches_f64_reference() {
    for ty in TYPES {
        let (m, n, k) = (3, 21, 512);
        let w = matrix(ty, n, k, 11);
        let x = activations(m, k, 12);
        let mut acts = QActs::default();
        quantize(&x, k, &mut acts, ActBits::Twelve);
        let got = run(portable_rows, &acts, &w.to_cg16(), None);
        let (xq, wf) = (acts.dequantize(), w.to_f32());
        for i in 0..m {
            for j in 0..n {
                let want: f64 = (0..k)
                    .map(|t| f64::from(xq[i * k + t]) * f64::from(wf[j * k + t]))
                    .sum();
                let g = f64::from(f32::from_bits(got[i * n + j]));
                assert!(
                    (g - want).abs() <= 1e-5 * (1.0 + want.abs()),
                    "{ty} ({i},{j}): {g} vs {want}"
                );
            }
        }
    }
}

/// Q8_0 with the extremes -128 and 127 and activations at +-2032 (the largest |S|).
#[test]
fn q8_0_extremes_are_exact_in_every_kernel() {
    let mut row = Vec::new();
    for blk in 0..2 {
        row.extend_from_slice(&half::f16::from_f32(0.5).to_le_bytes());
        for j in 0..32u8 {
            let v: i8 = match (blk, j % 2) {
                (0, 0) => -128,
                (0, _) => 127,
                _ => -128,
            };
            row.push(v as u8);
        }
    }
    let w = QMatrix::new(GgmlType::Q8_0, 1, 64, Storage::Owned(Arc::new(row))).unwrap();
    let wp = w.to_cg16();
    // x = -1.27 / 1.27 alternating in block 0 (q = -2032 / 2032), -1.27 in block 1.
    let x: Vec<f32> = (0..64)
        .map(|j| if j < 32 && j % 2 == 1 { 1.27 } else { -1.27 })
        .collect();
    let mut acts = QActs::default();
    quantize(&x, 64, &mut acts, ActBits::Twelve);
    // S0 = 16 * (128 + 127) * 2032, S1 = 32 * 128 * 2032; both exact in i32 and f32.
    let d = 1.27f32 / 2032.0;
    let s0 = (16 * 255 * 2032) as f32;
    let s1 = (32 * 128 * 2032) as f32;
    let want = s1.mul_add(0.5 * d, s0.mul_add(0.5 * d, 0.0));
    let got = run(portable_rows, &acts, &wp, None);
    assert_eq!(f32::from_bits(got[0]), want);
    #[cfg(target_arch = "x86_64")]
    for (name, kernel, ok) in simd_kernels() {
        if ok {
            assert_eq!(run(kernel, &acts, &wp, None), got, "{name}");
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn simd_kernels() -> [(&'static str, Kernel, bool); 4] {
    [
        ("vnni", vnni::rows as Kernel, vnni::available()),
        ("avx2", avx2::rows as Kernel, avx2::available()),
        ("amx", amx::rows as Kernel, amx::available()),
        // The AMX kernel on the emulated tile unit: its unpacking, pipeline and fold on
        // every AVX-512 CPU.
        ("amx-emu", amx::emu::rows as Kernel, vnni::available()),
    ]
}

/// Every SIMD kernel gives the definition's bits on every type and tile shape (AMX: full
/// and partial 16-row tiles, several row blocks), with and without bias and with a partial
/// last column group, at both activation precisions (8-bit: VNNI row tiles of 8, 4, 3, 2
/// and 1); and a row's result does not depend on its batch.
#[cfg(target_arch = "x86_64")]
#[test]
fn simd_kernels_are_bitwise_the_definition() {
    for (ty, bits) in TYPES.into_iter().flat_map(|t| BITS.map(|b| (t, b))) {
        let kb = ty.block_elems().max(64);
        for &(m, n, kk) in &[
            (1, 16, 1),
            (5, 7, 3),
            (9, 40, 2),
            (2, 33, 1),
            (14, 16, 1),
            (17, 16, 3),
            (33, 18, 1),
        ] {
            let k = kb * kk;
            let w = matrix(ty, n, k, 1000 + m as u64).to_cg16();
            let x = activations(m, k, 77);
            let mut acts = QActs::default();
            quantize(&x, k, &mut acts, bits);
            let bias: Vec<f32> = (0..n).map(|i| i as f32 * 0.25).collect();
            for b in [None, Some(&bias[..])] {
                let want = run(portable_rows, &acts, &w, b);
                for (name, kernel, ok) in simd_kernels() {
                    if ok {
                        let got = run(kernel, &acts, &w, b);
                        assert_eq!(got, want, "{name} {ty} {bits}-bit {m}x{n}x{k}");
                    }
                }
            }
            let mut one = QActs::default();
            quantize(&x[(m - 1) * k..], k, &mut one, bits);
            let alone = run(rows, &one, &w, None);
            let batch = run(rows, &acts, &w, None);
            assert_eq!(
                &batch[(m - 1) * n..],
                &alone[..],
                "{ty} {bits}-bit {m}x{n}x{k} last row alone"
            );
        }
    }
}

/// Enough rows for AMX's 256-row blocks: a 300-row batch, bitwise the definition (on the
/// real tile unit where there is one, and on the emulated one).
#[cfg(target_arch = "x86_64")]
#[test]
fn amx_row_blocks_are_bitwise_the_definition() {
    if !vnni::available() {
        eprintln!("SKIPPED: no AVX-512 VNNI on this CPU (the AMX kernel's fold needs it)");
        return;
    }
    let (m, n) = (300, 32);
    for ty in [GgmlType::Q4_1, GgmlType::Q8_0, GgmlType::Q6K, GgmlType::Q3K] {
        let k = ty.block_elems().max(64);
        let w = matrix(ty, n, k, 5).to_cg16();
        let x = activations(m, k, 6);
        let mut acts = QActs::default();
        quantize(&x, k, &mut acts, ActBits::Twelve);
        let want = run(portable_rows, &acts, &w, None);
        assert_eq!(run(amx::emu::rows, &acts, &w, None), want, "{ty} emulated");
        if amx::available() {
            assert_eq!(run(amx::rows, &acts, &w, None), want, "{ty}");
        }
    }
}
