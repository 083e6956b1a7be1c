//! Admission: which waiting requests join the running batch before a step.
//!
//! Pure bookkeeping with no model or threads in it, so the policy is tested
//! directly. FIFO: the head of the queue is never overtaken, so a large request
//! cannot starve behind a stream of small ones.

use std::collections::VecDeque;

/// Limits on what runs at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerLimits {
    /// Sequences decoded together in one step.
    pub max_batch_size: usize,
    /// KV positions reserved by all running sequences together
    /// (each reserves prompt + max_new_tokens on admission).
    pub max_total_tokens: usize,
    /// Prompt tokens prefilled in one step (bounds the stall of running streams).
    pub max_prefill_tokens: usize,
    /// Requests allowed to wait; beyond it new requests are refused (429).
    pub max_queue: usize,
}

/// A queued entry as the policy sees it.
pub trait Admittable {
    fn prompt_tokens(&self) -> usize;
    fn token_budget(&self) -> usize;
}

/// The waiting queue plus what the running batch has reserved.
pub struct Scheduler<T> {
    limits: SchedulerLimits,
    waiting: VecDeque<T>,
    running: usize,
    reserved_tokens: usize,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    QueueFull,
    /// Could never run, even alone.
    TooLarge {
        budget: usize,
        limit: usize,
    },
}

impl<T: Admittable> Scheduler<T> {
    pub fn new(limits: SchedulerLimits) -> Self {
        Self {
            limits,
            waiting: VecDeque::new(),
            running: 0,
            reserved_tokens: 0,
        }
    }

    pub fn limits(&self) -> SchedulerLimits {
        self.limits
    }

    pub fn enqueue(&mut self, entry: T) -> Result<(), (Refusal, T)> {
        let budget = entry.token_budget();
        if budget > self.limits.max_total_tokens {
            let limit = self.limits.max_total_tokens;
            return Err((Refusal::TooLarge { budget, limit }, entry));
        }
        if self.waiting.len() >= self.limits.max_queue {
            return Err((Refusal::QueueFull, entry));
        }
        self.waiting.push_back(entry);
        Ok(())
    }

    /// Takes the requests that fit now, in arrival order, and reserves their budgets.
    pub fn admit(&mut self) -> Vec<T> {
        let mut admitted = Vec::new();
        let mut prefill = 0;
        while let Some(head) = self.waiting.front() {
            let fits_batch = self.running < self.limits.max_batch_size;
            let fits_kv =
                self.reserved_tokens + head.token_budget() <= self.limits.max_total_tokens;
            // The first prompt of a step always goes, however long, so it cannot starve.
            let fits_prefill = admitted.is_empty()
                || prefill + head.prompt_tokens() <= self.limits.max_prefill_tokens;
            if !(fits_batch && fits_kv && fits_prefill) {
                break;
            }
            let entry = self.waiting.pop_front().expect("invariant: front exists");
            prefill += entry.prompt_tokens();
            self.running += 1;
            self.reserved_tokens += entry.token_budget();
            admitted.push(entry);
        }
        admitted
    }

    /// A running sequence left (finished or cancelled): release its reservation.
    pub fn release(&mut self, token_budget: usize) {
        self.running = self.running.saturating_sub(1);
        self.reserved_tokens = self.reserved_tokens.saturating_sub(token_budget);
    }

    /// Removes waiting entries for which `gone` is true (clients that left).
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

    pub fn running(&self) -> usize {
        self.running
    }

    pub fn reserved_tokens(&self) -> usize {
        self.reserved_tokens
    }

    pub fn is_idle(&self) -> bool {
        self.running == 0 && self.waiting.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct Req(usize, usize);
    impl Admittable for Req {
        fn prompt_tokens(&self) -> usize {
            self.0
        }
        fn token_budget(&self) -> usize {
            self.0 + self.1
        }
    }

    fn limits() -> SchedulerLimits {
        SchedulerLimits {
            max_batch_size: 2,
            max_total_tokens: 100,
            max_prefill_tokens: 50,
            max_queue: 3,
        }
    }

    #[test]
    fn admits_in_arrival_order_up_to_the_batch_size() {
        let mut s = Scheduler::new(limits());
        for i in 1..=3 {
            s.enqueue(Req(i, 1)).expect("room");
        }
        assert_eq!(s.admit(), vec![Req(1, 1), Req(2, 1)]);
        assert_eq!(s.waiting(), 1);
        assert!(s.admit().is_empty(), "batch is full");
        s.release(2);
        assert_eq!(s.admit(), vec![Req(3, 1)]);
    }

    #[test]
    fn a_full_queue_refuses_new_requests() {
        let mut s = Scheduler::new(limits());
        for _ in 0..3 {
            s.enqueue(Req(1, 1)).expect("room");
        }
        let (why, _) = s.enqueue(Req(1, 1)).expect_err("queue full");
        assert_eq!(why, Refusal::QueueFull);
    }

    #[test]
    fn a_request_larger_than_the_token_budget_is_refused_up_front() {
        let mut s = Scheduler::new(limits());
        let (why, _) = s.enqueue(Req(90, 20)).expect_err("too large");
        assert_eq!(
            why,
            Refusal::TooLarge {
                budget: 110,
                limit: 100
            }
        );
    }

    #[test]
    fn kv_reservations_hold_back_the_head_without_letting_others_overtake() {
        let mut s = Scheduler::new(SchedulerLimits {
            max_batch_size: 8,
            ..limits()
        });
        s.enqueue(Req(30, 30)).expect("room");
        s.enqueue(Req(30, 30)).expect("room");
        s.enqueue(Req(1, 1)).expect("room");
        assert_eq!(s.admit(), vec![Req(30, 30)]);
        assert!(
            s.admit().is_empty(),
            "60 + 60 > 100, and the small one waits its turn"
        );
        s.release(60);
        assert_eq!(s.admit(), vec![Req(30, 30), Req(1, 1)]);
    }

    #[test]
    fn prefill_tokens_per_step_are_capped_but_the_first_prompt_always_runs() {
        let mut s = Scheduler::new(SchedulerLimits {
            max_batch_size: 8,
            max_total_tokens: 1000,
            max_prefill_tokens: 50,
            max_queue: 8,
        });
        s.enqueue(Req(80, 1)).expect("room");
        s.enqueue(Req(10, 1)).expect("room");
        assert_eq!(s.admit(), vec![Req(80, 1)]);
        assert_eq!(s.admit(), vec![Req(10, 1)]);
    }

    #[test]
    fn clients_that_left_are_removed_from_the_queue() {
        let mut s = Scheduler::new(limits());
        s.enqueue(Req(1, 1)).expect("room");
        s.enqueue(Req(2, 1)).expect("room");
        let gone = s.drain_waiting(|r| r.0 == 1);
        assert_eq!(gone, vec![Req(1, 1)]);
        assert_eq!(s.waiting(), 1);
    }
}
