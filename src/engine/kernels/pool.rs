//! A small fork-join pool tuned for many short parallel sections.
//!
//! A decode step runs ~120 matmuls of a few tens of microseconds each. Handing each
//! to rayon costs a wake-up of a sleeping thread per call (often 10-50 µs on a VM),
//! as much as the work itself. Here the calling thread takes part in the work, and
//! workers spin for a short while after each job before parking, so back-to-back
//! sections reach a spinning worker within a cache-line transfer.
//!
//! Protocol: the caller publishes a job and opens it (`STATE`: epoch, open flag and
//! participant count in one word). A worker joins by bumping the participant count
//! while the job is open, then claims chunks from the job's counter. When every chunk
//! is claimed the caller closes the job, so late workers skip it, and waits for the
//! participants to leave before the job (borrowed from its stack) goes away.
//! One job runs at a time; a caller that finds the pool busy (a nested call or a
//! second thread) runs its chunks inline.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::{Condvar, Mutex, TryLockError};
use std::time::{Duration, Instant};

/// How long an idle worker spins before parking: covers the gaps between the
/// matmuls of a forward pass without burning a core between requests.
const SPIN: Duration = Duration::from_micros(100);

/// Busy-wait rounds before a waiting thread starts yielding its core between checks,
/// so a preempted thread it waits for (on a loaded machine) gets to run.
const PURE_SPINS: u32 = 2000;

/// One round of a busy-wait: a pause at first, then a yield to the scheduler.
#[inline]
fn backoff(round: u32) {
    if round < PURE_SPINS {
        std::hint::spin_loop();
    } else {
        std::thread::yield_now();
    }
}

const OPEN: u64 = 1 << 31;
const PARTICIPANTS: u64 = OPEN - 1;
const EPOCH_SHIFT: u32 = 32;

/// One parallel section, living on the caller's stack while it runs.
struct Job<'a> {
    f: &'a (dyn Fn(usize) + Sync),
    chunks: usize,
    next: AtomicUsize,
    panicked: AtomicBool,
}

impl Job<'_> {
    /// Claims and runs chunks until none are left.
    fn work(&self) {
        loop {
            let i = self.next.fetch_add(1, Relaxed);
            if i >= self.chunks {
                return;
            }
            if catch_unwind(AssertUnwindSafe(|| (self.f)(i))).is_err() {
                self.panicked.store(true, Relaxed);
            }
        }
    }
}

pub struct Pool {
    threads: usize,
    /// `epoch << 32 | OPEN? | participants`.
    state: AtomicU64,
    job: AtomicPtr<Job<'static>>,
    /// Held by the thread whose job is running.
    caller: Mutex<()>,
    sleepers: AtomicUsize,
    park: Mutex<()>,
    wake: Condvar,
}

