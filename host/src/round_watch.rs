//! The host's own watchdog: a round of the dispatch loop that runs past a
//! bound (a plugin that spins or deadlocks) ends the process, so the kernel
//! unloads the scheduler at once and its default scheduler takes over. Signals
//! only set flags the loop reads between rounds, so without this a stuck
//! plugin would also leave SIGTERM unanswered.
//!
//! The loop marks each round with [`enter`] and [`leave`] (two atomic
//! stores); [`arm`] starts the thread that watches the marks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// When the current round started (ns since [`epoch`], plus 1); 0: between rounds.
static STARTED: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ns() -> u64 {
    u64::try_from(epoch().elapsed().as_nanos()).unwrap_or(u64::MAX)
}

/// A round starts.
pub fn enter() {
    STARTED.store(now_ns().saturating_add(1), Ordering::Release);
}

/// The round ended.
pub fn leave() {
    STARTED.store(0, Ordering::Release);
}

/// How long the current round has run, if one is running.
pub fn running_for() -> Option<Duration> {
    match STARTED.load(Ordering::Acquire) {
        0 => None,
        s => Some(Duration::from_nanos(now_ns().saturating_sub(s - 1))),
    }
}

/// How long a round may keep a stop signal waiting before the watchdog
/// serves it itself.
const STOP_GRACE: Duration = Duration::from_millis(200);

/// Starts the watchdog: a round longer than `bound` prints one line and ends
/// the process with exit status 1 (`_exit`: nothing else of the process
/// runs, and its BPF link closes with it, so the kernel unloads the
/// scheduler at once). When `stop_requested` (SIGINT/SIGTERM) and a round
/// has kept it waiting past a short grace, it ends the process with status 0
/// the same way: a signal is served even while a plugin spins.
pub fn arm(bound: Duration, stop_requested: fn() -> bool) -> std::io::Result<()> {
    epoch();
    // A quarter of the bound, at most 250 ms: each tick takes a CPU from a
    // workload (at the default bound, 4 times a second rather than 20).
    let tick = (bound / 4).clamp(Duration::from_millis(5), Duration::from_millis(250));
    std::thread::Builder::new()
        .name("rthulhu-watch".into())
        .spawn(move || loop {
            std::thread::sleep(tick);
            if stop_requested() && running_for().is_some_and(|t| t > STOP_GRACE) {
                eprintln!("host: stopping on a signal while the plugin is busy; the kernel's default scheduler takes over");
                // SAFETY: _exit has no preconditions; it ends the process at once.
                unsafe { libc::_exit(0) };
            }
            if let Some(t) = running_for().filter(|t| *t > bound) {
                eprintln!(
                    "host: a round of the dispatch loop has run for {} ms (bound --round-timeout-ms {}): the plugin is stuck; exiting, the kernel's default scheduler takes over",
                    t.as_millis(),
                    bound.as_millis()
                );
                // SAFETY: _exit has no preconditions; it ends the process at once.
                unsafe { libc::_exit(1) };
            }
        })
        .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_how_long_a_round_runs() {
        enter();
        std::thread::sleep(Duration::from_millis(20));
        let t = running_for().expect("in a round");
        assert!(t >= Duration::from_millis(20), "{t:?}");
        leave();
        assert_eq!(running_for(), None);
    }
}
