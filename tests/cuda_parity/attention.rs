//! Parity of reshape_and_cache, copy_blocks and the three paged-attention kernels (prefill,
//! decode, split-K decode) against `backend::cpu::attention`, over scattered block tables,
//! GQA, and chunked prefill (queries that start mid-context).

use super::*;

const BS: usize = 16;
/// Cache blocks; 127 = NB - 1 is prime, so `b * 37 % 127 + 1` permutes 1..NB.
const NB: usize = 128;

struct Case {
    /// (context_len, query_len) per sequence.
    seqs: Vec<(usize, usize)>,
}

/// Fills both caches with the same bf16-exact K/V for every position of every sequence
/// (positions before the query were "computed earlier"), then runs attention for the
/// queries on both and compares. Returns nothing; panics on mismatch.
fn run_case(
    dev: &GpuDevice,
    case: &Case,
    kernel: AttnKernel,
    nh: usize,
    nkv: usize,
    hd: usize,
    label: &str,
) {
    let kv_row = nkv * hd;
    let mut cpu_cache = CpuKvCache::with_dtype(1, NB, BS, nkv, hd, KvDtype::F32);
    let mut gpu_cache = GpuKvCache::new(dev, 1, NB, BS, nkv, hd).unwrap();
    // Scattered tables: sequence i uses blocks from a shuffled list, never block 0.
    let mut free: Vec<u32> = (1..NB as u32)
        .rev()
        .map(|b| (b * 37) % (NB as u32 - 1) + 1)
        .collect();
    free.dedup();
    let needed: usize = case.seqs.iter().map(|s| s.0.div_ceil(BS)).sum::<usize>() + 2;
    assert!(
        needed <= free.len(),
        "{label}: the case needs {needed} blocks, the cache has {}",
        free.len()
    );
    let mut tables = Vec::new();
    for &(ctx, _) in &case.seqs {
        let n = ctx.div_ceil(BS);
        tables.push(free.drain(..n).collect::<Vec<u32>>());
    }
    // All K/V rows of every position, written through reshape_and_cache on both sides.
    let mut slots = Vec::new();
    for (i, &(ctx, _)) in case.seqs.iter().enumerate() {
        for p in 0..ctx {
            slots.push(tables[i][p / BS] as usize * BS + p % BS);
        }
    }
    let n = slots.len();
    let stride = 2 * kv_row; // rows of [k | v], like the k/v columns of a fused qkv row
    let kvrows = bf(&randf(n * stride, 21, 1.5));
    let (k, v): (Vec<f32>, Vec<f32>) = (
        (0..n)
            .flat_map(|t| kvrows[t * stride..t * stride + kv_row].to_vec())
            .collect(),
        (0..n)
            .flat_map(|t| kvrows[t * stride + kv_row..(t + 1) * stride].to_vec())
            .collect(),
    );
    cpu_cache.reshape_and_cache(0, &k, &v, &slots);
    let g_rows = dev.upload(&kvrows).unwrap();
    let g_slots = dev
        .upload(&slots.iter().map(|&s| s as i32).collect::<Vec<_>>())
        .unwrap();
    gpu_cache
        .reshape_and_cache(
            dev,
            0,
            &g_rows.slice(..),
            &g_rows.slice(kv_row..),
            &g_slots.slice(..),
            stride,
        )
        .unwrap();
    let (ck, cv) = cpu_cache.slot_rows_f32(0);
    let cpu_all: Vec<f32> = ck.iter().chain(&cv).copied().collect();
    check(
        &format!("{label}: reshape_and_cache"),
        &down_bf16(dev, gpu_cache.data()),
        &cpu_all,
        1e-7,
    );

    // Queries.
    let t: usize = case.seqs.iter().map(|s| s.1).sum();
    let q = randf(t * nh * hd, 22, 1.0);
    let mut starts = Vec::new();
    let mut acc = 0;
    for &(_, ql) in &case.seqs {
        starts.push(acc);
        acc += ql;
    }
    let cpu_seqs: Vec<AttnSeq<'_>> = case
        .seqs
        .iter()
        .enumerate()
        .map(|(i, &(ctx, ql))| AttnSeq {
            query_start: starts[i],
            query_len: ql,
            context_len: ctx,
            block_table: &tables[i],
        })
        .collect();
    let scale = 1.0 / (hd as f32).sqrt();
    let mut want = vec![f32::NAN; t * nh * hd];
    cpu_attention(&cpu_cache, 0, &q, nh, &cpu_seqs, scale, None, &mut want);
    let descs: Vec<AttnSeqDesc<'_>> = cpu_seqs
        .iter()
        .map(|s| AttnSeqDesc {
            query_start: s.query_start,
            query_len: s.query_len,
            context_len: s.context_len,
            block_table: s.block_table,
        })
        .collect();
    let mut batch = AttnBatch::new(dev, &descs, t, BS, NB).unwrap();
    let gq = dev.upload(&q).unwrap();
    let mut out = nan_bf16(dev, t * nh * hd);
    paged_attention(
        dev,
        &mut out,
        &gq.slice(..),
        nh * hd,
        &gpu_cache,
        0,
        &mut batch,
        nh,
        scale,
        kernel,
    )
    .unwrap();
    check(
        &format!("{label}: attention {kernel:?}"),
        &down_bf16(dev, &out),
        &want,
        1e-2,
    );

    // Copy-on-write of two blocks, compared with the CPU cache after the same copies.
    let spare: Vec<u32> = free.drain(..2).collect();
    let pairs = [
        (tables[0][0], spare[0]),
        (tables[0][tables[0].len() - 1], spare[1]),
    ];
    for &(s, d) in &pairs {
        cpu_cache.copy_block(s, d);
    }
    gpu_cache.copy_blocks(dev, &pairs).unwrap();
    let (ck, cv) = cpu_cache.slot_rows_f32(0);
    let cpu_all: Vec<f32> = ck.iter().chain(&cv).copied().collect();
    check(
        &format!("{label}: copy_blocks"),
        &down_bf16(dev, gpu_cache.data()),
        &cpu_all,
        1e-7,
    );
}

