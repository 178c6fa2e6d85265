//! Block pool: ref counts, the free stack, the LRU of evictable cached blocks, and the
//! prefix-hash map. Knows nothing about sequences.
//!
//! ```text
//!   state of a non-null block b           where it lives
//!   used       ref[b] > 0                  block tables (counted by ref[b])
//!   free       ref[b] = 0, hash[b] = None  `free` stack (top = next handed out)
//!   evictable  ref[b] = 0, hash[b] = Some  `lru` (oldest tick first) + `cached` map
//!
//!   allocate: pop `free`; if empty, evict the oldest `lru` entry (drop its hash)
//!   decref to 0: hashed -> lru (tick = now), else -> push `free`
//!   incref from 0 (prefix hit on an evictable block): remove it from the lru
//! ```
//!
//! A used block may also be hashed (registered in `cached`): it is then findable by
//! prefix lookups while still in use. Allocation, free and hit are O(1) except the LRU
//! (a `BTreeMap` keyed by a monotonically increasing tick: O(log n)).

use std::collections::{BTreeMap, HashMap};

use super::{BlockHash, BlockId, NULL_BLOCK};

/// What the `cached` map stores for a hash: the block plus the content the hash was
/// computed from, verified on lookup so that hash collisions are harmless.
#[derive(Debug)]
struct CachedEntry {
    block: BlockId,
    parent: Option<BlockHash>,
    tokens: Box<[u32]>,
}

#[derive(Debug)]
pub(crate) struct BlockPool {
    /// (num_blocks,) ref count per block; index 0 (null) stays 0.
    ref_counts: Vec<u32>,
    /// (num_blocks,) `Some(h)` iff `cached[h].block == b`.
    hashes: Vec<Option<BlockHash>>,
    /// (num_blocks,) LRU key while evictable, else 0.
    lru_tick: Vec<u64>,
    /// Free (unhashed, unreferenced) blocks; the top is handed out next.
    free: Vec<BlockId>,
    /// Evictable cached blocks, least recently freed first.
    lru: BTreeMap<u64, BlockId>,
    cached: HashMap<BlockHash, CachedEntry>,
    next_tick: u64,
}

impl BlockPool {
    /// A pool of `num_blocks` blocks, block 0 reserved. `num_blocks >= 2`.
    pub(crate) fn new(num_blocks: usize) -> Self {
        assert!(num_blocks >= 2 && num_blocks - 1 <= BlockId::MAX as usize);
        // Reversed so that blocks are handed out as 1, 2, 3, ...
        let free = (1..num_blocks as BlockId).rev().collect();
        Self {
            ref_counts: vec![0; num_blocks],
            hashes: vec![None; num_blocks],
            lru_tick: vec![0; num_blocks],
            free,
            lru: BTreeMap::new(),
            cached: HashMap::new(),
            next_tick: 1,
        }
    }

    /// Usable blocks (the null block excluded).
    pub(crate) fn capacity(&self) -> usize {
        self.ref_counts.len() - 1
    }

    /// Free plus evictable blocks: what an allocation may take.
    pub(crate) fn num_available(&self) -> usize {
        self.free.len() + self.lru.len()
    }

    pub(crate) fn num_evictable(&self) -> usize {
        self.lru.len()
    }

    pub(crate) fn ref_count(&self, b: BlockId) -> u32 {
        self.ref_counts[b as usize]
    }

    pub(crate) fn is_hashed(&self, b: BlockId) -> bool {
        self.hashes[b as usize].is_some()
    }

    /// Hands out a block with ref count 1; `Some((block, evicted))` where `evicted`
    /// says a cached block had to be dropped from the prefix cache.
    pub(crate) fn allocate(&mut self) -> Option<(BlockId, bool)> {
        let (b, evicted) = match self.free.pop() {
            Some(b) => (b, false),
            None => {
                let (_, b) = self.lru.pop_first()?;
                self.lru_tick[b as usize] = 0;
                let h = self.hashes[b as usize]
                    .take()
                    .expect("evictable block has a hash");
                self.cached.remove(&h);
                (b, true)
            }
        };
        debug_assert_eq!(self.ref_counts[b as usize], 0);
        self.ref_counts[b as usize] = 1;
        Some((b, evicted))
    }

