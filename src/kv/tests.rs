//! Exact-block-id unit tests of the block manager.

use super::*;

/// `num_blocks` blocks (null included), block size 4, prefix caching as given.
fn mgr(num_blocks: usize, caching: bool) -> KvCacheManager {
    KvCacheManager::new(&KvConfig {
        num_blocks,
        block_size: 4,
        enable_prefix_caching: caching,
    })
    .unwrap()
}

fn ok(m: &KvCacheManager) {
    m.check_invariants().unwrap();
}

fn toks(n: usize, base: u32) -> Vec<u32> {
    (0..n as u32).map(|i| base + i).collect()
}

#[test]
fn budget_math() {
    // SmolLM2-135M: 30 layers, 3 kv heads, head dim 64, bf16, block 16.
    let bpb = bytes_per_block(30, 16, 3, 64, 2);
    assert_eq!(bpb, 2 * 30 * 16 * 3 * 64 * 2);
    assert_eq!(bpb, 368_640);
    assert_eq!(num_blocks_for_budget(1 << 30, bpb), 2912);
    assert_eq!(num_blocks_for_budget(bpb - 1, bpb), 0);
    assert_eq!(num_blocks_for_budget(100, 0), 0);
}

#[test]
fn config_is_validated() {
    let e = KvCacheManager::new(&KvConfig::new(1)).unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid KV config: `num_blocks` must be in 2..=2^32 (the null block plus at least one), given 1"
    );
    let mut c = KvConfig::new(8);
    c.block_size = 0;
    assert!(matches!(
        KvCacheManager::new(&c),
        Err(KvError::InvalidConfig {
            field: "block_size",
            ..
        })
    ));
}

#[test]
fn allocate_and_grow_across_block_boundary() {
    let mut m = mgr(8, false);
    assert_eq!(m.capacity(), 7);
    m.allocate_slots(1, 0, 3).unwrap();
    assert_eq!(m.block_table(1), &[1]);
    m.allocate_slots(1, 3, 1).unwrap(); // position 3 still fits block 1
    assert_eq!(m.block_table(1), &[1]);
    m.allocate_slots(1, 4, 1).unwrap(); // position 4 crosses into a new block
    assert_eq!(m.block_table(1), &[1, 2]);
    m.allocate_slots(2, 0, 9).unwrap(); // 9 tokens -> 3 blocks
    assert_eq!(m.block_table(2), &[3, 4, 5]);
    assert_eq!(m.num_free_blocks(), 2);
    assert_eq!(m.num_used_blocks(), 5);
    assert!((m.usage() - 5.0 / 7.0).abs() < 1e-12);
    assert_eq!(m.stats().blocks_allocated, 5);
    ok(&m);
}

#[test]
fn all_or_nothing_on_failure() {
    let mut m = mgr(4, false); // 3 usable
    m.allocate_slots(1, 0, 8).unwrap(); // [1, 2]
    let e = m.allocate_slots(2, 0, 8).unwrap_err();
    assert_eq!(
        e,
        KvError::NoFreeBlocks {
            needed: 2,
            available: 1,
            capacity: 3
        }
    );
    assert_eq!(
        e.to_string(),
        "out of KV blocks: need 2, only 1 free or evictable (capacity 3)"
    );
    assert_eq!(m.block_table(2), &[] as &[BlockId]);
    assert_eq!(m.num_free_blocks(), 1);
    // Growing seq 1 by 5 tokens needs 2 more blocks: also refused, table unchanged.
    assert!(m.allocate_slots(1, 8, 5).is_err());
    assert_eq!(m.block_table(1), &[1, 2]);
    ok(&m);
}

#[test]
fn free_order_and_reuse() {
    let mut m = mgr(8, false);
    m.allocate_slots(1, 0, 8).unwrap(); // [1, 2]
    m.allocate_slots(2, 0, 4).unwrap(); // [3]
    assert_eq!(m.free(1), 2);
    assert_eq!(m.free(1), 0, "second free is a no-op");
    ok(&m);
    // Freed last-to-first onto a stack: the head comes back first.
    m.allocate_slots(3, 0, 12).unwrap();
    assert_eq!(m.block_table(3), &[1, 2, 4]);
    m.free(2);
    m.free(3);
    assert_eq!(m.num_free_blocks(), 7);
    ok(&m);
}

