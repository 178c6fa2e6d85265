//! Exact-schedule unit tests: rows, block ids, copy ops, victims.

use super::*;
use crate::kv::{BlockId, KvConfig};

mod order;

fn sched(num_blocks: usize, bs: usize, budget: usize, max_seqs: usize) -> Scheduler {
    let kv = KvConfig {
        num_blocks,
        block_size: bs,
        enable_prefix_caching: true,
    };
    let cfg = SchedConfig {
        max_num_batched_tokens: budget,
        max_num_seqs: max_seqs,
        max_waiting: 16,
        enable_priority: false,
        wave_priority: true,
    };
    Scheduler::new(cfg, &kv).unwrap()
}

/// `sched` with FCFS admission (`wave_priority` off): new requests in arrival order, none
/// overtaking another (the mechanics tests below assume that order; with `wave_priority` a
/// smaller new gang goes first, tested further down).
fn fcfs(num_blocks: usize, bs: usize, budget: usize, max_seqs: usize) -> Scheduler {
    let mut s = sched(num_blocks, bs, budget, max_seqs);
    s.cfg.wave_priority = false;
    s
}

fn prompt(len: usize, base: u32) -> Vec<u32> {
    (0..len as u32).map(|i| base + i).collect()
}

fn req(id: u64, prompt: Vec<u32>, n: usize, arrival: u64) -> SeqGroupRequest {
    SeqGroupRequest {
        request_id: id,
        prompt,
        n,
        priority: 0,
        arrival,
        continuation: None,
        urgent: false,
    }
}

type Row = (SeqId, usize, usize, Vec<BlockId>, Vec<SeqId>);

/// (seq, start_pos, num tokens, block table, sample_for) of each row.
fn rows(out: &SchedulerOutput) -> Vec<Row> {
    out.seqs
        .iter()
        .map(|r| {
            let t = (r.seq_id, r.start_pos, r.token_ids.len());
            (t.0, t.1, t.2, r.block_table.clone(), r.sample_for.clone())
        })
        .collect()
}

/// Token sampled for `seq` at step `step`.
fn tok(seq: SeqId, step: u64) -> u32 {
    (1000 + step * 10 + seq) as u32
}

/// Schedules one step, samples every `sample_for` id, updates; checks invariants.
fn step(s: &mut Scheduler) -> SchedulerOutput {
    let out = s.schedule();
    s.check_invariants().unwrap();
    assert!(out.num_batched_tokens <= s.config().max_num_batched_tokens);
    let sampled: Vec<(SeqId, u32)> = out
        .seqs
        .iter()
        .flat_map(|r| r.sample_for.iter().map(|&id| (id, tok(id, out.step))))
        .collect();
    s.update_from_output(&out, &sampled);
    s.check_invariants().unwrap();
    out
}

#[test]
fn budget_splitting_and_chunked_prefill() {
    let mut s = sched(64, 4, 8, 8);
    let a = prompt(20, 100);
    assert_eq!(s.add_group(req(1, a.clone(), 1, 0)).unwrap(), vec![0]);
    assert_eq!(s.add_group(req(2, prompt(5, 200), 1, 1)).unwrap(), vec![1]);
    let o = step(&mut s);
    assert_eq!(rows(&o), vec![(0, 0, 8, vec![1, 2], vec![])]);
    assert_eq!(o.seqs[0].token_ids, a[..8]);
    assert_eq!(s.num_waiting(), 1);
    let o = step(&mut s);
    assert_eq!(rows(&o), vec![(0, 8, 8, vec![1, 2, 3, 4], vec![])]);
    let o = step(&mut s);
    assert_eq!(
        rows(&o),
        vec![
            (0, 16, 4, vec![1, 2, 3, 4, 5], vec![0]),
            (1, 0, 4, vec![6], vec![]),
        ]
    );
    assert_eq!(o.num_batched_tokens, 8);
    let o = step(&mut s);
    assert_eq!(
        rows(&o),
        vec![
            (0, 20, 1, vec![1, 2, 3, 4, 5, 7], vec![0]),
            (1, 4, 1, vec![6, 8], vec![1]),
        ]
    );
    assert_eq!(o.seqs[0].token_ids, vec![tok(0, 3)]);
    assert_eq!(s.seq_output(0).unwrap(), &[tok(0, 3), tok(0, 4)]);
    assert_eq!(s.seq_output(1).unwrap(), &[tok(1, 4)]);
}

