//! Property test of the KV block manager: random admissions (with prefix hits),
//! growth, forks and frees against a shadow KV memory. After every operation:
//! the manager's invariants hold (no leak, no double free, ref counts = table
//! holders, free + evictable + used = capacity, null block never handed out), and
//! every live sequence reads back exactly its own tokens through its block table
//! (so copy-on-write and prefix sharing never alias two different contents).

use std::collections::BTreeMap;

use ponder::kv::{BlockId, KvCacheManager, KvConfig, KvError, SeqId, NULL_BLOCK};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Admit a new sequence with this prompt (tiny alphabet: many prefix hits).
    Admit(Vec<u32>),
    /// Append and compute `k` tokens of value `v` on the i-th live sequence.
    Grow(usize, usize, u32),
    /// Fork the i-th live sequence.
    Fork(usize),
    /// Free the i-th live sequence.
    Free(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => prop::collection::vec(0u32..3, 1..20).prop_map(Op::Admit),
        4 => (any::<usize>(), 1usize..7, 0u32..3).prop_map(|(i, k, v)| Op::Grow(i, k, v)),
        2 => any::<usize>().prop_map(Op::Fork),
        2 => any::<usize>().prop_map(Op::Free),
    ]
}

struct Harness {
    m: KvCacheManager,
    bs: usize,
    /// Shadow KV memory: slot -> token written there.
    mem: Vec<Option<u32>>,
    /// Live sequences: tokens, all computed.
    seqs: BTreeMap<SeqId, Vec<u32>>,
    next: SeqId,
}

impl Harness {
    fn slot(&self, seq: SeqId, pos: usize) -> usize {
        let b = self.m.block_table(seq)[pos / self.bs];
        assert_ne!(b, NULL_BLOCK);
        b as usize * self.bs + pos % self.bs
    }

    /// Runs copy ops then writes `tokens[from..]` of `seq`, like a forward pass.
    fn forward(&mut self, seq: SeqId, tokens: &[u32], from: usize) {
        for (src, dst) in self.m.drain_copy_ops() {
            let (s, d) = (src as usize * self.bs, dst as usize * self.bs);
            for o in 0..self.bs {
                self.mem[d + o] = self.mem[s + o];
            }
        }
        for (pos, &t) in tokens.iter().enumerate().skip(from) {
            let s = self.slot(seq, pos);
            self.mem[s] = Some(t);
        }
        self.m.cache_full_blocks(seq, tokens.len(), tokens);
    }

    fn check(&self) {
        self.m.check_invariants().unwrap();
        assert_eq!(
            self.m.num_free_blocks() + self.m.num_used_blocks(),
            self.m.capacity()
        );
        for (&seq, toks) in &self.seqs {
            assert!(self.m.block_table(seq).len() * self.bs >= toks.len());
            for (pos, &t) in toks.iter().enumerate() {
                assert_eq!(
                    self.mem[self.slot(seq, pos)],
                    Some(t),
                    "seq {seq} pos {pos}"
                );
            }
        }
    }

    fn nth(&self, i: usize) -> Option<SeqId> {
        (!self.seqs.is_empty()).then(|| *self.seqs.keys().nth(i % self.seqs.len()).unwrap())
    }

    fn apply(&mut self, op: Op) {
        match op {
            Op::Admit(prompt) => {
                let seq = self.next;
                self.next += 1;
                let cached = self.m.get_computed_blocks(seq, &prompt).unwrap();
                assert!(cached < prompt.len() && cached.is_multiple_of(self.bs));
                for (pos, &t) in prompt.iter().enumerate().take(cached) {
                    assert_eq!(self.mem[self.slot(seq, pos)], Some(t));
                }
                match self.m.allocate_slots(seq, cached, prompt.len() - cached) {
                    Ok(()) => {
                        self.forward(seq, &prompt, cached);
                        self.seqs.insert(seq, prompt);
                    }
                    Err(KvError::NoFreeBlocks { .. }) => {
                        assert_eq!(self.m.block_table(seq).len() * self.bs, cached);
                        self.m.free(seq);
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Grow(i, k, v) => {
                let Some(seq) = self.nth(i) else { return };
                let before: Vec<BlockId> = self.m.block_table(seq).to_vec();
                let n = self.seqs[&seq].len();
                match self.m.allocate_slots(seq, n, k) {
                    Ok(()) => {
                        let toks = self.seqs.get_mut(&seq).unwrap();
                        toks.extend(std::iter::repeat_n(v, k));
                        let toks = toks.clone();
                        self.forward(seq, &toks, n);
                    }
                    Err(KvError::NoFreeBlocks { .. }) => {
                        assert_eq!(self.m.block_table(seq), &before[..], "partial allocation");
                    }
                    Err(e) => panic!("{e}"),
                }
            }
            Op::Fork(i) => {
                let Some(seq) = self.nth(i) else { return };
                let child = self.next;
                self.next += 1;
                self.m.fork(seq, child).unwrap();
                let toks = self.seqs[&seq].clone();
                self.seqs.insert(child, toks);
            }
            Op::Free(i) => {
                let Some(seq) = self.nth(i) else { return };
                self.seqs.remove(&seq);
                self.m.free(seq);
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn block_manager_invariants(
        ops in prop::collection::vec(op(), 1..120),
        num_blocks in 3usize..24,
        bs in 1usize..6,
        caching in any::<bool>(),
    ) {
        let m = KvCacheManager::new(&KvConfig { num_blocks, block_size: bs, enable_prefix_caching: caching }).unwrap();
        let mut h = Harness { m, bs, mem: vec![None; num_blocks * bs], seqs: BTreeMap::new(), next: 1 };
        for op in ops {
            h.apply(op);
            h.check();
        }
        let live: Vec<SeqId> = h.seqs.keys().copied().collect();
        for seq in live {
            h.seqs.remove(&seq);
            h.m.free(seq);
            h.check();
        }
        prop_assert_eq!(h.m.num_used_blocks(), 0);
        prop_assert_eq!(h.m.num_free_blocks(), num_blocks - 1);
        prop_assert!(h.m.drain_copy_ops().is_empty());
    }
}
