//! Decode steps replayed from CUDA graphs against the same steps launched kernel by kernel
//! (`with_graphs(false)`): three sequences decoding (padded to the 4-row bucket), then a
//! long prefill that grows the activation buffers (the captured graph goes stale and is
//! captured again), then four sequences decoding. The inputs are teacher-forced, so both
//! runs see the same tokens; the logits of every step must agree within the bf16 bound
//! (the padded graph batch runs its GEMMs at M = 4 where the eager one runs M = 3, so the
//! summation order, not the result, may differ).

use std::sync::Arc;

use super::decode::{random_source, small_llama};
use super::*;
use ponder::backend::cuda::backend::CudaBackend;
use ponder::backend::seam::Ops;
use ponder::backend::types::{Batch, KvDtype, SeqInput};
use ponder::model::forward::Model;
use ponder::model::weights;

const BS: usize = 16;

/// One step: for each `(seq, tokens, start)`, `tokens` new rows from position `start`; seq
/// `s` owns blocks `1 + 8s .. 9 + 8s` (128 positions).
fn step(parts: &[(usize, Vec<u32>, usize)]) -> Batch {
    let mut b = Batch::default();
    for (s, toks, start) in parts {
        let table: Vec<u32> = (0..8).map(|j| (1 + 8 * s + j) as u32).collect();
        b.seqs.push(SeqInput {
            query_start: b.token_ids.len(),
            query_len: toks.len(),
            context_len: start + toks.len(),
            block_table: table.clone(),
        });
        for (i, &t) in toks.iter().enumerate() {
            let p = start + i;
            b.token_ids.push(t);
            b.positions.push(p);
            b.slot_mapping.push(table[p / BS] as usize * BS + p % BS);
        }
        b.logits_rows.push(b.token_ids.len() - 1);
    }
    b
}

fn tok(step: usize, s: usize) -> u32 {
    ((step * 31 + s * 7 + 3) % 2048) as u32
}

/// The schedule's logits, step by step, and the number of captured graph shapes.
fn run(backend: CudaBackend) -> (Vec<Vec<f32>>, usize) {
    let cfg = small_llama();
    let src = random_source(&cfg, 7, 0.15);
    let mut b = backend;
    let model = Model::new(cfg.clone(), weights::load(&b, &cfg, &src).unwrap());
    let mut kv = b.kv_cache(model.kv_shape(40, BS), KvDtype::F16).unwrap();
    let mut len = [0usize; 4];
    let mut out = Vec::new();
    let mut logits = Vec::new();
    let mut schedule: Vec<Vec<(usize, usize)>> = vec![vec![(0, 5), (1, 9), (2, 17)]];
    schedule.extend((0..6).map(|_| vec![(0, 1), (1, 1), (2, 1)]));
    schedule.push(vec![(3, 40)]);
    schedule.extend((0..6).map(|_| vec![(0, 1), (1, 1), (2, 1), (3, 1)]));
    for (k, st) in schedule.iter().enumerate() {
        let parts: Vec<(usize, Vec<u32>, usize)> = st
            .iter()
            .map(|&(s, n)| ((s), (0..n).map(|i| tok(k + i, s)).collect(), len[s]))
            .collect();
        model.forward(&mut b, &step(&parts), &mut kv, &mut logits);
        for &(s, n) in st {
            len[s] += n;
        }
        out.push(logits.clone());
    }
    (out, b.graphs_captured())
}

#[test]
fn graph_replay_matches_eager_launches() {
    let Some(dev) = device() else { return };
    let dev = Arc::new(dev);
    let (eager, none) = run(CudaBackend::new(dev.clone()).with_graphs(false));
    let (graph, captured) = run(CudaBackend::new(dev));
    assert_eq!(none, 0, "graphs off captured {none} shapes");
    assert!(captured >= 1, "no decode step was captured");
    for (k, (g, e)) in graph.iter().zip(&eager).enumerate() {
        check(&format!("graph vs eager, step {k}"), g, e, 1e-2);
    }
    println!(
        "graph replay: {} steps agree, {captured} shape(s) captured",
        graph.len()
    );
}
