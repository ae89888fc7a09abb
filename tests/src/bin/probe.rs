//! The VM liveness suite's progress probe: asks to wake every PERIOD_MS and
//! records how late each wake-up came, until DURATION_S has passed. A
//! scheduler that leaves a runnable task waiting shows up as lateness.
//!
//! `probe PERIOD_MS DURATION_S` prints one line:
//! `probe: wakeups N late_max_us X late_p99_us Y late_avg_us Z late_max_cpu C`
//! (C: the CPU that the latest wake-up of all, X late, ran on: where it waited).

use std::time::{Duration, Instant};

extern "C" {
    // glibc's, linked by std anyway.
    fn sched_getcpu() -> i32;
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("probe PERIOD_MS DURATION_S"))
        .collect();
    let [period_ms, duration_s] = args[..] else {
        eprintln!("usage: probe PERIOD_MS DURATION_S");
        std::process::exit(2);
    };
    let period = Duration::from_millis(period_ms);
    let end = Instant::now() + Duration::from_secs(duration_s);
    let mut late_us = Vec::with_capacity((duration_s * 1000 / period_ms.max(1)) as usize + 1);
    let mut due = Instant::now() + period;
    let (mut worst, mut worst_cpu) = (0, -1);
    while due < end {
        std::thread::sleep(due.saturating_duration_since(Instant::now()));
        let now = Instant::now();
        let late = now.saturating_duration_since(due).as_micros() as u64;
        if late >= worst {
            // SAFETY: no arguments, no memory handed over.
            (worst, worst_cpu) = (late, unsafe { sched_getcpu() });
        }
        late_us.push(late);
        // The next wake-up is due one period after this one woke: a late
        // wake-up is counted once, not again for every period it spanned.
        due = now + period;
    }
    late_us.sort_unstable();
    let n = late_us.len();
    let p99 = late_us
        .get((n * 99 / 100).min(n.saturating_sub(1)))
        .copied()
        .unwrap_or(0);
    let avg = late_us.iter().sum::<u64>() / (n as u64).max(1);
    println!(
        "probe: wakeups {n} late_max_us {worst} late_p99_us {p99} late_avg_us {avg} late_max_cpu {worst_cpu}"
    );
}
