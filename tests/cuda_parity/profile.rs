//! GPU step profile (ignored by default; scripts/gpu-check.sh runs it with `--ignored`): each
//! op of a SmolLM2-135M-shaped decode step (hidden 576, FFN 1536, 9/3 heads of 64, vocab
//! 49152, context 512) timed alone, so the share of every op, of launch overhead and of the
//! logits download in a whole step (bench::gpu_bench) is known.
//!
//! Per op: `gpu us` = CUDA-event span of `ITERS` back-to-back launches / ITERS (when the host
//! enqueues slower than the GPU runs, this is the host's launch rate); `host us` = wall time
//! of enqueueing them / ITERS. `x step` = how many times one decode step runs the op;
//! `step us` = gpu us * x step. The table's sum is an estimate of a step without overlap.

use std::time::Instant;

use cudarc::driver::sys::CUevent_flags;

use super::*;

const ITERS: usize = 50;
const BS: usize = 16;
const CTX: usize = 512;
const H: usize = 576;
const F: usize = 1536;
const NH: usize = 9;
const NKV: usize = 3;
const HD: usize = 64;
const VOCAB: usize = 49152;
const LAYERS: usize = 30;

/// `(gpu us, host us)` per call of `f`, after one warm-up call.
fn time(dev: &GpuDevice, mut f: impl FnMut()) -> (f64, f64) {
    f();
    dev.synchronize().unwrap();
    let flags = Some(CUevent_flags::CU_EVENT_DEFAULT);
    let t0 = dev.stream.record_event(flags).unwrap();
    let w = Instant::now();
    for _ in 0..ITERS {
        f();
    }
    let host = w.elapsed().as_secs_f64() * 1e6 / ITERS as f64;
    let t1 = dev.stream.record_event(flags).unwrap();
    t1.synchronize().unwrap();
    let gpu = t0.elapsed_ms(&t1).unwrap() as f64 * 1e3 / ITERS as f64;
    (gpu, host)
}

fn row(name: &str, n: usize, (gpu, host): (f64, f64), per_step: usize, total: &mut f64) {
    *total += gpu * per_step as f64;
    println!(
        "| {name} | {n} | {gpu:.1} | {host:.1} | {per_step} | {:.0} |",
        gpu * per_step as f64
    );
}

fn dev_bf16(dev: &GpuDevice, n: usize, seed: u64) -> CudaSlice<bf16> {
    dev.upload(&to_bf16(&randf(n, seed, 0.05))).unwrap()
}

fn dev_f32(dev: &GpuDevice, n: usize, seed: u64) -> CudaSlice<f32> {
    dev.upload(&randf(n, seed, 1.0)).unwrap()
}