#[test]
fn fork_and_copy_on_write() {
    let mut m = mgr(8, false);
    m.allocate_slots(1, 0, 6).unwrap(); // [1, 2], last block half full
    m.fork(1, 2).unwrap();
    assert_eq!(m.block_table(2), &[1, 2]);
    assert_eq!((m.ref_count(1), m.ref_count(2)), (2, 2));
    assert_eq!(m.num_used_blocks(), 2);
    ok(&m);
    // Seq 1 writes position 6 in shared block 2: CoW into block 3.
    m.allocate_slots(1, 6, 1).unwrap();
    assert_eq!(m.block_table(1), &[1, 3]);
    assert_eq!(m.block_table(2), &[1, 2]);
    assert_eq!(m.drain_copy_ops(), vec![(2, 3)]);
    assert!(m.drain_copy_ops().is_empty());
    // Seq 2 now owns block 2 alone: writes in place.
    m.allocate_slots(2, 6, 1).unwrap();
    assert_eq!(m.block_table(2), &[1, 2]);
    assert!(m.drain_copy_ops().is_empty());
    assert_eq!((m.ref_count(1), m.ref_count(2), m.ref_count(3)), (2, 1, 1));
    assert_eq!(m.stats().cow_copies, 1);
    // Growing past the shared full block 1 never copies it.
    m.allocate_slots(2, 7, 2).unwrap();
    assert_eq!(m.block_table(2), &[1, 2, 4]);
    assert!(m.drain_copy_ops().is_empty());
    ok(&m);
    assert_eq!(m.fork(1, 2), Err(KvError::SeqExists(2)));
    assert_eq!(m.fork(9, 10), Err(KvError::UnknownSeq(9)));
    m.free(1);
    assert_eq!(m.ref_count(1), 1);
    m.free(2);
    assert_eq!(m.num_free_blocks(), 7);
    ok(&m);
}

#[test]
fn cow_counts_against_all_or_nothing() {
    let mut m = mgr(4, false); // 3 usable
    m.allocate_slots(1, 0, 6).unwrap(); // [1, 2]
    m.fork(1, 2).unwrap();
    // Seq 1 writes positions 6..9: CoW of block 2 plus one new block = 2 > 1 free.
    let e = m.allocate_slots(1, 6, 3).unwrap_err();
    assert!(matches!(
        e,
        KvError::NoFreeBlocks {
            needed: 2,
            available: 1,
            ..
        }
    ));
    assert_eq!(m.block_table(1), &[1, 2]);
    assert!(m.drain_copy_ops().is_empty());
    ok(&m);
}

#[test]
fn copy_op_dropped_when_destination_freed() {
    let mut m = mgr(8, false);
    m.allocate_slots(1, 0, 2).unwrap(); // [1]
    m.fork(1, 2).unwrap();
    m.allocate_slots(2, 2, 1).unwrap(); // CoW (1, 2)
    m.free(2);
    assert!(m.drain_copy_ops().is_empty());
    ok(&m);
}

#[test]
fn prefix_hit_after_free() {
    let mut m = mgr(8, true);
    let p = toks(10, 100); // blocks: [100..104) [104..108) + 2 tokens
    assert_eq!(m.get_computed_blocks(1, &p).unwrap(), 0);
    m.allocate_slots(1, 0, 10).unwrap(); // [1, 2, 3]
    m.cache_full_blocks(1, 10, &p);
    assert!(m.is_cached(1) && m.is_cached(2) && !m.is_cached(3));
    // A concurrent request with the same prompt shares the cached blocks at once.
    assert_eq!(m.get_computed_blocks(2, &p).unwrap(), 8);
    assert_eq!(m.block_table(2), &[1, 2]);
    assert_eq!(m.ref_count(1), 2);
    m.free(2);
    m.free(1);
    assert_eq!(m.num_evictable_blocks(), 2);
    assert_eq!(m.num_free_blocks(), 7);
    ok(&m);
    // After free: still findable.
    assert_eq!(m.get_computed_blocks(3, &p).unwrap(), 8);
    assert_eq!(m.block_table(3), &[1, 2]);
    assert_eq!(m.num_evictable_blocks(), 0);
    m.allocate_slots(3, 8, 2).unwrap();
    assert_eq!(m.block_table(3), &[1, 2, 3]);
    // A different second block only hits the first.
    let mut q = p.clone();
    q[5] = 7;
    assert_eq!(m.get_computed_blocks(4, &q).unwrap(), 4);
    assert_eq!(m.block_table(4), &[1]);
    let s = m.stats();
    assert_eq!((s.prefix_cache_queries, s.prefix_cache_hits), (40, 20));
    ok(&m);
}