impl Pool {
    /// A pool of `threads` threads in all: the caller plus `threads - 1` workers.
    pub fn new(threads: usize) -> Result<&'static Pool, std::io::Error> {
        let pool: &'static Pool = Box::leak(Box::new(Pool {
            threads: threads.max(1),
            state: AtomicU64::new(0),
            job: AtomicPtr::new(std::ptr::null_mut()),
            caller: Mutex::new(()),
            sleepers: AtomicUsize::new(0),
            park: Mutex::new(()),
            wake: Condvar::new(),
        }));
        for i in 1..pool.threads {
            std::thread::Builder::new()
                .name(format!("kernels-{i}"))
                .spawn(move || pool.worker())?;
        }
        Ok(pool)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f(0..chunks)` across the pool, the calling thread included.
    pub fn run(&self, chunks: usize, f: &(dyn Fn(usize) + Sync)) {
        let guard = match self.caller.try_lock() {
            Ok(g) => Some(g),
            Err(TryLockError::Poisoned(p)) => Some(p.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        if guard.is_none() || self.threads == 1 || chunks <= 1 {
            (0..chunks).for_each(f);
            return;
        }
        let job = Job {
            f,
            chunks,
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
        };
        // SAFETY (lifetime erasure): workers only dereference `job` after joining the
        // open job, and `Close` below waits for every participant to leave before
        // `job` goes out of scope, unwinding included.
        let ptr = (&job as *const Job<'_>).cast::<Job<'static>>().cast_mut();
        self.job.store(ptr, SeqCst);
        let epoch = ((self.state.load(SeqCst) >> EPOCH_SHIFT) + 1) & 0xFFFF_FFFF;
        self.state.store(epoch << EPOCH_SHIFT | OPEN, SeqCst);
        if self.sleepers.load(SeqCst) > 0 {
            let _lock = self.park.lock().unwrap_or_else(|p| p.into_inner());
            self.wake.notify_all();
        }
        let close = Close(self);
        job.work();
        drop(close);
        if job.panicked.load(Relaxed) {
            panic!("a kernel task panicked");
        }
    }

    fn worker(&self) {
        let mut seen = 0u64;
        loop {
            let state = self.wait_for_new_epoch(seen);
            seen = state >> EPOCH_SHIFT;
            if state & OPEN != 0 && self.join(state) {
                let job = self.job.load(SeqCst);
                // SAFETY: we joined the open job, so the caller keeps it alive until
                // we leave (`state` participant count drops back).
                unsafe { (*job).work() };
                self.state.fetch_sub(1, SeqCst);
            }
        }
    }

    /// Bumps the participant count if the job seen in `state` is still open.
    fn join(&self, mut state: u64) -> bool {
        let epoch = state >> EPOCH_SHIFT;
        while state >> EPOCH_SHIFT == epoch && state & OPEN != 0 {
            match self
                .state
                .compare_exchange_weak(state, state + 1, SeqCst, SeqCst)
            {
                Ok(_) => return true,
                Err(now) => state = now,
            }
        }
        false
    }

    /// Spins, then parks, until the epoch moves past `seen`; returns the state.
    fn wait_for_new_epoch(&self, seen: u64) -> u64 {
        let start = Instant::now();
        let mut spins = 0u32;
        loop {
            let state = self.state.load(SeqCst);
            if state >> EPOCH_SHIFT != seen {
                return state;
            }
            spins = spins.saturating_add(1);
            if spins.is_multiple_of(64) && start.elapsed() > SPIN {
                break;
            }
            backoff(spins);
        }
        let mut lock = self.park.lock().unwrap_or_else(|p| p.into_inner());
        self.sleepers.fetch_add(1, SeqCst);
        let state = loop {
            let state = self.state.load(SeqCst);
            if state >> EPOCH_SHIFT != seen {
                break state;
            }
            lock = self.wake.wait(lock).unwrap_or_else(|p| p.into_inner());
        };
        self.sleepers.fetch_sub(1, SeqCst);
        state
    }
}

/// Closes the running job and waits until its participants leave (also on unwind).
struct Close<'a>(&'a Pool);

impl Drop for Close<'_> {
    fn drop(&mut self) {
        let pool = self.0;
        let state = pool.state.fetch_and(!OPEN, SeqCst) & !OPEN;
        let mut left = state & PARTICIPANTS;
        let mut round = 0u32;
        while left != 0 {
            backoff(round);
            round = round.saturating_add(1);
            left = pool.state.load(SeqCst) & PARTICIPANTS;
        }
        pool.job.store(std::ptr::null_mut(), SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Counts a chunk as running from creation until drop (unwinding included).
    struct Running<'a>(&'a AtomicUsize);

    impl<'a> Running<'a> {
        fn enter(count: &'a AtomicUsize) -> Self {
            count.fetch_add(1, SeqCst);
            Self(count)
        }
    }

    impl Drop for Running<'_> {
        fn drop(&mut self) {
            self.0.fetch_sub(1, SeqCst);
        }
    }

    /// The job handoff under stress: several threads submit many short jobs at once,
    /// some chunks panic and some nest a section of their own. Every chunk of every
    /// job runs exactly once (at most once after a panic); no chunk of a job is still running when its `run`
    /// returns or unwinds (the job lives on the caller's stack); a panic reaches its
    /// own caller only; and the pool keeps working.
    #[test]
    fn job_handoff_survives_many_short_jobs_panics_and_nesting() {
        let pool = Pool::new(4).expect("pool");
        std::thread::scope(|s| {
            for caller in 0..4usize {
                s.spawn(move || {
                    for round in 0..1500usize {
                        let chunks = 1 + (round * 7 + caller) % 13;
                        let hits: Vec<AtomicUsize> =
                            (0..chunks).map(|_| AtomicUsize::new(0)).collect();
                        let nested = AtomicUsize::new(0);
                        let running = AtomicUsize::new(0);
                        let panic_at = (round % 100 == 37).then_some(round % chunks);
                        let nest = round % 5 == 2;
                        let result = catch_unwind(AssertUnwindSafe(|| {
                            pool.run(chunks, &|i| {
                                let _running = Running::enter(&running);
                                hits[i].fetch_add(1, Relaxed);
                                if nest {
                                    // Runs inline: the pool is busy with this job.
                                    pool.run(3, &|_| {
                                        nested.fetch_add(1, Relaxed);
                                    });
                                }
                                if panic_at == Some(i) {
                                    panic!("chunk {i} of round {round} (expected)");
                                }
                            })
                        }));
                        assert_eq!(running.load(SeqCst), 0, "a chunk outlived its run");
                        assert_eq!(result.is_err(), panic_at.is_some(), "round {round}");
                        // A caller that runs its job inline stops at the panic.
                        let ran: Vec<usize> = hits.iter().map(|h| h.load(Relaxed)).collect();
                        if let Some(p) = panic_at {
                            assert!(ran[p] == 1 && ran.iter().all(|&h| h <= 1), "round {round}");
                        } else {
                            assert!(ran.iter().all(|&h| h == 1), "round {round}: {ran:?}");
                            let want = if nest { 3 * chunks } else { 0 };
                            assert_eq!(nested.load(Relaxed), want, "round {round}");
                        }
                    }
                });
            }
        });
        // The pool is idle and whole afterwards: a job still reaches every chunk.
        let sum = AtomicUsize::new(0);
        pool.run(64, &|i| {
            sum.fetch_add(i, Relaxed);
        });
        assert_eq!(sum.into_inner(), 64 * 63 / 2);
    }

    /// A job's borrowed data may be freed as soon as `run` returns: run many jobs
    /// whose closures own fresh heap data and check each saw its own.
    #[test]
    fn each_job_sees_only_its_own_borrowed_data() {
        let pool = Pool::new(3).expect("pool");
        for round in 0..3000usize {
            let data: Vec<usize> = vec![round; 8];
            let seen = AtomicUsize::new(0);
            pool.run(8, &|i| {
                seen.fetch_add(data[i], Relaxed);
            });
            drop(data);
            assert_eq!(seen.into_inner(), 8 * round);
        }
    }
}