#[test]
fn decodes_go_first_then_prefill_chunks() {
    let mut s = fcfs(64, 4, 8, 8);
    assert_eq!(s.add_group(req(1, prompt(3, 0), 2, 0)).unwrap(), vec![0, 1]);
    assert_eq!(s.add_group(req(2, prompt(20, 50), 1, 1)).unwrap(), vec![2]);
    let o = step(&mut s);
    assert_eq!(
        rows(&o),
        vec![
            (0, 0, 3, vec![1], vec![0, 1]),
            (2, 0, 5, vec![2, 3], vec![])
        ]
    );
    // Sample 1 was forked from sample 0: running order is [0, 2, 1].
    assert_eq!(s.running_seqs(), &[0, 2, 1]);
    assert_eq!(s.seq_tokens(1).unwrap(), &[0, 1, 2, tok(1, 1)]);
    let o = step(&mut s);
    assert_eq!(
        rows(&o),
        vec![
            (0, 3, 1, vec![4], vec![0]),
            (1, 3, 1, vec![1], vec![1]),
            (2, 5, 6, vec![2, 3, 5], vec![]),
        ]
    );
    assert_eq!(o.copy_ops, vec![(1, 4)]);
    assert_eq!(o.seqs[1].token_ids, vec![tok(1, 1)]);
}

/// (seq, start_pos, num tokens) of each row.
fn spans(out: &SchedulerOutput) -> Vec<(SeqId, usize, usize)> {
    rows(out).into_iter().map(|r| (r.0, r.1, r.2)).collect()
}

#[test]
fn prefill_cap_limits_prompt_tokens_only_beside_decodes() {
    let mut s = sched(64, 4, 32, 8);
    s.set_prefill_cap(Some(5));
    // Nothing decodes yet: the first prompt takes the whole budget it needs.
    assert_eq!(s.add_group(req(1, prompt(12, 0), 1, 0)).unwrap(), vec![0]);
    assert_eq!(spans(&step(&mut s)), vec![(0, 0, 12)]);
    // Seq 0 decodes: continuing chunks and admissions share 5 prompt tokens a step, in
    // order, and an admission waits while the cap is spent.
    assert_eq!(s.add_group(req(2, prompt(7, 100), 1, 1)).unwrap(), vec![1]);
    assert_eq!(s.add_group(req(3, prompt(10, 200), 1, 2)).unwrap(), vec![2]);
    assert_eq!(spans(&step(&mut s)), vec![(0, 12, 1), (1, 0, 5)]);
    assert_eq!(spans(&step(&mut s)), vec![(0, 13, 1), (1, 5, 2), (2, 0, 3)]);
    // Cap lifted: the rest of the prompt in one step, beside both decodes.
    s.set_prefill_cap(None);
    assert_eq!(spans(&step(&mut s)), vec![(0, 14, 1), (1, 7, 1), (2, 3, 7)]);
    // A cap of 0 still lets prompts progress one token a step.
    s.set_prefill_cap(Some(0));
    assert_eq!(s.add_group(req(4, prompt(3, 300), 1, 3)).unwrap(), vec![3]);
    assert_eq!(
        spans(&step(&mut s)),
        vec![(0, 15, 1), (1, 8, 1), (2, 10, 1), (3, 0, 1)]
    );
}

#[test]
fn group_of_8_prefills_once_and_shares_prompt_blocks() {
    let mut s = sched(64, 16, 2048, 64);
    let ids = s.add_group(req(1, prompt(20, 0), 8, 0)).unwrap();
    assert_eq!(ids, (0..8).collect::<Vec<_>>());
    let o = step(&mut s);
    assert_eq!(rows(&o), vec![(0, 0, 20, vec![1, 2], ids.clone())]);
    let kv = s.kv();
    assert_eq!(kv.num_used_blocks(), 2);
    assert_eq!((kv.ref_count(1), kv.ref_count(2)), (8, 8));
    assert_eq!(kv.stats().blocks_allocated, 2);
    assert_eq!(
        (
            kv.stats().prefix_cache_queries,
            kv.stats().prefix_cache_hits
        ),
        (20, 0)
    );
    assert_eq!(s.num_running(), 8);
    let o = step(&mut s);
    assert_eq!(o.copy_ops, (3..10).map(|d| (2, d)).collect::<Vec<_>>());
    assert_eq!(o.seqs.len(), 8);
    assert_eq!(o.seqs[0].block_table, vec![1, 3]);
    assert_eq!(o.seqs[7].block_table, vec![1, 2]);
    let kv = s.kv();
    assert_eq!(kv.num_used_blocks(), 9);
    assert_eq!((kv.stats().cow_copies, kv.ref_count(1)), (7, 8));
    for &id in &ids {
        assert_eq!(s.seq_output(id).unwrap(), &[tok(id, 1), tok(id, 2)]);
    }
}

