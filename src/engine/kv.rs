//! KV-cache accounting in fixed-size blocks, with automatic prefix caching.
//!
//! The backend stores keys and values in one pool of blocks of [`KvBlocks::block_size`]
//! positions; each sequence has a block table mapping its positions to blocks. This
//! module decides which blocks a sequence gets; it holds no KV data itself, so the
//! same bookkeeping serves every backend and is tested without a model.
//!
//! **Why blocks (vLLM's paged layout) rather than copying a cached prefix into each
//! new sequence:** a shared prefix is then stored once however many sequences use it,
//! a hit costs no copy, and a finished sequence's blocks can stay behind as cache at
//! no cost. Attention reads a block table instead of one contiguous run, which costs
//! nothing measurable once blocks hold 16 positions.
//!
//! **Prefix caching** (vLLM's design: hashed full blocks with reference counts).
//! A full block is identified by the hash of its tokens chained with its parent's
//! hash, so equal hashes mean equal prefixes. A new prompt reuses the longest chain
//! of cached blocks it starts with. Blocks come in two kinds:
//! - *reserved*: held by running sequences, plus what they may still allocate
//!   (each sequence reserves its whole budget, prompt + max new tokens, on admission);
//! - *cached*: full blocks no sequence references, kept in LRU order.
//!
//! Cached blocks live only in room no reservation needs: whenever a reservation grows,
//! the least recently used cached blocks are evicted until `cached <= capacity -
//! reserved`. So the cache never makes admission refuse work it would otherwise take.

use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash, Hasher};

/// Index of a block in the backend's KV pool.
pub type BlockId = u32;

/// Positions per block: small enough that the last, partly filled block of each
/// sequence wastes little, large enough that block tables stay short (vLLM's default).
pub const DEFAULT_BLOCK_SIZE: usize = 16;

/// Sizing of the block pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvConfig {
    pub block_size: usize,
    /// Blocks in the pool.
    pub capacity_blocks: usize,
    /// Most blocks the prefix cache may keep; `None` turns prefix caching off.
    pub prefix_cache_blocks: Option<usize>,
}

/// A prefix of a prompt found in the cache: its blocks, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PrefixHit {
    pub blocks: Vec<BlockId>,
    hashes: Vec<u64>,
}

impl PrefixHit {
    /// Positions whose keys and values are already computed.
    pub fn tokens(&self, block_size: usize) -> usize {
        self.blocks.len() * block_size
    }
}

/// A sequence's blocks and the rest of its reservation. Must go back through
/// [`KvBlocks::release`].
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SeqBlocks {
    table: Vec<BlockId>,
    /// Blocks it may still allocate.
    pending: usize,
    /// Hash chain of its leading full blocks that are registered or were hits.
    hashes: Vec<u64>,
}

impl SeqBlocks {
    /// Block table: position `p` lives in block `table[p / block_size]`.
    pub fn table(&self) -> &[BlockId] {
        &self.table
    }
}

/// Not enough free room for a reservation now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("KV cache full: {needed} more blocks needed, {available} available")]
pub struct NoRoom {
    pub needed: usize,
    pub available: usize,
}

/// Block counts, for gauges and `/info`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvUsage {
    pub capacity: usize,
    /// Held by running sequences or promised to them.
    pub reserved: usize,
    /// Evictable prefix-cache blocks.
    pub cached: usize,
    /// Blocks with data (referenced by a sequence); `reserved - in_use` is promised room.
    pub in_use: usize,
    /// Blocks ever written (the high-water mark): freed blocks are reused
    /// first, so this is the part of the pool that is resident in memory.
    pub touched: usize,
}

/// A cached block's identity: its hash, its parent's hash and its tokens, so a
/// hash collision can never hand a sequence the wrong keys and values.
#[derive(Debug, Clone)]
struct BlockKey {
    hash: u64,
    parent: u64,
    tokens: Vec<u32>,
}

