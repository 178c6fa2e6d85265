//! GPU parity: every CUDA kernel against its CPU twin on random inputs, and a greedy decode of
//! an in-memory random Llama identical on CPU and GPU for the first 32 tokens.
//!
//! Error metric: `max |gpu - cpu| / max(max |cpu|, 1e-6)` over the output (norm-wise relative
//! error); bounds: f32 outputs < 1e-4, bf16 outputs (and anything downstream of bf16 rounding)
//! < 1e-2. Outputs are poisoned with NaN before each launch, and any NaN fails the check.
//! Without a CUDA device every test prints `SKIPPED: no CUDA device` and returns, unless
//! `PONDER_EXPECT_GPU=1` (set by scripts/gpu-check.sh), where a missing device fails them.
#![cfg(feature = "cuda")]

use cudarc::driver::CudaSlice;
use half::bf16;

use ponder::backend::blocks::dequantize_row;
use ponder::backend::cpu::attention::{
    paged_attention as cpu_attention, AttnSeq, CpuKvCache, KvDtype,
};
use ponder::backend::cpu::matmul::linear as cpu_linear;
use ponder::backend::cpu::ops::{self as cpu, Rope, RopeStyle};
use ponder::backend::cuda::attention::{paged_attention, AttnBatch, AttnKernel, AttnSeqDesc};
use ponder::backend::cuda::cuda_available;
use ponder::backend::cuda::device::GpuDevice;
use ponder::backend::cuda::gemm::linear;
use ponder::backend::cuda::kv::GpuKvCache;
use ponder::backend::cuda::ops::{self, NormOut};
use ponder::backend::cuda::weights::upload_matrix;
use ponder::backend::dtype::GgmlType;
use ponder::backend::tensor::{QMatrix, Storage};

fn device() -> Option<GpuDevice> {
    match cuda_available() {
        Err(why) if std::env::var("PONDER_EXPECT_GPU").as_deref() == Ok("1") => {
            panic!("PONDER_EXPECT_GPU=1 but there is no usable CUDA device: {why}")
        }
        Err(why) => {
            let msg = format!("!!! SKIPPED: no CUDA device ({why}) !!!");
            eprintln!("{msg}");
            println!("{msg}");
            None
        }
        Ok(_) => Some(GpuDevice::new(0).expect("a CUDA device is present but failed to open")),
    }
}

fn randf(n: usize, seed: u64, a: f32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * a
        })
        .collect()
}

/// Rounds through bf16, so both sides see the same inputs.
fn bf(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| bf16::from_f32(x).to_f32()).collect()
}

fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

fn check(what: &str, gpu: &[f32], cpu: &[f32], bound: f64) {
    assert_eq!(gpu.len(), cpu.len(), "{what}: lengths");
    assert!(
        gpu.iter().all(|v| !v.is_nan()),
        "{what}: NaN in the GPU output"
    );
    let scale = cpu
        .iter()
        .fold(0f64, |m, &v| m.max((v as f64).abs()))
        .max(1e-6);
    let err = gpu
        .iter()
        .zip(cpu)
        .fold(0f64, |m, (&g, &c)| m.max((g as f64 - c as f64).abs()));
    let rel = err / scale;
    println!("{what}: relative error {rel:.3e} (bound {bound:.0e})");
    assert!(
        rel < bound,
        "{what}: relative error {rel:.3e} >= {bound:.0e}"
    );
}

fn nan_f32(dev: &GpuDevice, n: usize) -> CudaSlice<f32> {
    dev.upload(&vec![f32::NAN; n]).unwrap()
}

fn nan_bf16(dev: &GpuDevice, n: usize) -> CudaSlice<bf16> {
    dev.upload(&vec![bf16::NAN; n]).unwrap()
}

fn down_bf16(dev: &GpuDevice, s: &CudaSlice<bf16>) -> Vec<f32> {
    dev.download(s)
        .unwrap()
        .iter()
        .map(|v| v.to_f32())
        .collect()
}

fn bf16_matrix(rows: usize, cols: usize, v: &[f32]) -> QMatrix {
    let bytes: Vec<u8> = v
        .iter()
        .flat_map(|&x| bf16::from_f32(x).to_le_bytes())
        .collect();
    QMatrix::new(GgmlType::BF16, rows, cols, Storage::Owned(bytes.into())).unwrap()
}

#[test]
fn the_check_rejects_nan_and_large_errors() {
    assert!(std::panic::catch_unwind(|| check("nan", &[f32::NAN], &[1.0], 1e-2)).is_err());
    assert!(std::panic::catch_unwind(|| check("err", &[1.1], &[1.0], 1e-2)).is_err());
    check("ok", &[1.0], &[1.0], 1e-4);
}

