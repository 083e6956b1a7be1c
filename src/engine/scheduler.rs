//! Scheduling policy: which waiting requests start, and how many tokens each
//! running sequence contributes to the next step.
//!
//! Pure bookkeeping with no model or threads in it, so the policy is tested
//! directly. Admission is FIFO: the head of the queue is never overtaken, so a
//! large request cannot starve behind a stream of small ones. Steps follow
//! vLLM's chunked prefill: every decoding sequence gets its one token, and
//! prompts fill what is left of the step's token budget, oldest first, so a
//! long prompt never stalls running streams for more than one bounded step.

use std::collections::VecDeque;

/// Limits on what runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerLimits {
    /// Sequences running (prefilling or decoding) at once.
    pub max_batch_size: usize,
    /// KV positions reserved by all running sequences together
    /// (each reserves prompt + max_new_tokens on admission).
    pub max_total_tokens: usize,
    /// Tokens one step computes: one per decoding sequence plus prompt tokens.
    pub max_batch_tokens: usize,
    /// Prompt tokens one step computes, at most.
    pub max_prefill_tokens: usize,
    /// Requests allowed to wait; beyond it new requests are refused (429).
    pub max_queue: usize,
}

/// What starting a waiting entry came to.
pub enum Start<T> {
    Started,
    /// It does not fit now; it goes back to the head of the queue.
    NotNow(T),
}

/// The waiting queue.
pub struct Scheduler<T> {
    limits: SchedulerLimits,
    waiting: VecDeque<T>,
}

impl<T> Scheduler<T> {
    pub fn new(limits: SchedulerLimits) -> Self {
        Self {
            limits,
            waiting: VecDeque::new(),
        }
    }

    pub fn limits(&self) -> SchedulerLimits {
        self.limits
    }

    /// Queues an entry. The engine handle already refused what cannot queue.
    pub fn enqueue(&mut self, entry: T) {
        self.waiting.push_back(entry);
    }

    /// Starts waiting entries in arrival order while the batch has room and
    /// `start` accepts them (it reserves their KV, or hands the entry back when
    /// it does not fit now). Returns how many started.
    pub fn admit(&mut self, running: usize, mut start: impl FnMut(T) -> Start<T>) -> usize {
        let mut started = 0;
        while running + started < self.limits.max_batch_size {
            let Some(head) = self.waiting.pop_front() else {
                break;
            };
            match start(head) {
                Start::Started => started += 1,
                Start::NotNow(head) => {
                    self.waiting.push_front(head);
                    break;
                }
            }
        }
        started
    }

    /// Removes waiting entries for which `gone` is true (clients that left,
    /// deadlines passed).
    pub fn drain_waiting(&mut self, mut gone: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut removed = Vec::new();
        let mut kept = VecDeque::with_capacity(self.waiting.len());
        for e in self.waiting.drain(..) {
            if gone(&e) {
                removed.push(e);
            } else {
                kept.push_back(e);
            }
        }
        self.waiting = kept;
        removed
    }

    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }
}

impl SchedulerLimits {
    /// Prompt tokens for each prefilling sequence this step (in their order, each
    /// `remaining[i]` prompt tokens still to go), after `decoding` sequences took
    /// one token each. At least one prompt token always runs when one is waiting,
    /// so prompts progress even when decodes fill the budget.
    pub fn plan_prefill(&self, decoding: usize, remaining: &[usize]) -> Vec<usize> {
        let room = self.max_batch_tokens.saturating_sub(decoding).max(1);
        let mut left = room.min(self.max_prefill_tokens.max(1));
        remaining
            .iter()
            .map(|&r| {
                let n = r.min(left);
                left -= n;
                n
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> SchedulerLimits {
        SchedulerLimits {
            max_batch_size: 2,
            max_total_tokens: 100,
            max_batch_tokens: 16,
            max_prefill_tokens: 12,
            max_queue: 3,
        }
    }

    #[test]
    fn admits_in_arrival_order_up_to_the_batch_size() {
        let mut s = Scheduler::new(limits());
        for i in 1..=3 {
            s.enqueue(i);
        }
        let mut started = Vec::new();
        let mut start = |e| {
            started.push(e);
            Start::Started
        };
        assert_eq!(s.admit(0, &mut start), 2);
        assert_eq!(s.admit(2, &mut start), 0, "batch is full");
        assert_eq!(s.admit(1, &mut start), 1);
        assert_eq!(started, [1, 2, 3]);
    }

    #[test]
    fn a_head_that_does_not_fit_holds_back_the_queue() {
        let mut s = Scheduler::new(SchedulerLimits {
            max_batch_size: 8,
            ..limits()
        });
        for i in [50, 1] {
            s.enqueue(i);
        }
        // The big one does not fit; the small one waits its turn behind it.
        let n = s.admit(0, |e| {
            if e > 10 {
                Start::NotNow(e)
            } else {
                Start::Started
            }
        });
        assert_eq!(n, 0);
        assert_eq!(s.waiting(), 2);
        assert_eq!(s.admit(0, |_| Start::Started), 2);
    }

    #[test]
    fn clients_that_left_are_removed_from_the_queue() {
        let mut s = Scheduler::new(limits());
        s.enqueue(1);
        s.enqueue(2);
        assert_eq!(s.drain_waiting(|&e| e == 1), vec![1]);
        assert_eq!(s.waiting(), 1);
    }

    #[test]
    fn decodes_take_their_tokens_first_and_prompts_share_the_rest_in_order() {
        let l = limits(); // 16 per step, at most 12 of them prompt tokens
        assert_eq!(
            l.plan_prefill(0, &[5, 20]),
            [5, 7],
            "capped at 12 prompt tokens"
        );
        assert_eq!(
            l.plan_prefill(10, &[5, 20]),
            [5, 1],
            "16 - 10 decodes = 6 left"
        );
        assert_eq!(l.plan_prefill(3, &[]), Vec::<usize>::new());
    }

    #[test]
    fn a_prompt_progresses_even_when_decodes_fill_the_step() {
        assert_eq!(limits().plan_prefill(16, &[5, 5]), [1, 0]);
        assert_eq!(limits().plan_prefill(40, &[5]), [1]);
    }
}