#[test]
fn prefill_attention_chunked_gqa() {
    let Some(dev) = device() else { return };
    // A fresh prefill, a chunk continuing at position 40, and a decode row in one batch.
    let case = Case {
        seqs: vec![(37, 37), (70, 30), (129, 1)],
    };
    run_case(&dev, &case, AttnKernel::Auto, 8, 2, 64, "prefill hd64");
    let parts = AttnKernel::Parts { part_len: 16 };
    run_case(&dev, &case, parts, 8, 2, 64, "prefill hd64 parts of 16");
    run_case(
        &dev,
        &case,
        AttnKernel::Auto,
        4,
        4,
        128,
        "prefill hd128 mha",
    );
    run_case(&dev, &case, parts, 4, 4, 128, "prefill hd128 parts of 16");
    // head_dim 80: a K row is not a whole number of 64-dim passes.
    run_case(&dev, &case, AttnKernel::Auto, 6, 2, 80, "prefill hd80");
    // Qwen2.5-0.5B's group of 7 query heads per KV head; 16 per KV head (two blocks of 8).
    run_case(&dev, &case, AttnKernel::Auto, 14, 2, 64, "prefill 14/2");
    run_case(&dev, &case, parts, 32, 2, 128, "prefill 32/2 parts of 16");
}

#[test]
fn decode_attention_single_pass_and_split() {
    let Some(dev) = device() else { return };
    let case = Case {
        seqs: vec![(1, 1), (17, 1), (300, 1), (700, 1)],
    };
    for (kernel, label) in [
        (AttnKernel::Auto, "decode auto"),
        (AttnKernel::Parts { part_len: 64 }, "decode parts of 64"),
        (AttnKernel::Parts { part_len: 512 }, "decode parts of 512"),
        (AttnKernel::Parts { part_len: 1 }, "decode parts of 1"),
    ] {
        run_case(&dev, &case, kernel, 9, 3, 64, label);
    }
    run_case(&dev, &case, AttnKernel::Auto, 2, 1, 256, "decode hd256");
}

/// The partition length Auto picks: halved until the device has BLOCKS_PER_SM blocks per
/// multiprocessor, MIN_PART is reached or a row would have more than MAX_PARTS partitions; heads per block: the largest divisor of the GQA
/// group up to 8 (pure host arithmetic: runs without a GPU).
#[test]
fn auto_partition_length_and_head_groups() {
    use ponder::backend::cuda::attention::{auto_part_len, heads_per_block};
    // Batch-1 decode of 3 head groups at context 512 on 132 SMs: 3 blocks at 512 -> 96 at 16.
    assert_eq!(auto_part_len(1, 3, 512, 132), 16);
    // 128 rows of 3 groups: 384 blocks >= 264 already at 512.
    assert_eq!(auto_part_len(128, 3, 512, 132), 512);
    // 4 rows of 14 groups at 4096: 56 * 8 = 448 blocks at 512.
    assert_eq!(auto_part_len(4, 14, 4096, 132), 512);
    // 2 rows of 14 groups at 1024: 56 at 512, 112 at 256, 224 at 128, 448 at 64.
    assert_eq!(auto_part_len(2, 14, 1024, 132), 64);
    // A short context stops at MIN_PART: 1 row, 1 group, 40 positions -> 3 parts of 16.
    assert_eq!(auto_part_len(1, 1, 40, 132), 16);
    // A long one stops at MAX_PARTS: 1 row of 2 groups at 4096 -> 32 parts of 128 (64 blocks).
    assert_eq!(auto_part_len(1, 2, 4096, 132), 128);
    // Beyond MAX_PARTS * MAX_PART positions the parts stay 512 long.
    assert_eq!(auto_part_len(1, 2, 32768, 132), 512);
    assert_eq!(auto_part_len(2, 14, 1024, 16), 512);
    // SmolLM2 9/3, Qwen2.5-0.5B 14/2, Qwen2.5-1.5B 12/2, MHA, 64/4 (16 per KV head), 11/1.
    assert_eq!(heads_per_block(9, 3), 3);
    assert_eq!(heads_per_block(14, 2), 7);
    assert_eq!(heads_per_block(12, 2), 6);
    assert_eq!(heads_per_block(4, 4), 1);
    assert_eq!(heads_per_block(64, 4), 8);
    assert_eq!(heads_per_block(11, 1), 1);
}
