//! Property test of the scheduler driving a deterministic fake model over a shadow
//! paged KV memory, with random arrivals, n > 1 groups, cancellations, early stops,
//! tiny token budgets (chunked prefill), prompt-token caps beside decodes
//! (`set_prefill_cap`) and a small block pool (preemptions).
//!
//! The fake model stores `(token, position)` in each KV slot it writes; sampling a
//! row reads the whole context back through the row's block table and draws
//! `next = H(sample index, context) % VOCAB`. So any wrong block sharing, missing
//! copy-on-write, stale prefix hit, lost or duplicated token changes the output.
//!
//! Checked: each step respects the budget and `max_num_seqs`, row tokens equal the
//! sequence's own tokens at those positions, scheduler and KV invariants hold after
//! `schedule` and after `update_from_output`; every sample that runs to completion
//! produces EXACTLY the tokens it produces when run alone, stopped ones a prefix of
//! them; at the end every block is free.

use std::collections::HashMap;

use ponder::kv::{KvConfig, SeqId};
use ponder::sched::{SchedConfig, SchedError, SchedStats, Scheduler, SeqGroupRequest};
use proptest::prelude::*;

const VOCAB: u32 = 12;
const EOS: u32 = 0;

fn next_token(sample: usize, ctx: &[u32]) -> u32 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ sample as u64;
    for &t in ctx {
        h = (h ^ u64::from(t)).wrapping_mul(0x100_0000_01b3);
        h ^= h >> 29;
    }
    (h % u64::from(VOCAB)) as u32
}

