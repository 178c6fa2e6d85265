//! Per-sequence block tables on top of the [`BlockPool`]: slot allocation, fork with
//! copy-on-write, prefix-cache lookup (admission) and registration (after a forward).
//!
//! The manager keeps no token accounting: the scheduler owns `num_computed_tokens`
//! and passes it in. Lifecycle of one sequence:
//!
//! ```text
//!   get_computed_blocks(seq, tokens)        share cached full blocks  -> num_cached
//!   allocate_slots(seq, computed, new)      grow/CoW so [0, computed+new) has slots
//!   ... model runner writes KV of [computed, computed+new) ...
//!   cache_full_blocks(seq, computed', tokens)  hash newly full computed blocks
//!   fork(seq, child)                        child shares every block (ref + 1)
//!   free(seq)                               ref - 1; zero -> lru (hashed) or free
//! ```
//!
//! Copy-on-write: a write range `[computed, computed+new)` that touches a block with
//! ref > 1 gets a fresh block for that table slot and a copy op `(src, dst)`:
//!
//! ```text
//!   before   seq A: [5, 9]   seq B: [5, 9]   ref[9] = 2, A writes position 20 (bs 16)
//!   after    seq A: [5, 1]   seq B: [5, 9]   ref[9] = 1, copy op (9, 1)
//! ```
//!
//! Copy ops must run in order, before the forward that writes into `dst`. An op whose
//! `dst` is freed before it was drained is dropped.

use std::collections::HashMap;

use super::pool::BlockPool;
use super::{hash_block, BlockHash, BlockId, KvConfig, KvError, SeqId, NULL_BLOCK};

/// Cumulative counters (monotonic; read them for metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KvStats {
    /// Prompt tokens looked up in the prefix cache (vLLM `prefix_cache_queries`).
    pub prefix_cache_queries: u64,
    /// Tokens found in the prefix cache (vLLM `prefix_cache_hits`).
    pub prefix_cache_hits: u64,
    /// Copy-on-write block copies issued.
    pub cow_copies: u64,
    /// Cached blocks dropped from the prefix cache to make room.
    pub evictions: u64,
    /// Blocks handed out by allocations (CoW included).
    pub blocks_allocated: u64,
}

/// One sequence's blocks.
#[derive(Debug, Default, Clone)]
struct SeqBlocks {
    /// Block table: logical block i -> physical block.
    blocks: Vec<BlockId>,
    /// Chain hashes of the leading full computed blocks (`len <= blocks.len()`).
    hashes: Vec<BlockHash>,
}

/// Paged KV block manager; see the module header of [`crate::kv`].
#[derive(Debug)]
pub struct KvCacheManager {
    block_size: usize,
    prefix_caching: bool,
    pool: BlockPool,
    tables: HashMap<SeqId, SeqBlocks>,
    copy_ops: Vec<(BlockId, BlockId)>,
    stats: KvStats,
}

