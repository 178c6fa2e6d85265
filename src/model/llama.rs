//! Llama-family forward pass (Llama 2/3, SmolLM2, Mistral, Qwen2 with QKV bias,
//! DeepSeek-R1-Distill) over a batch that mixes prefill chunks and decodes of many sequences.
//!
//! Per layer, for all T tokens of the batch at once:
//!
//! ```text
//! x [T, h] -> rmsnorm -> qkv = x Wqkv^T (+b)  [T, qd + 2 kvd]
//!          -> rope(q, k at positions) -> cache[slot_mapping] = k, v
//!          -> paged causal attention per sequence over its block table  [T, qd]
//!          -> x += attn Wo^T
//!          -> rmsnorm -> gu = x Wgu^T [T, 2f] -> silu(g) * u [T, f] -> x += . Wdown^T
//! ```
//!
//! Logits are computed only for `logits_rows` (the last token of each sequence that samples),
//! so a 2,000-token prefill costs one LM-head row, not 2,000.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use super::config::ModelConfig;
use super::weights::LlamaWeights;
use crate::backend::cpu::attention::{paged_attention, AttnSeq, CpuKvCache, KvDtype};
use crate::backend::cpu::matmul::{linear, linear_parts};
use crate::backend::cpu::ops::{
    add_in_place, add_rmsnorm, embedding, rmsnorm, silu_mul, split_qkv_rope, Rope,
};

/// Most workers kept polling during a step (a bound on spinning threads on big machines).
const MAX_KEEPERS: usize = 63;

/// Runs its closure when dropped (also while unwinding).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Forward passes running in the process (any model), for `keep_awake`.
static ACTIVE_FORWARDS: AtomicUsize = AtomicUsize::new(0);

/// Runs the pool's pending jobs on this worker until `done` (set when the step's forward
/// pass returns), spinning between them instead of sleeping. A keeper picked up by the
/// step's own thread (`owner`, while it waits inside a join) returns at once: that thread
/// has the step to finish. Keepers run only while their forward pass is the only one in the
/// process: a keeper stolen by a worker that waits inside *another* forward pass's join
/// would hold that pass until its own finished, and two such keepers could each hold the
/// other's pass forever.
fn keep_awake(done: &AtomicBool, owner: Option<usize>) {
    if rayon::current_thread_index() == owner {
        return;
    }
    while !done.load(Ordering::Acquire) && ACTIVE_FORWARDS.load(Ordering::Acquire) == 1 {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

/// One sequence's slice of a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct SeqInput {
    /// First row of this sequence's tokens in the batch.
    pub query_start: usize,
    /// Tokens of this sequence computed in this step.
    pub query_len: usize,
    /// Tokens in the cache once this step's tokens are written.
    pub context_len: usize,
    /// Block ids covering positions `0..context_len`.
    pub block_table: Vec<u32>,
}

/// A step's work, in vLLM's flattened shape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchInput {
    /// `[T]` tokens to compute, sequence after sequence.
    pub token_ids: Vec<u32>,
    /// `[T]` position of each token in its sequence.
    pub positions: Vec<usize>,
    /// `[T]` cache slot each token's K/V is written to.
    pub slot_mapping: Vec<usize>,
    pub seqs: Vec<SeqInput>,
    /// Rows of `0..T` whose logits are returned, in this order.
    pub logits_rows: Vec<usize>,
}

impl BatchInput {
    /// A single sequence computing `tokens` at positions `start..`, with the identity-like
    /// block table `table` (tests and the one-shot CLI path).
    pub fn single(tokens: &[u32], start: usize, table: &[u32], block_size: usize) -> Self {
        let positions: Vec<usize> = (start..start + tokens.len()).collect();
        let slot_mapping = positions
            .iter()
            .map(|&p| table[p / block_size] as usize * block_size + p % block_size)
            .collect();
        BatchInput {
            token_ids: tokens.to_vec(),
            positions,
            slot_mapping,
            seqs: vec![SeqInput {
                query_start: 0,
                query_len: tokens.len(),
                context_len: start + tokens.len(),
                block_table: table.to_vec(),
            }],
            logits_rows: vec![tokens.len() - 1],
        }
    }
}

