//! Parity of the Q5_0/Q5_1 (`kernels/dequant.cu`) and K-quant (`kernels/dequant_k.cu`)
//! dequantization kernels with `blocks::dequantize_row`. Both sides compute the same f32
//! operations in the same order (no FMA contraction on the GPU) and round once to bf16
//! (nearest even), so the bound is **exact bf16 bits**, not a tolerance. Outputs are
//! NaN-poisoned before each launch; the block counts leave a partial last CUDA block.

use super::*;
use ponder::backend::blocks::random_blocks;

/// The types whose kernels these tests cover (the older ones are in `dequant_and_gemm_parity`).
const TYPES: [GgmlType; 8] = [
    GgmlType::Q5_0,
    GgmlType::Q5_1,
    GgmlType::Q2K,
    GgmlType::Q3K,
    GgmlType::Q4K,
    GgmlType::Q5K,
    GgmlType::Q6K,
    GgmlType::Q8K,
];

/// Random bytes (every bit pattern: scales may be NaN, inf, f16 subnormals).
fn raw_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 32) as u8
        })
        .collect()
}

/// The CPU's values of `raw` (whole blocks of `ty`), f32 and as bf16 bits.
fn cpu_values(ty: GgmlType, raw: &[u8]) -> (Vec<f32>, Vec<u16>) {
    let n = raw.len() / ty.block_bytes() * ty.block_elems();
    let mut v = vec![0f32; n];
    dequantize_row(ty, raw, &mut v);
    let bits = v.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
    (v, bits)
}

/// The GPU's bf16 bits of `raw`, through `ops::dequantize` into a NaN-poisoned buffer.
fn gpu_bits(dev: &GpuDevice, ty: GgmlType, raw: &[u8]) -> Vec<u16> {
    let n = raw.len() / ty.block_bytes() * ty.block_elems();
    let g_raw = dev.upload(raw).unwrap();
    let mut out = nan_bf16(dev, n);
    ops::dequantize(dev, &mut out, &g_raw, ty, n).unwrap();
    dev.download(&out)
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

/// Asserts equal bf16 bits (two NaNs of any payload count as equal when `nan_ok`), naming
/// the first mismatches by element, block and element-in-block.
fn assert_same_bits(what: &str, ty: GgmlType, gpu: &[u16], cpu: &[u16], nan_ok: bool) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    let is_nan = |b: u16| bf16::from_bits(b).is_nan();
    let bad: Vec<usize> = (0..cpu.len())
        .filter(|&i| gpu[i] != cpu[i] && !(nan_ok && is_nan(gpu[i]) && is_nan(cpu[i])))
        .collect();
    let be = ty.block_elems();
    let first: Vec<String> = bad
        .iter()
        .take(8)
        .map(|&i| {
            format!(
                "element {i} (block {}, e {}): gpu {:#06x} ({}) cpu {:#06x} ({})",
                i / be,
                i % be,
                gpu[i],
                bf16::from_bits(gpu[i]),
                cpu[i],
                bf16::from_bits(cpu[i])
            )
        })
        .collect();
    assert!(
        bad.is_empty(),
        "{what}: {} of {} bf16 values differ:\n{}",
        bad.len(),
        cpu.len(),
        first.join("\n")
    );
}

#[test]
fn dequant_q5_and_k_quants_bitwise() {
    let Some(dev) = device() else { return };
    for (k, ty) in TYPES.into_iter().enumerate() {
        // 1031 blocks: Q5 kernels run 1031 threads, K kernels 8248 (one per 32 elements);
        // neither is a multiple of the 256-thread CUDA block.
        let raw = random_blocks(ty, 1031, 0x5eed + k as u64);
        let (want, want_bits) = cpu_values(ty, &raw);
        let got_bits = gpu_bits(&dev, ty, &raw);
        let got: Vec<f32> = got_bits
            .iter()
            .map(|&b| bf16::from_bits(b).to_f32())
            .collect();
        check(&format!("dequant {ty}"), &got, &bf(&want), 1e-7);
        assert_same_bits(&format!("dequant {ty}"), ty, &got_bits, &want_bits, false);
    }
}

/// Arbitrary bytes, not just valid modest blocks: NaN/inf/subnormal scales, every integer
/// and scale pattern. Bits must still agree (NaN payloads aside: x86 and the GPU make
/// different NaNs).
#[test]
fn dequant_q5_and_k_quants_arbitrary_bytes() {
    let Some(dev) = device() else { return };
    for (k, ty) in TYPES.into_iter().enumerate() {
        let raw = raw_bytes(257 * ty.block_bytes(), 77 + k as u64);
        let (_, want_bits) = cpu_values(ty, &raw);
        let got_bits = gpu_bits(&dev, ty, &raw);
        assert_same_bits(
            &format!("dequant {ty} raw"),
            ty,
            &got_bits,
            &want_bits,
            true,
        );
        println!(
            "dequant {ty} arbitrary bytes: {} values, bf16 bits equal",
            want_bits.len()
        );
    }
}

/// The load path the model uses: `upload_matrix` of a `[rows, cols]` QMatrix, row-major and
/// in the CPU's Cg16 layout (which the upload unpacks on the host; 24 rows = one and a half
/// 16-row groups), equals the CPU's rows.
#[test]
fn dequant_k_quant_upload_matrix() {
    let Some(dev) = device() else { return };
    let (rows, cols) = (24, 512);
    for (k, ty) in TYPES.into_iter().enumerate() {
        let nb = rows * cols / ty.block_elems();
        let raw = random_blocks(ty, nb, 900 + k as u64);
        let m = QMatrix::new(ty, rows, cols, Storage::Owned(raw.into())).unwrap();
        let mut want = vec![0f32; rows * cols];
        for r in 0..rows {
            dequantize_row(ty, m.row(r), &mut want[r * cols..(r + 1) * cols]);
        }
        let want_bits: Vec<u16> = want.iter().map(|&x| bf16::from_f32(x).to_bits()).collect();
        for (layout, m) in [("row-major", m.clone()), ("cg16", m.to_cg16())] {
            let what = format!("upload_matrix {ty} {layout}");
            let got = dev.download(&upload_matrix(&dev, &m).unwrap()).unwrap();
            let got_f: Vec<f32> = got.iter().map(|v| v.to_f32()).collect();
            check(&what, &got_f, &bf(&want), 1e-7);
            let got_bits: Vec<u16> = got.iter().map(|v| v.to_bits()).collect();
            assert_same_bits(&what, ty, &got_bits, &want_bits, false);
        }
    }
}