#[test]
fn never_reuses_the_whole_prompt() {
    let mut m = mgr(8, true);
    let p = toks(8, 0); // exactly two full blocks
    m.get_computed_blocks(1, &p).unwrap();
    m.allocate_slots(1, 0, 8).unwrap();
    m.cache_full_blocks(1, 8, &p);
    m.free(1);
    // Only the first block may be reused: the last token must be recomputed.
    assert_eq!(m.get_computed_blocks(2, &p).unwrap(), 4);
    assert_eq!(m.block_table(2), &[1]);
    // One more token: both full blocks reused.
    let mut p9 = p.clone();
    p9.push(99);
    assert_eq!(m.get_computed_blocks(3, &p9).unwrap(), 8);
    assert_eq!(m.block_table(3), &[1, 2]);
    assert_eq!(m.get_computed_blocks(3, &p9), Err(KvError::SeqExists(3)));
    ok(&m);
}

#[test]
fn lru_evicts_least_recently_freed_tail_first() {
    let mut m = mgr(6, true); // 5 usable
    let a = toks(9, 0); // 2 full blocks + 1
    let b = toks(9, 50);
    for (seq, p) in [(1, &a), (2, &b)] {
        m.get_computed_blocks(seq, p).unwrap();
        m.allocate_slots(seq, 0, 8).unwrap();
        m.cache_full_blocks(seq, 8, p);
    }
    assert_eq!(m.block_table(1), &[1, 2]);
    assert_eq!(m.block_table(2), &[3, 4]);
    m.free(1); // LRU: 2, 1 (tail first)
    m.free(2); // LRU: 2, 1, 4, 3
    assert_eq!(m.num_evictable_blocks(), 4);
    // Free stack has only block 5; then evictions in LRU order.
    m.allocate_slots(3, 0, 12).unwrap();
    assert_eq!(m.block_table(3), &[5, 2, 1]);
    assert_eq!(m.stats().evictions, 2);
    ok(&m);
    // Prompt `a` lost its blocks, `b` is intact.
    assert_eq!(m.get_computed_blocks(4, &a).unwrap(), 0);
    assert_eq!(m.get_computed_blocks(5, &b).unwrap(), 8);
    assert_eq!(m.block_table(5), &[3, 4]);
    ok(&m);
}

#[test]
fn hit_refreshes_lru_position() {
    let mut m = mgr(4, true); // 3 usable
    let a = toks(5, 0);
    let b = toks(5, 50);
    for (seq, p) in [(1, &a), (2, &b)] {
        m.get_computed_blocks(seq, p).unwrap();
        m.allocate_slots(seq, 0, 4).unwrap();
        m.cache_full_blocks(seq, 4, p);
        m.free(seq);
    }
    // LRU: 1 (a), 2 (b). Touch `a` again and release it: LRU: 2, 1.
    assert_eq!(m.get_computed_blocks(3, &a).unwrap(), 4);
    m.free(3);
    m.allocate_slots(4, 0, 8).unwrap();
    assert_eq!(m.block_table(4), &[3, 2]);
    assert_eq!(m.get_computed_blocks(5, &a).unwrap(), 4);
    ok(&m);
}

#[test]
fn prefix_caching_off_frees_to_stack() {
    let mut m = mgr(8, false);
    let p = toks(9, 0);
    assert_eq!(m.get_computed_blocks(1, &p).unwrap(), 0);
    m.allocate_slots(1, 0, 9).unwrap();
    m.cache_full_blocks(1, 9, &p);
    assert!(!m.is_cached(1));
    m.free(1);
    assert_eq!(m.num_evictable_blocks(), 0);
    assert_eq!(m.get_computed_blocks(2, &p).unwrap(), 0);
    assert_eq!(m.stats().prefix_cache_queries, 0);
    ok(&m);
}

#[test]
fn duplicate_content_is_cached_once() {
    let mut m = mgr(8, true);
    let p = toks(5, 0);
    for seq in [1, 2] {
        m.get_computed_blocks(seq, &p).unwrap();
        m.allocate_slots(seq, 0, 5).unwrap();
    }
    m.cache_full_blocks(1, 5, &p);
    m.cache_full_blocks(2, 5, &p);
    assert_eq!(m.block_table(2), &[3, 4]);
    assert!(m.is_cached(1) && !m.is_cached(3));
    m.free(2);
    m.free(1);
    assert_eq!(m.num_evictable_blocks(), 1);
    ok(&m);
}
