//! Running one forward pass on the rayon pool with the other workers kept polling for jobs
//! until it returns.
//!
//! Called from outside the pool, each of a step's ~120 parallel regions would wake the pool
//! from a blocked caller, and the serial work between regions would compete for the cores
//! with the pool's spinning workers (on 2 cores, perf showed ~25% of decode time in
//! sched_yield/switches). On a worker, the caller's thread sleeps once per step and the
//! worker running the step takes its share of every parallel region itself. Left to rayon, an
//! idle worker sleeps after ~30 fruitless rounds, and waking it for the next of the step's
//! ~360 parallel regions costs a futex wake and, on a VM, a halted vCPU's wake-up (perf at 32
//! sequences: ~8% of the time in futex and scheduler code); keeping them awake made one
//! sequence and 32 both ~1.07x faster.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Most workers kept polling during a step (a bound on spinning threads on big machines).
const MAX_KEEPERS: usize = 63;

/// Runs its closure when dropped (also while unwinding).
struct OnDrop<F: FnMut()>(F);

impl<F: FnMut()> Drop for OnDrop<F> {
    fn drop(&mut self) {
        (self.0)()
    }
}

/// Forward passes running in the process (any model), for `keep_awake`.
static ACTIVE_FORWARDS: AtomicUsize = AtomicUsize::new(0);

/// Runs the pool's pending jobs on this worker until `done` (set when the step's forward
/// pass returns), spinning between them instead of sleeping. A keeper picked up by the
/// step's own thread (`owner`, while it waits inside a join) returns at once: that thread
/// has the step to finish. Keepers run only while their forward pass is the only one in the
/// process: a keeper stolen by a worker that waits inside *another* forward pass's join
/// would hold that pass until its own finished, and two such keepers could each hold the
/// other's pass forever.
fn keep_awake(done: &AtomicBool, owner: Option<usize>) {
    if rayon::current_thread_index() == owner {
        return;
    }
    while !done.load(Ordering::Acquire) && ACTIVE_FORWARDS.load(Ordering::Acquire) == 1 {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

/// Runs `f` (one forward pass) on a rayon worker with the other workers polling until it
/// returns (or panics: the keepers are released either way).
pub fn run_step<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    let alone = ACTIVE_FORWARDS.fetch_add(1, Ordering::AcqRel) == 0;
    let _active = OnDrop(|| {
        ACTIVE_FORWARDS.fetch_sub(1, Ordering::AcqRel);
    });
    if rayon::current_thread_index().is_some() {
        return f();
    }
    let done = AtomicBool::new(false);
    let mut out = None;
    rayon::scope(|s| {
        let owner = rayon::current_thread_index();
        let keepers = if alone {
            rayon::current_num_threads().min(MAX_KEEPERS + 1) - 1
        } else {
            0
        };
        for _ in 0..keepers {
            let done = &done;
            s.spawn(move |_| keep_awake(done, owner));
        }
        // Set however the pass ends: a panic must release the keepers too, or the scope
        // would wait for them forever instead of passing the panic on.
        let _done = OnDrop(|| done.store(true, Ordering::Release));
        out = Some(f());
    });
    out.expect("the step ran")
}