/// The block pool's bookkeeping.
pub struct KvBlocks {
    config: KvConfig,
    refs: Vec<u32>,
    /// Registered blocks (in the prefix cache, referenced or not).
    keys: Vec<Option<BlockKey>>,
    by_hash: HashMap<u64, BlockId>,
    /// Unregistered, unreferenced blocks; LIFO so recently used memory is reused.
    free: Vec<BlockId>,
    /// Unreferenced registered blocks by last use (oldest first).
    lru: BTreeMap<u64, BlockId>,
    lru_stamp: Vec<Option<u64>>,
    clock: u64,
    /// Sum over sequences of `pending`.
    pending: usize,
    in_use: usize,
    touched: usize,
}

/// Hash of a block given its parent's hash (0 for the first block).
fn block_hash(parent: u64, tokens: &[u32]) -> u64 {
    let mut h = std::hash::DefaultHasher::new();
    parent.hash(&mut h);
    tokens.hash(&mut h);
    h.finish()
}

impl KvBlocks {
    pub fn new(config: KvConfig) -> Self {
        let n = config.capacity_blocks;
        assert!(config.block_size > 0, "KV block size must be positive");
        Self {
            config,
            refs: vec![0; n],
            keys: vec![None; n],
            by_hash: HashMap::new(),
            // Popped from the back: block 0 first.
            free: (0..n as BlockId).rev().collect(),
            lru: BTreeMap::new(),
            lru_stamp: vec![None; n],
            clock: 0,
            pending: 0,
            in_use: 0,
            touched: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.config.block_size
    }

    pub fn config(&self) -> KvConfig {
        self.config
    }

    /// Blocks a sequence of `tokens` positions needs.
    pub fn blocks_for(&self, tokens: usize) -> usize {
        tokens.div_ceil(self.config.block_size)
    }

    pub fn usage(&self) -> KvUsage {
        KvUsage {
            capacity: self.config.capacity_blocks,
            reserved: self.in_use + self.pending,
            cached: self.lru.len(),
            in_use: self.in_use,
            touched: self.touched,
        }
    }

    fn caching(&self) -> bool {
        self.config.prefix_cache_blocks.is_some_and(|c| c > 0)
    }

    /// The longest run of cached full blocks `prompt` starts with. At least one
    /// prompt token is always left out, so the sequence has input to compute its
    /// first logits from.
    pub fn lookup(&self, prompt: &[u32]) -> PrefixHit {
        let mut hit = PrefixHit::default();
        if !self.caching() || prompt.is_empty() {
            return hit;
        }
        let b = self.config.block_size;
        let usable = (prompt.len() - 1) / b;
        let mut parent = 0;
        for chunk in prompt.chunks_exact(b).take(usable) {
            let hash = block_hash(parent, chunk);
            let Some(&id) = self.by_hash.get(&hash) else {
                break;
            };
            let matches = self.keys[id as usize]
                .as_ref()
                .is_some_and(|k| k.parent == parent && k.tokens == chunk);
            if !matches {
                break;
            }
            hit.blocks.push(id);
            hit.hashes.push(hash);
            parent = hash;
        }
        hit
    }

    /// Reserves room for a sequence of up to `budget` positions whose first
    /// positions are `hit`. Fails, changing nothing, when it does not fit now.
    pub fn reserve(&mut self, budget: usize, hit: PrefixHit) -> Result<SeqBlocks, NoRoom> {
        let total = self.blocks_for(budget).max(hit.blocks.len());
        let revived = hit
            .blocks
            .iter()
            .filter(|&&id| self.refs[id as usize] == 0)
            .count();
        let pending = total - hit.blocks.len();
        let needed = revived + pending;
        let reserved = self.in_use + self.pending;
        let available = self.config.capacity_blocks.saturating_sub(reserved);
        if needed > available {
            return Err(NoRoom { needed, available });
        }
        for &id in &hit.blocks {
            self.take_ref(id);
        }
        self.pending += pending;
        self.evict_to_fit();
        Ok(SeqBlocks {
            table: hit.blocks,
            pending,
            hashes: hit.hashes,
        })
    }

    fn take_ref(&mut self, id: BlockId) {
        let i = id as usize;
        if self.refs[i] == 0 {
            if let Some(stamp) = self.lru_stamp[i].take() {
                self.lru.remove(&stamp);
            }
            self.in_use += 1;
        }
        self.refs[i] += 1;
    }

    /// Extends `seq`'s table to cover positions `0..len` from its reservation.
    pub fn grow(&mut self, seq: &mut SeqBlocks, len: usize) -> Result<(), NoRoom> {
        let want = self.blocks_for(len);
        let more = want.saturating_sub(seq.table.len());
        if more > seq.pending {
            return Err(NoRoom {
                needed: more,
                available: seq.pending,
            });
        }
        for _ in 0..more {
            // The invariant `cached <= capacity - reserved` leaves a free block for
            // every pending one.
            let id = match self.free.pop() {
                Some(id) => id,
                None => self
                    .evict_one()
                    .expect("invariant: reserved room has free or evictable blocks"),
            };
            self.refs[id as usize] = 1;
            self.in_use += 1;
            self.touched = self.touched.max(id as usize + 1);
            seq.table.push(id);
        }
        seq.pending -= more;
        self.pending -= more;
        Ok(())
    }

    /// Registers `seq`'s full blocks among positions `0..computed` (whose keys and
    /// values are in the pool) in the prefix cache. `tokens` are its tokens.
    pub fn commit(&mut self, seq: &mut SeqBlocks, tokens: &[u32], computed: usize) {
        if !self.caching() {
            return;
        }
        let b = self.config.block_size;
        let full = (computed.min(tokens.len()) / b).min(seq.table.len());
        while seq.hashes.len() < full {
            let i = seq.hashes.len();
            let parent = seq.hashes.last().copied().unwrap_or(0);
            let chunk = &tokens[i * b..(i + 1) * b];
            let hash = block_hash(parent, chunk);
            let id = seq.table[i];
            // A block computed twice (two sequences with the same new prefix at
            // once) stays unregistered and is freed when its sequence ends.
            if !self.by_hash.contains_key(&hash) && self.keys[id as usize].is_none() {
                self.by_hash.insert(hash, id);
                self.keys[id as usize] = Some(BlockKey {
                    hash,
                    parent,
                    tokens: chunk.to_vec(),
                });
            }
            seq.hashes.push(hash);
        }
    }

    /// Gives back a sequence's blocks and the rest of its reservation. Registered
    /// blocks become cached (the tail first in eviction order); others are freed.
    pub fn release(&mut self, seq: SeqBlocks) {
        self.pending -= seq.pending;
        // Reverse order: the end of a sequence is evicted before its prefix, which
        // other prompts are more likely to share.
        for &id in seq.table.iter().rev() {
            let i = id as usize;
            self.refs[i] -= 1;
            if self.refs[i] > 0 {
                continue;
            }
            self.in_use -= 1;
            if self.keys[i].is_some() && self.caching() {
                self.clock += 1;
                self.lru.insert(self.clock, id);
                self.lru_stamp[i] = Some(self.clock);
            } else {
                self.unregister(id);
                self.free.push(id);
            }
        }
        self.evict_to_fit();
    }

    fn unregister(&mut self, id: BlockId) {
        if let Some(key) = self.keys[id as usize].take() {
            if self.by_hash.get(&key.hash) == Some(&id) {
                self.by_hash.remove(&key.hash);
            }
        }
    }

    /// Evicts the least recently used cached block; returns it, now unregistered.
    fn evict_one(&mut self) -> Option<BlockId> {
        let (_, id) = self.lru.pop_first()?;
        self.lru_stamp[id as usize] = None;
        self.unregister(id);
        Some(id)
    }

    /// Evicts until the cache fits both its cap and the room no reservation needs.
    fn evict_to_fit(&mut self) {
        let reserved = self.in_use + self.pending;
        let room = self.config.capacity_blocks.saturating_sub(reserved);
        let cap = self.config.prefix_cache_blocks.unwrap_or(0).min(room);
        while self.lru.len() > cap {
            if let Some(id) = self.evict_one() {
                self.free.push(id);
            }
        }
    }

    /// Drops every cached block (for tests and for turning the cache off live).
    pub fn clear_cache(&mut self) {
        while let Some(id) = self.evict_one() {
            self.free.push(id);
        }
    }
}

#[cfg(test)]
mod tests;
