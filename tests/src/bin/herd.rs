//! The VM liveness suite's thundering herd: THREADS threads sleep on one
//! condition variable, are woken at once, each spins for SPIN_US and exits.
//!
//! `herd THREADS SPIN_US` prints `herd: threads N woken_in_ms X`: how long it
//! took from the broadcast until the last thread had run.

use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("herd THREADS SPIN_US"))
        .collect();
    let [threads, spin_us] = args[..] else {
        eprintln!("usage: herd THREADS SPIN_US");
        std::process::exit(2);
    };
    // (open, threads waiting): a thread counts itself under the lock right
    // before it waits, so once the count is full every thread sleeps.
    let gate = Arc::new((Mutex::new((false, 0u64)), Condvar::new()));
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let gate = gate.clone();
            std::thread::Builder::new()
                .stack_size(64 * 1024)
                .spawn(move || {
                    let (lock, cv) = &*gate;
                    let mut g = lock.lock().unwrap();
                    g.1 += 1;
                    while !g.0 {
                        g = cv.wait(g).unwrap();
                    }
                    drop(g);
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_micros(spin_us) {
                        std::hint::spin_loop();
                    }
                })
                .expect("spawning a herd thread")
        })
        .collect();
    loop {
        let mut g = gate.0.lock().unwrap();
        if g.1 == threads {
            g.0 = true;
            break;
        }
        drop(g);
        std::thread::sleep(Duration::from_millis(1));
    }
    let start = Instant::now();
    gate.1.notify_all();
    for h in handles {
        h.join().expect("herd thread");
    }
    println!(
        "herd: threads {threads} woken_in_ms {}",
        start.elapsed().as_millis()
    );
}
