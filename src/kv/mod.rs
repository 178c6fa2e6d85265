//! Paged KV cache bookkeeping: which physical KV block holds which token of which
//! sequence. Pure host-side data (block ids, ref counts, hashes); the KV tensors
//! themselves live in the model runner and are indexed with the ids handed out here.
//!
//! Owns:
//! - `BlockPool` (`pool.rs`): ref counts, the O(1) free stack, the LRU of evictable cached
//!   blocks and the prefix-hash -> block map.
//! - [`KvCacheManager`]: per-sequence block tables, slot allocation, fork with
//!   copy-on-write, prefix-cache lookup and registration.
//!
//! Slot/index math (block size `bs`, default 16):
//!
//! ```text
//!   token position p of a sequence      0 1 .. 15 | 16 17 .. 31 | 32 33 ..
//!   logical block  i = p / bs            ---- 0 ---- | ---- 1 ---- | -- 2 --
//!   block table    table[i]              [   7      ,    3        ,   12   ]
//!   physical slot  table[p / bs] * bs + p % bs      e.g. p = 17 -> 3 * 16 + 1 = 49
//!
//!   block ids      0 | 1 2 3 ... num_blocks-1
//!                  ^ null block: never allocated, pads block tables
//!                    capacity = num_blocks - 1 usable blocks
//! ```
//!
//! Prefix hashing (only FULL, computed blocks are hashed):
//!
//! ```text
//!   h0 = H(None,     tokens[0..bs])
//!   h1 = H(Some(h0), tokens[bs..2bs])     a block's hash names its whole prefix
//! ```
//!
//! Invariants (checked by [`KvCacheManager::check_invariants`] after every operation
//! in the property tests):
//! 1. The null block 0 is never handed out and never appears in a block table.
//! 2. Every block's ref count equals the number of block tables holding it.
//! 3. Every non-null block is in exactly one state:
//!    `used` (ref > 0) | `free` (ref 0, no hash, on the free stack) |
//!    `evictable` (ref 0, hashed, in the LRU), so `free + evictable + used = capacity`.
//! 4. A block has a hash iff the hash map points at it (no stale entries), so no block
//!    is leaked and none is freed twice (decrementing a zero ref count panics).
//! 5. Pending copy-on-write ops only target blocks in use.
//!
//! Per-block bytes, used to turn a memory budget into a block count:
//!
//! ```text
//!   bytes_per_block = 2 (K and V) * num_layers * block_size * num_kv_heads * head_dim * dtype_size
//! ```

mod manager;
mod pool;

pub use manager::{KvCacheManager, KvStats};

use thiserror::Error;

/// Physical KV block id; `0` is the null block.
pub type BlockId = u32;
/// Sequence id (one per sample of a request).
pub type SeqId = u64;
/// Chained hash of a full block (see the module header).
pub type BlockHash = u64;

/// The padding block: never allocated, used to pad block tables to equal length.
pub const NULL_BLOCK: BlockId = 0;
/// Default number of token slots per block.
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// Configuration of the block manager, validated by [`KvCacheManager::new`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvConfig {
    /// Total number of blocks INCLUDING the null block (usable = `num_blocks - 1`).
    pub num_blocks: usize,
    /// Token slots per block.
    pub block_size: usize,
    /// Keep hashed full blocks findable after free, share them on admission.
    pub enable_prefix_caching: bool,
}

impl KvConfig {
    /// `num_blocks` blocks (null block included), default block size, prefix caching on.
    pub fn new(num_blocks: usize) -> Self {
        Self {
            num_blocks,
            block_size: DEFAULT_BLOCK_SIZE,
            enable_prefix_caching: true,
        }
    }
}

/// Errors of the block manager.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum KvError {
    /// Not enough free or evictable blocks; nothing was allocated.
    #[error(
        "out of KV blocks: need {needed}, only {available} free or evictable (capacity {capacity})"
    )]
    NoFreeBlocks {
        needed: usize,
        available: usize,
        capacity: usize,
    },
    /// The sequence has no block table.
    #[error("sequence {0} has no block table")]
    UnknownSeq(SeqId),
    /// The sequence already has a (non-empty) block table.
    #[error("sequence {0} already has a block table")]
    SeqExists(SeqId),
    /// Rejected configuration.
    #[error("invalid KV config: `{field}` must be {rule}, given {value}")]
    InvalidConfig {
        field: &'static str,
        rule: &'static str,
        value: usize,
    },
}

/// Bytes of KV memory one block takes:
/// `2 (K and V) * num_layers * block_size * num_kv_heads * head_dim * dtype_size`.
pub fn bytes_per_block(
    num_layers: usize,
    block_size: usize,
    num_kv_heads: usize,
    head_dim: usize,
    dtype_size: usize,
) -> usize {
    2 * num_layers * block_size * num_kv_heads * head_dim * dtype_size
}

/// How many blocks fit in `bytes` (rounded down). The result counts the null block
/// too, so pass it straight to [`KvConfig::num_blocks`]. Returns 0 when
/// `bytes_per_block` is 0.
pub fn num_blocks_for_budget(bytes: usize, bytes_per_block: usize) -> usize {
    bytes.checked_div(bytes_per_block).unwrap_or(0)
}

/// Chained hash of one full block: `H(parent hash, token ids)`.
/// Deterministic within a process (`DefaultHasher::new()` uses fixed keys); the pool verifies the
/// stored tokens on lookup, so a 64-bit collision can never alias two prefixes.
pub fn hash_block(parent: Option<BlockHash>, tokens: &[u32]) -> BlockHash {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests;