    /// One more block table holds `b`; revives it from the LRU if it was evictable.
    pub(crate) fn incref(&mut self, b: BlockId) {
        assert_ne!(b, NULL_BLOCK, "the null block is never referenced");
        let i = b as usize;
        if self.ref_counts[i] == 0 {
            let tick = std::mem::take(&mut self.lru_tick[i]);
            let removed = self.lru.remove(&tick);
            assert_eq!(removed, Some(b), "unreferenced block {b} is not evictable");
        }
        self.ref_counts[i] += 1;
    }

    /// One block table fewer holds `b`; returns true when it dropped to zero (the
    /// block went to the LRU if hashed, else to the free stack).
    pub(crate) fn decref(&mut self, b: BlockId) -> bool {
        let i = b as usize;
        assert!(self.ref_counts[i] > 0, "double free of block {b}");
        self.ref_counts[i] -= 1;
        if self.ref_counts[i] > 0 {
            return false;
        }
        if self.hashes[i].is_some() {
            let tick = self.next_tick;
            self.next_tick += 1;
            self.lru_tick[i] = tick;
            self.lru.insert(tick, b);
        } else {
            self.free.push(b);
        }
        true
    }

    /// The block cached under `hash` if its stored content is exactly
    /// `(parent, tokens)`.
    pub(crate) fn lookup(
        &self,
        hash: BlockHash,
        parent: Option<BlockHash>,
        tokens: &[u32],
    ) -> Option<BlockId> {
        let e = self.cached.get(&hash)?;
        (e.parent == parent && *e.tokens == *tokens).then_some(e.block)
    }

    /// Makes the used block `b` findable under `hash`. No-op (returns false) when `b`
    /// is already hashed or another block already holds `hash`.
    pub(crate) fn register(
        &mut self,
        b: BlockId,
        hash: BlockHash,
        parent: Option<BlockHash>,
        tokens: &[u32],
    ) -> bool {
        debug_assert!(
            self.ref_counts[b as usize] > 0,
            "register of unused block {b}"
        );
        if self.hashes[b as usize].is_some() || self.cached.contains_key(&hash) {
            return false;
        }
        self.hashes[b as usize] = Some(hash);
        self.cached.insert(
            hash,
            CachedEntry {
                block: b,
                parent,
                tokens: tokens.into(),
            },
        );
        true
    }

    /// Invariants 1, 3 and 4 of the module header.
    pub(crate) fn check(&self) -> Result<(), String> {
        let n = self.ref_counts.len();
        if self.ref_counts[0] != 0 || self.hashes[0].is_some() {
            return Err("null block is referenced or hashed".into());
        }
        let mut on_free = vec![false; n];
        for &b in &self.free {
            if b == NULL_BLOCK || b as usize >= n {
                return Err(format!("free stack holds invalid block {b}"));
            }
            if std::mem::replace(&mut on_free[b as usize], true) {
                return Err(format!("block {b} is on the free stack twice"));
            }
        }
        let mut in_lru = vec![false; n];
        for (&tick, &b) in &self.lru {
            if b == NULL_BLOCK || self.lru_tick[b as usize] != tick || in_lru[b as usize] {
                return Err(format!("lru entry {tick} -> {b} is inconsistent"));
            }
            in_lru[b as usize] = true;
        }
        let mut used = 0;
        for b in 1..n {
            let (r, hashed) = (self.ref_counts[b], self.hashes[b].is_some());
            let ok = match (r > 0, on_free[b], in_lru[b]) {
                (true, false, false) => true,
                (false, true, false) => !hashed,
                (false, false, true) => hashed,
                _ => false,
            };
            if !ok {
                return Err(format!(
                    "block {b}: ref {r}, hashed {hashed}, on free {}, in lru {}",
                    on_free[b], in_lru[b]
                ));
            }
            used += usize::from(r > 0);
            if !in_lru[b] && self.lru_tick[b] != 0 {
                return Err(format!("block {b} has a stale lru tick"));
            }
        }
        if self.free.len() + self.lru.len() + used != self.capacity() {
            return Err(format!(
                "free {} + evictable {} + used {used} != capacity {}",
                self.free.len(),
                self.lru.len(),
                self.capacity()
            ));
        }
        let hashed = self.hashes.iter().filter(|h| h.is_some()).count();
        if hashed != self.cached.len() {
            return Err(format!(
                "{hashed} hashed blocks but {} cached entries",
                self.cached.len()
            ));
        }
        for (h, e) in &self.cached {
            if self.hashes[e.block as usize] != Some(*h) {
                return Err(format!("cached entry {h:#x} -> {} is stale", e.block));
            }
        }
        Ok(())
    }
}