pub struct LlamaModel {
    pub cfg: ModelConfig,
    pub weights: LlamaWeights,
    rope: Rope,
    /// Activation buffers of the last step, reused by the next (taken for a step; a
    /// concurrent caller allocates its own). Sized by the largest step so far, which the
    /// scheduler bounds by `--max-num-batched-tokens` T: `T * (5 h + qd + 2 kvd + 3 f)`
    /// floats: 18 MB for SmolLM2-135M at the default T = 512, 72 MB at T = 2,048. Reusing
    /// them spares every big step its fresh pages (~15,000 page faults at T = 1,500).
    scratch: Mutex<Option<Acts>>,
}

/// One step's activations, all f32 (see `forward_in_pool` for the shapes).
#[derive(Default)]
struct Acts {
    x: Vec<f32>,
    xn: Vec<f32>,
    qkv: Vec<f32>,
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    attn: Vec<f32>,
    proj: Vec<f32>,
    gu: Vec<f32>,
    act: Vec<f32>,
}

impl LlamaModel {
    pub fn new(cfg: ModelConfig, weights: LlamaWeights) -> Self {
        let rope = Rope {
            style: cfg.rope_style,
            head_dim: cfg.head_dim,
            inv_freq: cfg.rope_inv_freq(weights.rope_freqs.as_deref()),
        };
        LlamaModel {
            cfg,
            weights,
            rope,
            scratch: Mutex::new(None),
        }
    }

    /// A KV cache of the default element type (f16).
    pub fn new_kv_cache(&self, num_blocks: usize, block_size: usize) -> CpuKvCache {
        self.new_kv_cache_dtype(num_blocks, block_size, KvDtype::default())
    }

    pub fn new_kv_cache_dtype(
        &self,
        num_blocks: usize,
        block_size: usize,
        dtype: KvDtype,
    ) -> CpuKvCache {
        CpuKvCache::with_dtype(
            self.cfg.num_layers,
            num_blocks,
            block_size,
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
            dtype,
        )
    }

    /// Runs the batch, writing its K/V into `kv`; returns logits `[logits_rows.len(), vocab]`.
    pub fn forward(&self, b: &BatchInput, kv: &mut CpuKvCache) -> Vec<f32> {
        let mut logits = Vec::new();
        self.forward_into(b, kv, &mut logits);
        logits
    }

    /// [`LlamaModel::forward`] into a reused buffer: `logits` is resized to
    /// `[logits_rows.len(), vocab]` (kept capacity, no clearing: every value is written).
    pub fn forward_into(&self, b: &BatchInput, kv: &mut CpuKvCache, logits: &mut Vec<f32>) {
        // Run the whole step on a rayon worker. Called from outside the pool, each of the
        // ~120 parallel regions of a step would wake the pool from a blocked caller, and the
        // serial work between regions would compete for the cores with the pool's spinning
        // workers (on 2 cores, perf showed ~25% of decode time in sched_yield/switches).
        // On a worker, the caller's thread sleeps once per step and the worker running the
        // step takes its share of every parallel region itself.
        //
        // The other workers are kept polling for jobs for the whole step (`keep_awake`):
        // left to rayon, an idle worker sleeps after ~30 fruitless rounds, and waking it for
        // the next of the step's ~360 parallel regions costs a futex wake and, on a VM, a
        // halted vCPU's wake-up (perf at 32 sequences: ~8% of the time in futex and
        // scheduler code, 10,000 context switches per run).
        let alone = ACTIVE_FORWARDS.fetch_add(1, Ordering::AcqRel) == 0;
        let _active = OnDrop(|| {
            ACTIVE_FORWARDS.fetch_sub(1, Ordering::AcqRel);
        });
        if rayon::current_thread_index().is_none() {
            let done = AtomicBool::new(false);
            rayon::scope(|s| {
                let owner = rayon::current_thread_index();
                let keepers = if alone {
                    rayon::current_num_threads().min(MAX_KEEPERS + 1) - 1
                } else {
                    0
                };
                for _ in 0..keepers {
                    let done = &done;
                    s.spawn(move |_| keep_awake(done, owner));
                }
                // Set however the pass ends: a panic must release the keepers too, or the
                // scope would wait for them forever instead of passing the panic on.
                let _done = OnDrop(|| done.store(true, Ordering::Release));
                self.forward_in_pool(b, kv, logits);
            });
            return;
        }
        self.forward_in_pool(b, kv, logits)
    }