#[test]
fn embedding_rmsnorm_silu_parity() {
    let Some(dev) = device() else { return };
    let (t, d, vocab, f) = (7, 576, 1000, 384);
    let table = bf(&randf(vocab * d, 1, 1.0));
    let m = bf16_matrix(vocab, d, &table);
    let ids: Vec<u32> = vec![0, 999, 5, 17, 5, 300, 42];
    let mut want = vec![0f32; t * d];
    cpu::embedding(&m, &ids, &mut want);
    let g_table = upload_matrix(&dev, &m).unwrap();
    let g_ids = dev
        .upload(&ids.iter().map(|&i| i as i32).collect::<Vec<_>>())
        .unwrap();
    let mut x = nan_f32(&dev, t * d);
    ops::embedding(&dev, &mut x, &g_table, &g_ids.slice(..), vocab, d).unwrap();
    check("embedding", &dev.download(&x).unwrap(), &want, 1e-6);

    // rmsnorm with the residual add fused: x += r; out = norm(x) * w.
    let (x0, r, w) = (randf(t * d, 2, 2.0), randf(t * d, 3, 2.0), randf(d, 4, 1.5));
    let mut xs = x0.clone();
    cpu::add_in_place(&mut xs, &r);
    let mut want = vec![0f32; t * d];
    cpu::rmsnorm(&xs, &w, 1e-5, &mut want);
    let (g_r, g_w) = (dev.upload(&r).unwrap(), dev.upload(&w).unwrap());
    for bf16_out in [false, true] {
        let mut gx = dev.upload(&x0).unwrap();
        let got = if bf16_out {
            let mut o = nan_bf16(&dev, t * d);
            ops::rmsnorm_residual(
                &dev,
                NormOut::Bf16(&mut o.as_view_mut()),
                &mut gx,
                Some(&g_r),
                &g_w,
                t,
                d,
                1e-5,
            )
            .unwrap();
            down_bf16(&dev, &o)
        } else {
            let mut o = nan_f32(&dev, t * d);
            ops::rmsnorm_residual(
                &dev,
                NormOut::F32(&mut o.as_view_mut()),
                &mut gx,
                Some(&g_r),
                &g_w,
                t,
                d,
                1e-5,
            )
            .unwrap();
            dev.download(&o).unwrap()
        };
        check(
            "rmsnorm residual sum",
            &dev.download(&gx).unwrap(),
            &xs,
            1e-6,
        );
        check(
            if bf16_out {
                "rmsnorm bf16"
            } else {
                "rmsnorm f32"
            },
            &got,
            &want,
            if bf16_out { 1e-2 } else { 1e-4 },
        );
    }

    let gu = randf(t * 2 * f, 5, 6.0);
    let mut want = vec![0f32; t * f];
    cpu::silu_mul(&gu, f, &mut want);
    let g_gu = dev.upload(&gu).unwrap();
    let mut o = nan_f32(&dev, t * f);
    ops::silu_mul(&dev, NormOut::F32(&mut o.as_view_mut()), &g_gu, t, f).unwrap();
    check("silu_mul f32", &dev.download(&o).unwrap(), &want, 1e-4);
    let mut o = nan_bf16(&dev, t * f);
    ops::silu_mul(&dev, NormOut::Bf16(&mut o.as_view_mut()), &g_gu, t, f).unwrap();
    check("silu_mul bf16", &down_bf16(&dev, &o), &want, 1e-2);
}

#[test]
fn rope_parity_both_styles() {
    let Some(dev) = device() else { return };
    let (t, nh, nkv, hd) = (5, 4, 2, 64);
    let stride = (nh + 2 * nkv) * hd;
    let positions = [0usize, 1, 77, 4095, 31999];
    let inv_freq: Vec<f64> = (0..hd / 2)
        .map(|i| 1.0 / 100000f64.powf(2.0 * i as f64 / hd as f64))
        .collect();
    let g_pos = dev
        .upload(&positions.iter().map(|&p| p as i32).collect::<Vec<_>>())
        .unwrap();
    let g_inv = dev.upload(&inv_freq).unwrap();
    for style in [RopeStyle::Interleaved, RopeStyle::Neox] {
        let qkv = randf(t * stride, 6, 3.0);
        let rope = Rope {
            style,
            head_dim: hd,
            inv_freq: inv_freq.clone(),
            factor: 1.0,
        };
        let mut q: Vec<f32> = (0..t)
            .flat_map(|i| qkv[i * stride..i * stride + nh * hd].to_vec())
            .collect();
        rope.apply(&mut q, nh, &positions);
        let mut g = dev.upload(&qkv).unwrap();
        ops::rope(
            &dev,
            &mut g.slice_mut(..),
            &g_pos.slice(..),
            &g_inv,
            stride,
            nh,
            hd,
            style == RopeStyle::Neox,
        )
        .unwrap();
        let got = dev.download(&g).unwrap();
        let got_q: Vec<f32> = (0..t)
            .flat_map(|i| got[i * stride..i * stride + nh * hd].to_vec())
            .collect();
        check(&format!("rope {style:?}"), &got_q, &q, 1e-4);
        // The k and v columns were not touched.
        let rest = |v: &[f32]| {
            (0..t)
                .flat_map(|i| v[i * stride + nh * hd..(i + 1) * stride].to_vec())
                .collect::<Vec<_>>()
        };
        assert_eq!(rest(&got), rest(&qkv));
    }
}