#[test]
fn preempts_latest_arrival_and_requeues_it_at_the_front() {
    let mut s = sched(5, 4, 64, 8); // 4 usable blocks
    s.add_group(req(1, prompt(5, 0), 1, 0)).unwrap(); // seq 0
    s.add_group(req(2, prompt(2, 50), 1, 1)).unwrap(); // seq 1
    let o = step(&mut s);
    assert_eq!(
        rows(&o),
        vec![(0, 0, 5, vec![1, 2], vec![0]), (1, 0, 2, vec![3], vec![1])]
    );
    for _ in 2..=4 {
        step(&mut s);
    }
    assert_eq!(s.kv().block_table(1), &[3, 4]);
    assert_eq!(s.kv().num_free_blocks(), 0);
    s.add_group(req(3, prompt(2, 90), 1, 2)).unwrap(); // seq 2
                                                       // Seq 0 needs a block for position 8: the latest arrival (seq 1) is preempted.
                                                       // Its full block 3 stays cached (evictable); the partial block 4 goes to seq 0.
    let o = step(&mut s);
    assert_eq!(rows(&o), vec![(0, 8, 1, vec![1, 2, 4], vec![0])]);
    assert_eq!(o.preempted, vec![1]);
    assert_eq!(s.waiting_queue().collect::<Vec<_>>(), vec![1, 2]);
    assert_eq!(s.num_preemptions(), 1);
    assert_eq!(s.seq_status(1), Some(SeqStatus::Waiting));
    assert_eq!(s.num_computed_tokens(1), Some(0));
    let b_tokens = [50, 51, tok(1, 1), tok(1, 2), tok(1, 3), tok(1, 4)];
    assert_eq!(s.seq_tokens(1).unwrap(), &b_tokens);
    // Seq 1 hits block 3 but lacks headroom; seq 2 may not overtake it.
    let o = step(&mut s);
    assert_eq!(rows(&o), vec![(0, 9, 1, vec![1, 2, 4], vec![0])]);
    assert_eq!(s.kv().num_evictable_blocks(), 1);
    s.finish_seq(0).unwrap();
    let o = step(&mut s);
    assert_eq!(
        rows(&o),
        vec![(1, 4, 2, vec![3, 4], vec![1]), (2, 0, 2, vec![2], vec![2])]
    );
    assert_eq!(o.seqs[0].token_ids, &b_tokens[4..]);
    assert_eq!(s.kv().stats().evictions, 1);
    assert_eq!(
        s.seq_output(1).unwrap(),
        &[&b_tokens[2..], &[tok(1, 7)]].concat()
    );
}

#[test]
fn priority_orders_admission_and_picks_the_victim() {
    let kv = KvConfig {
        num_blocks: 5,
        block_size: 4,
        enable_prefix_caching: true,
    };
    let cfg = SchedConfig {
        max_num_batched_tokens: 64,
        max_num_seqs: 8,
        max_waiting: 16,
        enable_priority: true,
        wave_priority: true,
    };
    let mut s = Scheduler::new(cfg, &kv).unwrap();
    let mut a = req(1, prompt(5, 0), 1, 0);
    a.priority = 5;
    let mut b = req(2, prompt(2, 50), 1, 1);
    b.priority = 0;
    s.add_group(a).unwrap(); // seq 0
    s.add_group(b).unwrap(); // seq 1
    let o = step(&mut s);
    assert_eq!(
        rows(&o),
        vec![(1, 0, 2, vec![1], vec![1]), (0, 0, 5, vec![2, 3], vec![0])]
    );
    for _ in 2..=4 {
        step(&mut s);
    }
    // Seq 0 needs a block; it has the lowest priority, so it preempts itself.
    let o = step(&mut s);
    assert_eq!(rows(&o), vec![(1, 5, 1, vec![1, 4], vec![1])]);
    assert_eq!(o.preempted, vec![0]);
    assert_eq!(s.waiting_queue().collect::<Vec<_>>(), vec![0]);
}