#[test]
#[ignore = "GPU profile: run with --ignored on a GPU machine (scripts/gpu-check.sh)"]
fn gpu_profile() {
    let Some(dev) = device() else { return };
    let (qd, kvd) = (NH * HD, NKV * HD);
    let stride = qd + 2 * kvd;
    // Launch overhead: a 1-element kernel.
    let mut one = dev_f32(&dev, 1, 1);
    let one_b = dev_f32(&dev, 1, 2);
    let t = time(&dev, || ops::add_bias(&dev, &mut one, &one_b, 1).unwrap());
    println!(
        "launch: 1-element kernel {:.1} us GPU span, {:.1} us host",
        t.0, t.1
    );
    let w_qkv = dev_bf16(&dev, stride * H, 3);
    let w_o = dev_bf16(&dev, H * qd, 4);
    let w_gu = dev_bf16(&dev, 2 * F * H, 5);
    let w_down = dev_bf16(&dev, H * F, 6);
    let w_head = dev_bf16(&dev, VOCAB * H, 7);
    let norm_w = dev.upload(&vec![1.0f32; H]).unwrap();
    let inv_freq: Vec<f64> = (0..HD / 2)
        .map(|i| 10000f64.powf(-2.0 * i as f64 / HD as f64))
        .collect();
    let inv_freq = dev.upload(&inv_freq).unwrap();
    for n in [1usize, 64, 256] {
        println!();
        println!("| op (decode, ctx {CTX}) | rows | gpu us | host us | x step | step us |");
        println!("|---|---|---|---|---|---|");
        let mut total = 0.0;
        let ids: Vec<i32> = (0..n as i32).map(|i| (i * 7919) % VOCAB as i32).collect();
        let mut x = dev_f32(&dev, n * H, 10);
        let resid = dev_f32(&dev, n * H, 11);
        let mut xn = dev_bf16(&dev, n * F.max(qd), 12);
        let mut y = dev_f32(&dev, n * (2 * F).max(stride), 13);
        let gu = dev_f32(&dev, n * 2 * F, 14);
        let mut logits = dev_f32(&dev, n * VOCAB, 15);
        let table = dev_bf16(&dev, VOCAB * H, 16);
        let t = time(&dev, || {
            let d = dev.upload(&ids).unwrap();
            ops::embedding(&dev, &mut x, &table, &d.slice(..), VOCAB, H).unwrap();
        });
        row("embed (ids upload + kernel)", n, t, 1, &mut total);
        // Per-step metadata: n sequences of CTX positions, scattered blocks.
        let per = CTX / BS;
        let blocks = n * per + 1;
        let tables: Vec<Vec<u32>> = (0..n)
            .map(|s| (0..per).map(|j| (1 + s * per + j) as u32).collect())
            .collect();
        let descs: Vec<AttnSeqDesc<'_>> = (0..n)
            .map(|s| AttnSeqDesc {
                query_start: s,
                query_len: 1,
                context_len: CTX,
                block_table: &tables[s],
            })
            .collect();
        let pos: Vec<i32> = vec![CTX as i32 - 1; n];
        let slots: Vec<i32> = (0..n)
            .map(|s| (tables[s][per - 1] as usize * BS + BS - 1) as i32)
            .collect();
        let t = time(&dev, || {
            let _p = dev.upload(&pos).unwrap();
            let _s = dev.upload(&slots).unwrap();
            let _b = AttnBatch::new(&dev, &descs, n, BS, blocks).unwrap();
        });
        row("step metadata (3 uploads)", n, t, 1, &mut total);
        let positions = dev.upload(&pos).unwrap();
        let slots_d = dev.upload(&slots).unwrap();
        let mut batch = AttnBatch::new(&dev, &descs, n, BS, blocks).unwrap();
        let mut kv = GpuKvCache::new(&dev, 1, blocks, BS, NKV, HD).unwrap();
        let t = time(&dev, || {
            ops::rmsnorm_residual(
                &dev,
                NormOut::Bf16(&mut xn.slice_mut(..n * H)),
                &mut x,
                Some(&resid),
                &norm_w,
                n,
                H,
                1e-5,
            )
            .unwrap()
        });
        row("rmsnorm + residual", n, t, 2 * LAYERS + 1, &mut total);
        for (name, w, rows, cols) in [
            ("linear qkv", &w_qkv, stride, H),
            ("linear o", &w_o, H, qd),
            ("linear gate|up", &w_gu, 2 * F, H),
            ("linear down", &w_down, H, F),
        ] {
            let t = time(&dev, || {
                linear(&dev, &xn, w, &mut y, n, rows, cols).unwrap()
            });
            row(name, n, t, LAYERS, &mut total);
        }
        let t = time(&dev, || {
            ops::rope(
                &dev,
                &mut y.slice_mut(..),
                &positions.slice(..),
                &inv_freq,
                stride,
                NH + NKV,
                HD,
                false,
            )
            .unwrap()
        });
        row("rope (q and k)", n, t, LAYERS, &mut total);
        let t = time(&dev, || {
            kv.reshape_and_cache(
                &dev,
                0,
                &y.slice(qd..),
                &y.slice(qd + kvd..),
                &slots_d.slice(..),
                stride,
            )
            .unwrap()
        });
        row("reshape_and_cache", n, t, LAYERS, &mut total);
        for (name, k) in [
            ("attention (auto partitions)", AttnKernel::Auto),
            (
                "attention, partitions of 512",
                AttnKernel::Parts { part_len: 512 },
            ),
        ] {
            let t = time(&dev, || {
                paged_attention(
                    &dev,
                    &mut xn,
                    &y.slice(..),
                    stride,
                    &kv,
                    0,
                    &mut batch,
                    NH,
                    0.125,
                    k,
                )
                .unwrap()
            });
            let per_step = if k == AttnKernel::Auto { LAYERS } else { 0 };
            row(name, n, t, per_step, &mut total);
        }
        let t = time(&dev, || {
            ops::silu_mul(&dev, NormOut::Bf16(&mut xn.slice_mut(..)), &gu, n, F).unwrap()
        });
        row("silu_mul", n, t, LAYERS, &mut total);
        let t = time(&dev, || {
            linear(&dev, &xn, &w_head, &mut logits, n, VOCAB, H).unwrap()
        });
        row("lm head", n, t, 1, &mut total);
        let t = time(&dev, || {
            let _v = dev.download(&logits).unwrap();
        });
        row("logits download, pageable (f32)", n, t, 0, &mut total);
        // What the backend does: a copy into page-locked memory, then into the sampler's Vec.
        // SAFETY: uninitialized page-locked memory, filled by the copy before it is read.
        let mut pinned = unsafe { dev.ctx.alloc_pinned_with_flags::<f32>(n * VOCAB, 0) }.unwrap();
        let mut host: Vec<f32> = Vec::with_capacity(n * VOCAB);
        let t = time(&dev, || {
            dev.stream.memcpy_dtoh(&logits, &mut pinned).unwrap();
            dev.synchronize().unwrap();
            host.clear();
            host.extend_from_slice(pinned.as_slice().unwrap());
        });
        row(
            "logits to host (page-locked, then Vec)",
            n,
            t,
            1,
            &mut total,
        );
        println!("| sum (no overlap) | {n} | | | | {total:.0} |");
    }
}