#[test]
fn dequant_and_gemm_parity() {
    let Some(dev) = device() else { return };
    let (rows, cols) = (48, 256);
    let vals = randf(rows * cols, 7, 2.0);
    for ty in [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::Q8_0,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::BF16,
    ] {
        // Random raw blocks of the type (random scales kept finite and small).
        let bytes: Vec<u8> = match ty {
            GgmlType::F32 => vals.iter().flat_map(|v| v.to_le_bytes()).collect(),
            GgmlType::F16 => vals
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
                .collect(),
            GgmlType::BF16 => vals
                .iter()
                .flat_map(|&v| bf16::from_f32(v).to_le_bytes())
                .collect(),
            _ => {
                let nb = rows * cols / 32;
                let rnd = randf(nb * ty.block_bytes(), 8, 1.0);
                let mut b = Vec::new();
                for i in 0..nb {
                    b.extend_from_slice(
                        &half::f16::from_f32(0.01 + rnd[i].abs() * 0.05).to_le_bytes(),
                    );
                    let head = if ty == GgmlType::Q4_1 {
                        b.extend_from_slice(&half::f16::from_f32(rnd[i] * 0.3).to_le_bytes());
                        4
                    } else {
                        2
                    };
                    for j in head..ty.block_bytes() {
                        b.push(((rnd[(i * 31 + j) % rnd.len()] + 1.0) * 127.9) as u8);
                    }
                }
                b
            }
        };
        let m = QMatrix::new(ty, rows, cols, Storage::Owned(bytes.into())).unwrap();
        let mut want = vec![0f32; rows * cols];
        for r in 0..rows {
            dequantize_row(ty, m.row(r), &mut want[r * cols..(r + 1) * cols]);
        }
        let got = down_bf16(&dev, &upload_matrix(&dev, &m).unwrap());
        // bf16 of the same f32 on both sides: exact.
        check(&format!("dequant {ty:?}"), &got, &bf(&want), 1e-7);
    }

    let (m, n, k) = (9, 160, 256);
    let x = bf(&randf(m * k, 9, 1.0));
    let w = bf(&randf(n * k, 10, 1.0));
    let mut want = vec![0f32; m * n];
    cpu_linear(&x, &QMatrix::from_f32(n, k, &w), None, &mut want);
    let (gx, gw) = (
        dev.upload(&to_bf16(&x)).unwrap(),
        dev.upload(&to_bf16(&w)).unwrap(),
    );
    let mut y = nan_f32(&dev, m * n);
    linear(&dev, &gx, &gw, &mut y, m, n, k).unwrap();
    check(
        "gemm bf16 x bf16 -> f32",
        &dev.download(&y).unwrap(),
        &want,
        1e-4,
    );
}

#[test]
fn argmax_parity_lowest_index_on_ties() {
    let Some(dev) = device() else { return };
    let vocab = 49152;
    let mut logits = randf(3 * vocab, 11, 5.0);
    logits[vocab + 100] = 9.0;
    logits[vocab + 40000] = 9.0; // tie: 100 wins
    logits[2 * vocab + 7] = f32::NAN; // ignored
    let want: Vec<i32> = logits
        .chunks_exact(vocab)
        .map(|r| {
            let mut b = 0;
            for (i, &v) in r.iter().enumerate() {
                if v > r[b] || r[b].is_nan() {
                    b = i;
                }
            }
            b as i32
        })
        .collect();
    let g = dev.upload(&logits).unwrap();
    let mut out = dev.upload(&[-7i32; 3]).unwrap();
    ops::argmax(&dev, &mut out, &g, vocab).unwrap();
    assert_eq!(dev.download(&out).unwrap(), want);
}

mod attention;
mod bench;
mod decode;
mod dequant;
mod graph;
mod profile;
