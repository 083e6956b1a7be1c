use proptest::prelude::*;

use super::*;

fn pool(capacity_blocks: usize, cache: Option<usize>) -> KvBlocks {
    KvBlocks::new(KvConfig {
        block_size: 4,
        capacity_blocks,
        prefix_cache_blocks: cache,
    })
}

/// Admits a sequence of `prompt` with `max_new` new tokens, computes its prompt,
/// and returns its blocks (as the runner would after prefill).
fn run_prompt(kv: &mut KvBlocks, prompt: &[u32], max_new: usize) -> SeqBlocks {
    let hit = kv.lookup(prompt);
    let mut seq = kv.reserve(prompt.len() + max_new, hit).expect("fits");
    kv.grow(&mut seq, prompt.len()).expect("within reservation");
    kv.commit(&mut seq, prompt, prompt.len());
    seq
}

#[test]
fn a_reservation_counts_the_whole_budget_and_release_gives_it_back() {
    let mut kv = pool(10, None);
    let seq = kv.reserve(9, PrefixHit::default()).expect("3 blocks fit");
    assert_eq!(kv.usage().reserved, 3);
    assert_eq!(kv.usage().in_use, 0);
    kv.release(seq);
    assert_eq!(
        kv.usage(),
        KvUsage {
            capacity: 10,
            ..Default::default()
        }
    );
}

#[test]
fn a_reservation_that_does_not_fit_changes_nothing() {
    let mut kv = pool(4, None);
    let a = kv.reserve(12, PrefixHit::default()).expect("3 of 4 blocks");
    let err = kv.reserve(8, PrefixHit::default()).expect_err("2 > 1 free");
    assert_eq!(
        err,
        NoRoom {
            needed: 2,
            available: 1
        }
    );
    assert_eq!(kv.usage().reserved, 3);
    kv.release(a);
}

#[test]
fn growing_allocates_blocks_only_as_positions_are_needed() {
    let mut kv = pool(8, None);
    let mut seq = kv.reserve(16, PrefixHit::default()).expect("fits");
    kv.grow(&mut seq, 5).expect("2 blocks");
    assert_eq!(seq.table().len(), 2);
    assert_eq!(kv.usage().in_use, 2);
    assert_eq!(kv.usage().reserved, 4);
    assert!(kv.grow(&mut seq, 17).is_err(), "beyond the reservation");
    kv.release(seq);
    assert_eq!(kv.usage().reserved, 0);
}

#[test]
fn a_second_prompt_reuses_the_first_ones_full_blocks() {
    let mut kv = pool(16, Some(16));
    let prompt: Vec<u32> = (0..10).collect();
    let a = run_prompt(&mut kv, &prompt, 2);
    // 10 tokens: blocks [0..4) and [4..8) are full; a hit leaves >= 1 token out.
    let hit = kv.lookup(&prompt);
    assert_eq!(hit.blocks, a.table()[..2].to_vec());
    assert_eq!(hit.tokens(4), 8);
    let b = kv.reserve(12, hit).expect("fits");
    // Shared blocks are counted once.
    assert_eq!(kv.usage().in_use, 3);
    kv.release(a);
    kv.release(b);
    assert_eq!(kv.usage().reserved, 0);
    assert_eq!(kv.usage().cached, 2, "the two full blocks stay cached");
}

#[test]
fn a_prompt_that_is_all_cached_still_leaves_a_token_to_compute() {
    let mut kv = pool(16, Some(16));
    let prompt: Vec<u32> = (0..8).collect();
    let a = run_prompt(&mut kv, &prompt, 1);
    kv.release(a);
    assert_eq!(kv.lookup(&prompt).blocks.len(), 1, "(8 - 1) / 4 = 1 block");
}

#[test]
fn a_different_prefix_does_not_hit_even_with_equal_later_blocks() {
    let mut kv = pool(16, Some(16));
    let a = run_prompt(&mut kv, &[1, 2, 3, 4, 5, 6, 7, 8, 9], 1);
    kv.release(a);
    assert!(kv.lookup(&[0, 2, 3, 4, 5, 6, 7, 8, 9]).blocks.is_empty());
    assert_eq!(kv.lookup(&[1, 2, 3, 4, 0, 0, 0, 0, 9]).blocks.len(), 1);
}

#[test]
fn cached_blocks_are_evicted_the_moment_a_reservation_needs_their_room() {
    let mut kv = pool(4, Some(4));
    let a = run_prompt(&mut kv, &(0..13).collect::<Vec<_>>(), 3);
    kv.release(a);
    assert_eq!(kv.usage().cached, 3);
    // A new, unrelated sequence needing the whole pool is admitted anyway.
    let b = kv
        .reserve(16, PrefixHit::default())
        .expect("cache gives way");
    assert_eq!(kv.usage().cached, 0);
    assert_eq!(kv.usage().reserved, 4);
    kv.release(b);
}

