//! One worker's share of a load (`--worker-id K --workers N`).
//!
//! Every worker plans the same seeded load; request (or conversation) i goes
//! to worker i mod N. A worker numbers its own requests 0, 1, 2, ... and maps
//! its j-th to the global index j·N + K, so the shares never overlap, their
//! union is the whole load, and request i has the same prompt whichever
//! worker sends it. Closed loops split the virtual users the same way; open
//! loops keep every N-th arrival of the one seeded schedule, so each worker
//! runs 1/N of the rate.

use serde::Serialize;

/// Worker `id` of `of` (a plain run is worker 0 of 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Share {
    pub id: u64,
    pub of: u64,
}

impl Share {
    /// The whole load, one process.
    pub const WHOLE: Share = Share { id: 0, of: 1 };

    /// Whether global index `i` is this worker's.
    pub fn owns(self, i: u64) -> bool {
        i % self.of == self.id
    }

    /// How many of the indices `0..total` are this worker's.
    pub fn count(self, total: u64) -> u64 {
        total.saturating_sub(self.id).div_ceil(self.of)
    }

    /// The global index of this worker's `local`-th request or conversation.
    pub fn global(self, local: u64) -> u64 {
        local * self.of + self.id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_partition_the_load_without_overlap() {
        for total in [0u64, 1, 2, 7, 9, 100] {
            let n = 3;
            let mut seen = Vec::new();
            for id in 0..n {
                let s = Share { id, of: n };
                let mine: Vec<u64> = (0..s.count(total)).map(|j| s.global(j)).collect();
                assert!(mine.iter().all(|i| s.owns(*i) && *i < total), "{total}");
                seen.extend(mine);
            }
            seen.sort_unstable();
            assert_eq!(seen, (0..total).collect::<Vec<_>>(), "{total}");
        }
        assert_eq!(Share::WHOLE.count(5), 5);
        assert_eq!(Share::WHOLE.global(4), 4);
    }
}