    fn forward_in_pool(&self, b: &BatchInput, kv: &mut CpuKvCache, logits: &mut Vec<f32>) {
        let c = &self.cfg;
        let t = b.token_ids.len();
        let (h, hd) = (c.hidden_size, c.head_dim);
        let (nh, nkv) = (c.num_heads, c.num_kv_heads);
        let (qd, kvd, f) = (nh * hd, nkv * hd, c.intermediate_size);
        let w = &self.weights;

        // Activations, all f32, sized by T (bounded by the scheduler's token budget). Each
        // is written in full before it is read, so the last step's values left in a reused
        // buffer are never seen.
        let Acts {
            mut x,
            mut xn,
            mut qkv,
            mut q,
            mut k,
            mut v,
            mut attn,
            mut proj,
            mut gu,
            mut act,
        } = self
            .scratch
            .lock()
            .ok()
            .and_then(|mut s| s.take())
            .unwrap_or_default();
        x.resize(t * h, 0.0); // [T, h] residual stream
        xn.resize(t * h, 0.0); // [T, h] normed
        qkv.resize(t * (qd + 2 * kvd), 0.0); // [T, qd + 2kvd]
        q.resize(t * qd, 0.0); // [T, nh, hd]
        k.resize(t * kvd, 0.0); // [T, nkv, hd]
        v.resize(t * kvd, 0.0); // [T, nkv, hd]
        attn.resize(t * qd, 0.0); // [T, qd]
        proj.resize(t * h, 0.0); // [T, h]
        gu.resize(t * 2 * f, 0.0); // [T, 2f]
        act.resize(t * f, 0.0); // [T, f]

        embedding(&w.embed, &b.token_ids, &mut x);
        let seqs: Vec<AttnSeq<'_>> = b
            .seqs
            .iter()
            .map(|s| AttnSeq {
                query_start: s.query_start,
                query_len: s.query_len,
                context_len: s.context_len,
                block_table: &s.block_table,
            })
            .collect();
        let scale = 1.0 / (hd as f32).sqrt();
        // [T, rot_dim / 2] (cos, sin), shared by all layers.
        let rope_table = self.rope.table(&b.positions);
        rmsnorm(&x, &w.layers[0].attn_norm, c.rms_eps, &mut xn);
        for (l, lw) in w.layers.iter().enumerate() {
            linear_parts(&xn, &lw.qkv.parts, lw.qkv.bias.as_deref(), &mut qkv);
            split_qkv_rope(
                &self.rope,
                &rope_table,
                &qkv,
                (nh, nkv),
                &mut q,
                &mut k,
                &mut v,
            );
            kv.reshape_and_cache(l, &k, &v, &b.slot_mapping);
            paged_attention(kv, l, &q, nh, &seqs, scale, &mut attn);
            linear_parts(&attn, &lw.wo.parts, lw.wo.bias.as_deref(), &mut proj);
            add_rmsnorm(&mut x, &proj, &lw.ffn_norm, c.rms_eps, &mut xn);

            linear_parts(&xn, &lw.gate_up.parts, None, &mut gu);
            silu_mul(&gu, f, &mut act);
            linear_parts(&act, &lw.down.parts, None, &mut proj);
            // The residual add, fused with the next layer's input norm (the last layer's
            // residual is added alone: the final norm reads only the sampled rows).
            match w.layers.get(l + 1) {
                Some(next) => add_rmsnorm(&mut x, &proj, &next.attn_norm, c.rms_eps, &mut xn),
                None => add_in_place(&mut x, &proj),
            }
        }

        let r = b.logits_rows.len();
        let mut last = vec![0f32; r * h]; // [R, h]
        for (o, &row) in last.chunks_exact_mut(h).zip(&b.logits_rows) {
            o.copy_from_slice(&x[row * h..(row + 1) * h]);
        }
        let mut normed = vec![0f32; r * h];
        rmsnorm(&last, &w.final_norm, c.rms_eps, &mut normed);
        logits.resize(r * c.vocab_size, 0.0); // [R, vocab], every value written below
        linear(&normed, &w.lm_head, None, logits);
        if let Ok(mut s) = self.scratch.lock() {
            *s = Some(Acts {
                x,
                xn,
                qkv,
                q,
                k,
                v,
                attn,
                proj,
                gu,
                act,
            });
        }
    }
}