#[test]
fn gang_admission_needs_headroom_and_nobody_overtakes() {
    let mut s = fcfs(9, 4, 64, 8); // 8 usable blocks
    s.add_group(req(1, prompt(12, 0), 1, 0)).unwrap(); // seq 0: 3 blocks
    s.add_group(req(2, prompt(6, 50), 4, 1)).unwrap(); // seqs 1..5: 2 + 4 headroom
    s.add_group(req(3, prompt(2, 90), 1, 2)).unwrap(); // seq 5: would fit
    let o = step(&mut s);
    assert_eq!(rows(&o), vec![(0, 0, 12, vec![1, 2, 3], vec![0])]);
    assert_eq!(s.kv().num_free_blocks(), 5);
    assert_eq!(s.waiting_queue().collect::<Vec<_>>(), vec![1, 5]);
    s.finish_seq(0);
    let o = step(&mut s);
    assert_eq!(
        rows(&o),
        vec![
            (1, 0, 6, vec![4, 5], vec![1, 2, 3, 4]),
            (5, 0, 2, vec![6], vec![5])
        ]
    );
}

#[test]
fn samples_count_against_max_num_seqs() {
    let mut s = fcfs(64, 4, 64, 4);
    s.add_group(req(1, prompt(3, 0), 3, 0)).unwrap(); // seqs 0, 1, 2
    s.add_group(req(2, prompt(3, 9), 2, 1)).unwrap(); // seqs 3, 4
    let o = step(&mut s);
    assert_eq!(rows(&o), vec![(0, 0, 3, vec![1], vec![0, 1, 2])]);
    let o = step(&mut s);
    assert_eq!(o.seqs.len(), 3);
    assert_eq!(s.num_waiting(), 1);
    // Stopping one sample early frees its slot: the pair fits now.
    assert!(s.finish_seq(2).is_some());
    let o = step(&mut s);
    assert_eq!(o.seqs.len(), 3);
    assert_eq!(o.seqs[2].sample_for, vec![3, 4]);
    assert_eq!(s.num_running(), 4);
}

#[test]
fn prefix_cache_hit_on_admission() {
    let mut s = sched(64, 4, 64, 8);
    let p = prompt(10, 0);
    s.add_group(req(1, p.clone(), 1, 0)).unwrap();
    assert_eq!(
        rows(&step(&mut s)),
        vec![(0, 0, 10, vec![1, 2, 3], vec![0])]
    );
    s.finish_seq(0);
    s.add_group(req(2, p, 1, 1)).unwrap();
    assert_eq!(rows(&step(&mut s)), vec![(1, 8, 2, vec![1, 2, 3], vec![1])]);
    let st = s.kv().stats();
    assert_eq!((st.prefix_cache_queries, st.prefix_cache_hits), (20, 8));
}

#[test]
fn finishing_sample_0_before_sampling_hands_over_then_abort_frees_all() {
    let mut s = sched(64, 4, 4, 8);
    let p = prompt(10, 0);
    assert_eq!(s.add_group(req(7, p.clone(), 3, 0)).unwrap(), vec![0, 1, 2]);
    assert_eq!(rows(&step(&mut s)), vec![(0, 0, 4, vec![1], vec![])]);
    assert_eq!(s.finish_seq(0).unwrap(), p);
    assert_eq!(s.seq_status(1), Some(SeqStatus::Running));
    assert_eq!(s.seq_status(2), Some(SeqStatus::Unstarted { parent: 1 }));
    s.check_invariants().unwrap();
    assert_eq!(rows(&step(&mut s)), vec![(1, 4, 4, vec![1, 2], vec![])]);
    assert_eq!(
        rows(&step(&mut s)),
        vec![(1, 8, 2, vec![1, 2, 3], vec![1, 2])]
    );
    assert_eq!(s.kv().block_table(2), &[1, 2, 3]);
    assert_eq!(s.request_seqs(7), Some(&[1, 2][..]));
    assert_eq!(s.abort_request(7), 2);
    assert_eq!(s.abort_request(7), 0);
    assert!(!s.has_unfinished());
    assert_eq!(s.kv().num_used_blocks(), 0);
    assert_eq!(s.kv().num_free_blocks(), 63);
    s.check_invariants().unwrap();
}