#[test]
fn eviction_takes_the_least_recently_used_and_a_sequence_tail_first() {
    let mut kv = pool(8, Some(8));
    let p1: Vec<u32> = (0..9).collect();
    let p2: Vec<u32> = (100..109).collect();
    let a = run_prompt(&mut kv, &p1, 0);
    kv.release(a);
    let b = run_prompt(&mut kv, &p2, 0);
    kv.release(b);
    assert_eq!(kv.usage().cached, 4);
    // Room for 5 blocks of reservation: 1 cached block must go, p1's tail.
    let c = kv.reserve(20, PrefixHit::default()).expect("fits");
    assert_eq!(kv.lookup(&p1).blocks.len(), 1, "p1 keeps its first block");
    assert_eq!(kv.lookup(&p2).blocks.len(), 2, "p2 was used more recently");
    kv.release(c);
}

#[test]
fn the_cache_cap_bounds_cached_blocks() {
    let mut kv = pool(16, Some(2));
    let a = run_prompt(&mut kv, &(0..17).collect::<Vec<_>>(), 0);
    kv.release(a);
    assert_eq!(kv.usage().cached, 2);
}

#[test]
fn with_caching_off_nothing_is_kept_or_found() {
    let mut kv = pool(16, None);
    let prompt: Vec<u32> = (0..9).collect();
    let a = run_prompt(&mut kv, &prompt, 0);
    kv.release(a);
    assert_eq!(kv.usage().cached, 0);
    assert!(kv.lookup(&prompt).blocks.is_empty());
}

#[test]
fn a_block_computed_twice_is_registered_once_and_the_copy_freed() {
    let mut kv = pool(16, Some(16));
    let prompt: Vec<u32> = (0..9).collect();
    // Both admitted before either computed: no hits, two copies of each block.
    let mut a = kv.reserve(9, PrefixHit::default()).expect("fits");
    let mut b = kv.reserve(9, PrefixHit::default()).expect("fits");
    for s in [&mut a, &mut b] {
        kv.grow(s, 9).expect("fits");
        kv.commit(s, &prompt, 9);
    }
    kv.release(a);
    kv.release(b);
    assert_eq!(kv.usage().cached, 2);
    assert_eq!(kv.usage().reserved, 0);
}

/// One step of a random workload against the pool.
#[derive(Debug, Clone)]
enum Op {
    Admit {
        prefix: u8,
        len: usize,
        max_new: usize,
    },
    Grow {
        seq: usize,
        by: usize,
    },
    Finish {
        seq: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..3, 1usize..24, 0usize..12).prop_map(|(prefix, len, max_new)| Op::Admit {
            prefix,
            len,
            max_new
        }),
        (0usize..8, 1usize..6).prop_map(|(seq, by)| Op::Grow { seq, by }),
        (0usize..8).prop_map(|seq| Op::Finish { seq }),
    ]
}

struct Live {
    blocks: SeqBlocks,
    tokens: Vec<u32>,
    computed: usize,
    budget: usize,
}

proptest! {
    /// Whatever runs, the accounting holds: reservations never exceed the pool,
    /// the cache lives only in unreserved room, and when every sequence has ended
    /// nothing is reserved.
    #[test]
    fn accounting_stays_exact(ops in prop::collection::vec(op(), 1..80), cache in 0usize..12) {
        let mut kv = pool(12, Some(cache));
        let mut live: Vec<Live> = Vec::new();
        for op in ops {
            match op {
                Op::Admit { prefix, len, max_new } => {
                    let tokens: Vec<u32> = (0..len as u32).map(|i| u32::from(prefix) * 1000 + i).collect();
                    let hit = kv.lookup(&tokens);
                    let computed = hit.tokens(4);
                    prop_assert!(computed < tokens.len());
                    if let Ok(blocks) = kv.reserve(len + max_new, hit) {
                        live.push(Live { blocks, tokens, computed, budget: len + max_new });
                    }
                }
                Op::Grow { seq, by } => {
                    if let Some(s) = live.get_mut(seq) {
                        let upto = (s.computed + by).min(s.budget);
                        kv.grow(&mut s.blocks, upto).expect("within the reservation");
                        while s.tokens.len() < upto {
                            let next = s.tokens.len() as u32;
                            s.tokens.push(next);
                        }
                        s.computed = upto;
                        kv.commit(&mut s.blocks, &s.tokens, s.computed);
                    }
                }
                Op::Finish { seq } => {
                    if seq < live.len() {
                        kv.release(live.swap_remove(seq).blocks);
                    }
                }
            }
            let u = kv.usage();
            prop_assert!(u.reserved <= u.capacity);
            prop_assert!(u.cached <= u.capacity - u.reserved);
            prop_assert!(u.cached <= cache);
            prop_assert!(u.in_use <= u.reserved);
        }
        for s in live.drain(..) {
            kv.release(s.blocks);
        }
        prop_assert_eq!(kv.usage().reserved, 0);
        prop_assert_eq!(kv.usage().in_use, 0);
    }
}
