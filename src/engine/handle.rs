//! `EngineHandle`: starts the engine thread and is the `EngineClient` the server uses.
//!
//! The engine runs on its own OS thread (the forward pass is CPU-bound and must not block
//! the async runtime). Commands arrive over a std channel; while there is work the loop
//! polls it without blocking, and when idle it blocks on it. A panic inside the loop is
//! caught: every live request gets an error, `is_alive` turns false, /health reports 503.
//!
//! Admission control: `submit` refuses with `QueueFull` when requests not yet running
//! (queued commands + the scheduler's waiting queue) reach `max_waiting`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::core::{EngineCore, Submission};
use super::types::{EngineClient, EngineStats, GenerateRequest, RequestStream, SubmitError};

pub struct EngineHandle {
    tx: Mutex<mpsc::Sender<Submission>>,
    alive: Arc<AtomicBool>,
    /// Submissions sent but not yet taken by the loop.
    in_flight: Arc<AtomicUsize>,
    stats: Arc<Mutex<EngineStats>>,
    max_waiting: usize,
}

impl EngineHandle {
    /// Starts the engine thread around `core`.
    pub fn spawn(mut core: EngineCore, max_waiting: usize) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Submission>();
        let alive = Arc::new(AtomicBool::new(true));
        let in_flight = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(Mutex::new(EngineStats::default()));
        let (a, f, st) = (alive.clone(), in_flight.clone(), stats.clone());
        std::thread::Builder::new()
            .name("ponder-engine".into())
            .spawn(move || {
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run_loop(&mut core, &rx, &f, &st)
                }));
                a.store(false, Ordering::Release);
                if r.is_err() {
                    tracing::error!("engine loop panicked; failing all requests");
                    // The core may be mid-step; its request channels are still valid.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        core.fail_all("internal engine error")
                    }));
                }
            })?;
        Ok(EngineHandle {
            tx: Mutex::new(tx),
            alive,
            in_flight,
            stats,
            max_waiting,
        })
    }
}

fn run_loop(
    core: &mut EngineCore,
    rx: &mpsc::Receiver<Submission>,
    in_flight: &AtomicUsize,
    stats: &Mutex<EngineStats>,
) {
    let publish = |core: &EngineCore| {
        if let Ok(mut s) = stats.lock() {
            *s = core.stats();
        }
    };
    loop {
        // Intake: block while idle, otherwise take what is queued without waiting.
        if !core.has_work() {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(s) => {
                    in_flight.fetch_sub(1, Ordering::AcqRel);
                    core.add(s);
                }
                Err(RecvTimeoutError::Timeout) => {
                    publish(core);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        while let Ok(s) = rx.try_recv() {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            core.add(s);
        }
        core.reap_cancelled();
        let n = core.step();
        publish(core);
        if n == 0 && core.has_work() {
            // Nothing runnable (e.g. waiting on blocks held by requests being cancelled):
            // yield briefly instead of spinning.
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

impl EngineClient for EngineHandle {
    fn submit(&self, req: GenerateRequest) -> Result<RequestStream, SubmitError> {
        if !self.is_alive() {
            return Err(SubmitError::EngineDead);
        }
        let waiting = self.stats.lock().map(|s| s.num_waiting).unwrap_or(0);
        if waiting + self.in_flight.load(Ordering::Acquire) >= self.max_waiting {
            return Err(SubmitError::QueueFull {
                limit: self.max_waiting,
            });
        }
        let (stream, tx, cancelled) = RequestStream::channel();
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let sent = self
            .tx
            .lock()
            .map_err(|_| SubmitError::EngineDead)?
            .send(Submission { req, tx, cancelled });
        if sent.is_err() {
            self.in_flight.fetch_sub(1, Ordering::AcqRel);
            return Err(SubmitError::EngineDead);
        }
        Ok(stream)
    }

    fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Acquire)
    }

    fn stats(&self) -> EngineStats {
        self.stats.lock().map(|s| s.clone()).unwrap_or_default()
    }
}