#[test]
fn add_group_validation() {
    let mut s = sched(8, 4, 64, 4); // 7 usable blocks
    assert_eq!(s.max_seq_tokens(), 24);
    assert_eq!(
        s.add_group(req(1, vec![], 1, 0)),
        Err(SchedError::EmptyPrompt)
    );
    let e = s.add_group(req(1, prompt(3, 0), 5, 0)).unwrap_err();
    assert_eq!(e.to_string(), "`n` must be in 1..=4, given 5");
    let e = s.add_group(req(1, prompt(21, 0), 2, 0)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "prompt of 21 tokens with n=2 needs 8 KV blocks, the cache holds 7"
    );
    let mut s = Scheduler::new(
        SchedConfig {
            max_waiting: 2,
            ..Default::default()
        },
        &KvConfig::new(64),
    )
    .unwrap();
    s.add_group(req(1, prompt(3, 0), 1, 0)).unwrap();
    assert_eq!(
        s.add_group(req(1, prompt(3, 0), 1, 1)),
        Err(SchedError::DuplicateRequest(1))
    );
    s.add_group(req(2, prompt(3, 0), 1, 1)).unwrap();
    let e = s.add_group(req(3, prompt(3, 0), 1, 2)).unwrap_err();
    assert_eq!(e, SchedError::QueueFull { limit: 2 });
    assert_eq!(e.to_string(), "waiting queue is full (limit 2)");
    let bad = SchedConfig {
        max_num_seqs: 0,
        ..Default::default()
    };
    let e = Scheduler::new(bad, &KvConfig::new(64)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid scheduler config: `max_num_seqs` must be >= 1, given 0"
    );
}

#[test]
fn batch_layout_index_math() {
    let row = |seq_id, token_ids: Vec<u32>, start_pos, block_table, sample_for| ScheduledSeq {
        seq_id,
        token_ids,
        start_pos,
        block_table,
        sample_for,
    };
    let out = SchedulerOutput {
        step: 1,
        block_size: 4,
        seqs: vec![
            row(0, vec![10, 11, 12], 0, vec![7], vec![0, 1]),
            row(2, vec![20], 9, vec![3, 5, 2], vec![2]),
            row(3, vec![30, 31], 4, vec![6, 8], vec![]),
        ],
        num_batched_tokens: 6,
        ..Default::default()
    };
    assert_eq!(out.seqs[1].slot_mapping(4), vec![9]);
    let l = out.batch_layout();
    assert_eq!(l.token_ids, vec![10, 11, 12, 20, 30, 31]);
    assert_eq!(l.positions, vec![0, 1, 2, 9, 4, 5]);
    assert_eq!(l.slot_mapping, vec![28, 29, 30, 9, 32, 33]);
    assert_eq!(l.query_start, vec![0, 3, 4, 6]);
    assert_eq!(l.context_lens, vec![3, 10, 6]);
    assert_eq!(l.max_blocks, 3);
    assert_eq!(l.block_tables, vec![7, 0, 0, 3, 5, 2, 6, 8, 0]);
    assert_eq!(l.logits_rows, vec![2, 3]);
    assert_eq!(l.sample_for, vec![vec![0, 1], vec![2]]);
}

#[test]
fn preempted_sample_recomputes_alone_and_hits_the_prefix_cache() {
    let mut s = sched(6, 4, 64, 8); // 5 usable blocks
    assert_eq!(s.add_group(req(1, prompt(6, 0), 2, 0)).unwrap(), vec![0, 1]);
    assert_eq!(rows(&step(&mut s)), vec![(0, 0, 6, vec![1, 2], vec![0, 1])]);
    let o = step(&mut s);
    assert_eq!(o.copy_ops, vec![(2, 3)]);
    for _ in 3..=7 {
        step(&mut s);
    }
    assert_eq!(s.kv().block_table(0), &[1, 3, 4]);
    assert_eq!(s.kv().block_table(1), &[1, 2, 5]);
    // Seq 0 needs a block for position 12; same arrival, so the higher id goes.
    // Seq 1's full blocks 2 and 5 stay cached; 5 (its tail) is evicted first.
    let o = step(&mut s);
    assert_eq!(rows(&o), vec![(0, 12, 1, vec![1, 3, 4, 5], vec![0])]);
    assert_eq!(o.preempted, vec![1]);
    assert_eq!(s.kv().stats().evictions, 1);
    let seq1 = s.seq_tokens(1).unwrap().to_vec();
    assert_eq!(seq1.len(), 13);
    s.finish_seq(0).unwrap();
    // Readmitted as an independent sequence: its prompt + output, 8 tokens cached.
    let o = step(&mut s);
    assert_eq!(rows(&o), vec![(1, 8, 5, vec![1, 2, 5, 4], vec![1])]);
    assert_eq!(o.seqs[0].token_ids, &seq1[8..]);
    assert_eq!(s.kv().stats().prefix_cache_hits, 8);
    assert_eq!(s.seq_output(1).unwrap().len(), 8);
}