/// The tokens sample `sample` generates when it runs alone.
fn reference(prompt: &[u32], sample: usize, max_tokens: usize) -> Vec<u32> {
    let mut ctx = prompt.to_vec();
    let mut out = Vec::new();
    while out.len() < max_tokens {
        let t = next_token(sample, &ctx);
        ctx.push(t);
        out.push(t);
        if t == EOS {
            break;
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Req {
    arrive_at: usize,
    prompt: Vec<u32>,
    n: usize,
    max_tokens: usize,
    priority: i32,
    cancel_at: Option<usize>,
    /// Stop sample `.0` once it has `.1` tokens (0: before it starts).
    early_stop: Option<(usize, usize)>,
}

fn req() -> impl Strategy<Value = Req> {
    (
        0usize..30,
        // A shared stem makes prefix-cache hits likely.
        (0usize..3, prop::collection::vec(1u32..4, 1..20)),
        1usize..5,
        1usize..12,
        -2i32..3,
        prop::option::weighted(0.15, 0usize..60),
        prop::option::weighted(0.2, (0usize..4, 0usize..6)),
    )
        .prop_map(
            |(arrive_at, (stem, tail), n, max_tokens, priority, cancel_at, early_stop)| {
                let mut prompt: Vec<u32> = (0..stem as u32 * 4).map(|i| 1 + i % 3).collect();
                prompt.extend(tail);
                Req {
                    arrive_at,
                    prompt,
                    n,
                    max_tokens,
                    priority,
                    cancel_at,
                    early_stop,
                }
            },
        )
}

#[derive(Debug, PartialEq)]
enum End {
    Done,
    Stopped,
}

fn run(
    reqs: &[Req],
    cfg: SchedConfig,
    kv: KvConfig,
    prefill_cap: Option<usize>,
) -> Result<(SchedStats, u64), TestCaseError> {
    let bs = kv.block_size;
    let mut s = Scheduler::new(cfg.clone(), &kv).unwrap();
    s.set_prefill_cap(prefill_cap);
    let mut mem: Vec<Option<(u32, usize)>> = vec![None; kv.num_blocks * bs];
    let mut who: HashMap<SeqId, (usize, usize)> = HashMap::new(); // seq -> (req, sample)
    let mut shadow: HashMap<SeqId, Vec<u32>> = HashMap::new();
    let mut ended: HashMap<(usize, usize), (End, Vec<u32>)> = HashMap::new();
    let mut pending: Vec<usize> = Vec::new();
    let mut added = vec![false; reqs.len()];
    let mut step = 0;
    loop {
        pending.extend((0..reqs.len()).filter(|&i| reqs[i].arrive_at == step));
        let mut still = Vec::new();
        for i in pending.drain(..) {
            let r = &reqs[i];
            let g = SeqGroupRequest {
                request_id: i as u64,
                prompt: r.prompt.clone(),
                n: r.n,
                priority: r.priority,
                arrival: i as u64,
                // Every third request poses as a later wave (ranked), the rest are new.
                continuation: (i % 3 == 0).then_some((i % 5) as u32),
                // and some of those as urgent ones.
                urgent: i % 6 == 0,
            };
            match s.add_group(g) {
                Ok(ids) => {
                    added[i] = true;
                    for (k, &id) in ids.iter().enumerate() {
                        who.insert(id, (i, k));
                        shadow.insert(id, r.prompt.clone());
                    }
                    if let Some((k, 0)) = r.early_stop.filter(|&(k, _)| k < r.n) {
                        s.finish_seq(ids[k]).unwrap();
                        ended.insert((i, k), (End::Stopped, vec![]));
                    }
                }
                Err(SchedError::QueueFull { .. }) => still.push(i),
                Err(e) => return Err(TestCaseError::fail(format!("add_group: {e}"))),
            }
        }
        pending = still;
        for (i, r) in reqs.iter().enumerate() {
            if r.cancel_at == Some(step) && added[i] {
                for sid in s.request_seqs(i as u64).unwrap_or(&[]).to_vec() {
                    let out = s.seq_output(sid).unwrap().to_vec();
                    ended.insert(who[&sid], (End::Stopped, out));
                }
                s.abort_request(i as u64);
            }
        }
        if pending.is_empty() && !s.has_unfinished() && reqs.iter().all(|r| r.arrive_at < step) {
            break;
        }
        prop_assert!(step < 20_000, "no progress");
        step += 1;

        // Schedule.
        let out = s.schedule();
        s.check_invariants().map_err(TestCaseError::fail)?;
        prop_assert!(out.num_batched_tokens <= cfg.max_num_batched_tokens);
        prop_assert!(out.seqs.len() <= cfg.max_num_seqs);
        for r in &out.seqs {
            let toks = &shadow[&r.seq_id];
            prop_assert_eq!(&r.token_ids[..], &toks[r.start_pos..r.context_len()]);
            prop_assert!(!out.preempted.contains(&r.seq_id));
        }
        // Fake forward: copies, then all writes, then all reads.
        for &(src, dst) in &out.copy_ops {
            let (a, b) = (src as usize * bs, dst as usize * bs);
            mem.copy_within(a..a + bs, b);
        }
        let layout = out.batch_layout();
        for ((&slot, &t), &p) in layout
            .slot_mapping
            .iter()
            .zip(&layout.token_ids)
            .zip(&layout.positions)
        {
            mem[slot] = Some((t, p));
        }
        let mut sampled = Vec::new();
        for r in out.seqs.iter().filter(|r| !r.sample_for.is_empty()) {
            let ctx: Vec<u32> = (0..r.context_len())
                .map(|p| {
                    let slot = r.block_table[p / bs] as usize * bs + p % bs;
                    match mem[slot] {
                        Some((t, q)) if q == p => t,
                        other => panic!("seq {} pos {p}: slot {slot} holds {other:?}", r.seq_id),
                    }
                })
                .collect();
            prop_assert_eq!(&ctx[..], &shadow[&r.seq_id][..r.context_len()]);
            for &sid in &r.sample_for {
                let t = next_token(who[&sid].1, &ctx);
                sampled.push((sid, t));
                let mut toks = ctx.clone();
                toks.push(t);
                shadow.insert(sid, toks);
            }
        }
        s.update_from_output(&out, &sampled);
        s.check_invariants().map_err(TestCaseError::fail)?;

        // Engine: stop conditions.
        for &(sid, t) in &sampled {
            let (i, k) = who[&sid];
            let r = &reqs[i];
            let gen = s.seq_output(sid).unwrap().to_vec();
            prop_assert_eq!(s.seq_tokens(sid).unwrap(), &shadow[&sid][..]);
            let end = if t == EOS || gen.len() == r.max_tokens {
                End::Done
            } else if r.early_stop == Some((k, gen.len())) {
                End::Stopped
            } else {
                continue;
            };
            prop_assert_eq!(s.finish_seq(sid), Some(shadow[&sid].clone()));
            prop_assert!(ended.insert((i, k), (end, gen)).is_none(), "finished twice");
        }
    }

    for (i, r) in reqs.iter().enumerate() {
        for k in 0..r.n {
            let expect = reference(&r.prompt, k, r.max_tokens);
            match ended.get(&(i, k)) {
                Some((End::Done, got)) => prop_assert_eq!(got, &expect, "req {} sample {}", i, k),
                Some((End::Stopped, got)) => prop_assert_eq!(&got[..], &expect[..got.len()]),
                None => prop_assert!(false, "req {} sample {} never finished", i, k),
            }
        }
    }
    let kvm = s.kv();
    prop_assert_eq!(kvm.num_used_blocks(), 0);
    prop_assert_eq!(kvm.num_free_blocks(), kvm.capacity());
    Ok((s.stats().clone(), kvm.stats().prefix_cache_hits))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_request_gets_exactly_its_solo_tokens(
        reqs in prop::collection::vec(req(), 1..20),
        bs in 1usize..6,
        extra_blocks in 0usize..8,
        budget in 1usize..40,
        max_num_seqs in 4usize..9,
        max_waiting in 1usize..6,
        caching in any::<bool>(),
        priority in any::<bool>(),
        wave_priority in any::<bool>(),
        prefill_cap in prop::option::of(0usize..12),
    ) {
        // Any one sequence (prompt <= 27, output <= 11) fits alone with headroom,
        // so every request can always make progress.
        let num_blocks = 1 + 38usize.div_ceil(bs) + 4 + extra_blocks;
        let kv = KvConfig { num_blocks, block_size: bs, enable_prefix_caching: caching };
        let cfg = SchedConfig {
            max_num_batched_tokens: budget,
            max_num_seqs,
            max_waiting,
            enable_priority: priority,
            wave_priority,
        };
        run(&reqs, cfg, kv, prefill_cap)?;
    }
}

/// The random cases above must actually exercise preemption, chunking and caching.
#[test]
fn the_fake_workload_preempts_and_hits_the_cache() {
    let reqs: Vec<Req> = (0..12)
        .map(|i| Req {
            arrive_at: i % 3,
            prompt: (0..(8 + i * 3) as u32).map(|t| 1 + t % 3).collect(),
            n: 1 + i % 4,
            max_tokens: 11,
            priority: 0,
            cancel_at: None,
            early_stop: None,
        })
        .collect();
    let kv = KvConfig {
        num_blocks: 20,
        block_size: 4,
        enable_prefix_caching: true,
    };
    let cfg = SchedConfig {
        max_num_batched_tokens: 16,
        max_num_seqs: 8,
        max_waiting: 4,
        enable_priority: false,
        wave_priority: true,
    };
    let (stats, hits) = run(&reqs, cfg, kv, None).unwrap();
    assert!(stats.num_preemptions > 0, "{stats:?}");
    assert!(hits > 0);
}