impl KvCacheManager {
    /// Validates `cfg`: `num_blocks >= 2` (the null block plus one), `block_size >= 1`.
    pub fn new(cfg: &KvConfig) -> Result<Self, KvError> {
        if cfg.num_blocks < 2 || cfg.num_blocks - 1 > BlockId::MAX as usize {
            return Err(KvError::InvalidConfig {
                field: "num_blocks",
                rule: "in 2..=2^32 (the null block plus at least one)",
                value: cfg.num_blocks,
            });
        }
        if cfg.block_size == 0 {
            return Err(KvError::InvalidConfig {
                field: "block_size",
                rule: ">= 1",
                value: 0,
            });
        }
        Ok(Self {
            block_size: cfg.block_size,
            prefix_caching: cfg.enable_prefix_caching,
            pool: BlockPool::new(cfg.num_blocks),
            tables: HashMap::new(),
            copy_ops: Vec::new(),
            stats: KvStats::default(),
        })
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Usable blocks (null block excluded).
    pub fn capacity(&self) -> usize {
        self.pool.capacity()
    }

    /// Blocks an allocation may take: free plus evictable cached.
    pub fn num_free_blocks(&self) -> usize {
        self.pool.num_available()
    }

    /// Unreferenced blocks still findable by prefix lookups.
    pub fn num_evictable_blocks(&self) -> usize {
        self.pool.num_evictable()
    }

    /// Blocks held by at least one block table.
    pub fn num_used_blocks(&self) -> usize {
        self.capacity() - self.num_free_blocks()
    }

    /// Fraction of usable blocks in use, in `[0, 1]`.
    pub fn usage(&self) -> f64 {
        self.num_used_blocks() as f64 / self.capacity() as f64
    }

    pub fn stats(&self) -> &KvStats {
        &self.stats
    }

    /// Blocks needed to hold `num_tokens` tokens.
    pub fn blocks_for(&self, num_tokens: usize) -> usize {
        num_tokens.div_ceil(self.block_size)
    }

    /// The sequence's block table; empty if it has none.
    pub fn block_table(&self, seq: SeqId) -> &[BlockId] {
        self.tables.get(&seq).map_or(&[], |t| &t.blocks)
    }

    /// Number of sequences holding a block table.
    pub fn num_seqs(&self) -> usize {
        self.tables.len()
    }

    pub fn has_seq(&self, seq: SeqId) -> bool {
        self.tables.contains_key(&seq)
    }

    /// Number of block tables holding `block`.
    pub fn ref_count(&self, block: BlockId) -> u32 {
        self.pool.ref_count(block)
    }

    /// Admission: shares the longest chain of cached full blocks that prefixes
    /// `tokens`, never all of them (the last token is always recomputed so that its
    /// logits exist). Creates the (empty) table when caching is off or nothing hits.
    /// Returns the number of cached tokens (a multiple of the block size).
    pub fn get_computed_blocks(&mut self, seq: SeqId, tokens: &[u32]) -> Result<usize, KvError> {
        if self.tables.get(&seq).is_some_and(|t| !t.blocks.is_empty()) {
            return Err(KvError::SeqExists(seq));
        }
        let mut table = SeqBlocks::default();
        if self.prefix_caching {
            let max_blocks = tokens.len().saturating_sub(1) / self.block_size;
            let mut parent = None;
            for chunk in tokens.chunks_exact(self.block_size).take(max_blocks) {
                let h = hash_block(parent, chunk);
                let Some(b) = self.pool.lookup(h, parent, chunk) else {
                    break;
                };
                self.pool.incref(b);
                table.blocks.push(b);
                table.hashes.push(h);
                parent = Some(h);
            }
            self.stats.prefix_cache_queries += tokens.len() as u64;
        }
        let cached = table.blocks.len() * self.block_size;
        self.stats.prefix_cache_hits += cached as u64;
        self.tables.insert(seq, table);
        Ok(cached)
    }

    /// Grows `seq`'s table (creating it if needed) so that positions
    /// `[0, num_computed + num_new)` have slots, copying-on-write every shared block
    /// that the write range `[num_computed, num_computed + num_new)` touches.
    /// All-or-nothing: on `NoFreeBlocks` nothing changed.
    ///
    /// Panics if `num_computed` exceeds the slots the table already has (the
    /// scheduler's accounting is broken).
    pub fn allocate_slots(
        &mut self,
        seq: SeqId,
        num_computed: usize,
        num_new: usize,
    ) -> Result<(), KvError> {
        let bs = self.block_size;
        let table = self.tables.entry(seq).or_default();
        let have = table.blocks.len();
        assert!(
            num_computed <= have * bs,
            "seq {seq}: {num_computed} computed tokens but only {have} blocks"
        );
        let total = num_computed + num_new;
        let grow = total.div_ceil(bs).saturating_sub(have);
        let cow: Vec<usize> = if num_new == 0 {
            Vec::new()
        } else {
            (num_computed / bs..=((total - 1) / bs).min(have.saturating_sub(1)))
                .filter(|&i| i < have && self.pool.ref_count(table.blocks[i]) > 1)
                .collect()
        };
        let needed = grow + cow.len();
        let available = self.pool.num_available();
        if needed > available {
            return Err(KvError::NoFreeBlocks {
                needed,
                available,
                capacity: self.pool.capacity(),
            });
        }
        for i in cow {
            let (dst, evicted) = self.pool.allocate().expect("checked availability");
            let src = std::mem::replace(&mut table.blocks[i], dst);
            let dropped = self.pool.decref(src);
            debug_assert!(!dropped, "CoW source {src} was shared");
            self.copy_ops.push((src, dst));
            self.stats.cow_copies += 1;
            self.stats.blocks_allocated += 1;
            self.stats.evictions += u64::from(evicted);
        }
        for _ in 0..grow {
            let (b, evicted) = self.pool.allocate().expect("checked availability");
            table.blocks.push(b);
            self.stats.blocks_allocated += 1;
            self.stats.evictions += u64::from(evicted);
        }
        Ok(())
    }

    /// After a forward: makes `seq`'s full blocks within `[0, num_computed)` findable
    /// by later prefix lookups. `tokens` are the sequence's tokens (at least
    /// `num_computed` of them). No-op when prefix caching is off.
    pub fn cache_full_blocks(&mut self, seq: SeqId, num_computed: usize, tokens: &[u32]) {
        if !self.prefix_caching {
            return;
        }
        let bs = self.block_size;
        let Some(table) = self.tables.get_mut(&seq) else {
            return;
        };
        let full = (num_computed.min(tokens.len()) / bs).min(table.blocks.len());
        for i in table.hashes.len()..full {
            let parent = table.hashes.last().copied();
            let chunk = &tokens[i * bs..(i + 1) * bs];
            let h = hash_block(parent, chunk);
            table.hashes.push(h);
            self.pool.register(table.blocks[i], h, parent, chunk);
        }
    }

    /// `child` shares all of `parent`'s blocks, the partially filled last one too
    /// (ref + 1 each); the first write into a shared block copies it.
    pub fn fork(&mut self, parent: SeqId, child: SeqId) -> Result<(), KvError> {
        if self.tables.contains_key(&child) {
            return Err(KvError::SeqExists(child));
        }
        let t = self
            .tables
            .get(&parent)
            .ok_or(KvError::UnknownSeq(parent))?
            .clone();
        for &b in &t.blocks {
            self.pool.incref(b);
        }
        self.tables.insert(child, t);
        Ok(())
    }

    /// Drops `seq`'s table; blocks whose ref count reaches 0 become evictable (if
    /// hashed) or free. Blocks are released last-to-first so that a sequence's tail
    /// is evicted before its head. Returns the number of blocks the table held;
    /// freeing an unknown sequence is a no-op returning 0.
    pub fn free(&mut self, seq: SeqId) -> usize {
        let Some(t) = self.tables.remove(&seq) else {
            return 0;
        };
        for &b in t.blocks.iter().rev() {
            if self.pool.decref(b) && !self.copy_ops.is_empty() {
                self.copy_ops.retain(|&(_, dst)| dst != b);
            }
        }
        t.blocks.len()
    }

    /// Pending copy-on-write ops `(src, dst)`, in the order they must run.
    pub fn drain_copy_ops(&mut self) -> Vec<(BlockId, BlockId)> {
        std::mem::take(&mut self.copy_ops)
    }

    /// Checks every invariant of the module header; `Err` names the first violation.
    /// O(capacity + table entries): for tests and debugging.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.pool.check()?;
        let mut refs = vec![0u32; self.pool.capacity() + 1];
        for (seq, t) in &self.tables {
            if t.hashes.len() > t.blocks.len() {
                return Err(format!("seq {seq}: more hashes than blocks"));
            }
            for &b in &t.blocks {
                if b == NULL_BLOCK || b as usize >= refs.len() {
                    return Err(format!("seq {seq} holds invalid block {b}"));
                }
                refs[b as usize] += 1;
            }
            if t.blocks
                .iter()
                .collect::<std::collections::HashSet<_>>()
                .len()
                != t.blocks.len()
            {
                return Err(format!("seq {seq} holds a block twice: {:?}", t.blocks));
            }
        }
        for (b, &r) in refs.iter().enumerate() {
            if r != self.pool.ref_count(b as BlockId) {
                return Err(format!(
                    "block {b}: ref count {} but {r} tables hold it",
                    self.pool.ref_count(b as BlockId)
                ));
            }
        }
        for &(src, dst) in &self.copy_ops {
            if self.pool.ref_count(dst) == 0 || src == NULL_BLOCK {
                return Err(format!("copy op ({src}, {dst}) targets an unused block"));
            }
        }
        Ok(())
    }

    /// Whether block `b` is currently registered in the prefix cache.
    pub fn is_cached(&self, b: BlockId) -> bool {
        self.pool.is_hashed(b)
    }
}