#[test]
fn engine_contract_violations_are_contained() {
    let mut s = sched(64, 4, 64, 8);
    s.add_group(req(1, prompt(3, 0), 3, 0)).unwrap(); // seqs 0, 1, 2
    let o = s.schedule();
    assert_eq!(o.seqs[0].sample_for, vec![0, 1, 2]);
    // Sample 2 gets no token, seq 9 never had a row: 2 is dropped, 9 ignored.
    s.update_from_output(&o, &[(0, 5), (1, 6), (9, 7)]);
    s.check_invariants().unwrap();
    assert_eq!(s.seq_status(2), None);
    assert_eq!(s.request_seqs(1), Some(&[0, 1][..]));
    assert_eq!(s.seq_tokens(1).unwrap(), &[0, 1, 2, 6]);
    assert_eq!(s.schedule().seqs.len(), 2);
}

#[test]
fn probe_shares_the_parents_blocks_and_leaves_it_untouched() {
    let mut s = sched(16, 4, 64, 8);
    let p = prompt(6, 100);
    s.add_group(req(1, p.clone(), 1, 0)).unwrap();
    let o = step(&mut s);
    assert_eq!(rows(&o), vec![(0, 0, 6, vec![1, 2], vec![0])]);
    // Parent: 6 computed + its sampled token 1010; the probe appends [900, 901].
    assert_eq!(s.add_probe(0, &[900, 901]).unwrap(), 1);
    assert_eq!(s.kv().block_table(1), &[1, 2]);
    assert_eq!((s.kv().ref_count(1), s.kv().ref_count(2)), (2, 2));
    s.check_invariants().unwrap();
    let o = step(&mut s);
    // The parent's decode writes position 6 into shared block 2: it gets copy 3; the
    // probe then owns block 2 alone and grows into block 4.
    assert_eq!(
        rows(&o),
        vec![
            (0, 6, 1, vec![1, 3], vec![0]),
            (1, 6, 3, vec![1, 2, 4], vec![1])
        ]
    );
    assert_eq!(o.copy_ops, vec![(2, 3)]);
    assert_eq!(o.seqs[1].token_ids, vec![1010, 900, 901]);
    s.finish_seq(1).unwrap();
    assert_eq!(s.kv().ref_count(1), 1);
    assert_eq!(s.kv().block_table(0), &[1, 3]);
    let mut want = p;
    want.extend([1010, 1020]);
    assert_eq!(s.seq_tokens(0).unwrap(), &want[..]);
    s.check_invariants().unwrap();
    // No probe of a sequence without KV.
    assert_eq!(s.add_probe(7, &[1]), Err(SchedError::NotRunning(7)));
}

#[test]
fn a_probe_is_the_first_victim_and_is_dropped_not_recomputed() {
    // Blocks 1..=3 usable.
    let mut s = sched(4, 4, 64, 8);
    s.add_group(req(1, prompt(7, 100), 1, 0)).unwrap();
    step(&mut s);
    let probe = s.add_probe(0, &[900]).unwrap();
    let o = step(&mut s);
    // The parent's CoW takes the last free block; the probe cannot grow: it is dropped.
    assert_eq!(rows(&o), vec![(0, 7, 1, vec![1, 3], vec![0])]);
    assert_eq!(o.copy_ops, vec![(2, 3)]);
    assert_eq!(o.preempted, vec![probe]);
    assert!(s.seq_tokens(probe).is_none());
    assert_eq!((s.num_running(), s.num_waiting()), (1, 0));
}
