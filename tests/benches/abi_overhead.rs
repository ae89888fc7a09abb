//! Decisions per second of the host loop in the simulator: the `simple`
//! policy through the plugin ABI (libsimple.so) against the same policy
//! linked in directly. Prints figures; asserts nothing.

use std::time::Instant;

use plugin_api::CustomScheduler;
use rthulhu::dispatcher::{Dispatcher, Native, Policy, SliceOpts};
use rthulhu::plugin::Plugin;
use rthulhu::sim::{workload::Workload, Simulator};

const WORKLOAD: &str = r#"
cpus = 64
duration_ms = 20000
seed = 11
[[group]]
name = "hog"
count = 96
behaviour = { kind = "cpu-bound" }
[[group]]
name = "pingpong"
count = 64
behaviour = { kind = "ping-pong", runtime_us = 50 }
[[group]]
name = "bursty"
count = 64
behaviour = { kind = "bursty", run_us = 300, sleep_us = 700, jitter = 0.5 }
"#;

struct Run {
    decisions: u64,
    loop_ns: f64,
    total_ns: f64,
}

fn run<P: Policy>(policy: P, w: &Workload) -> Run {
    let mut d = Dispatcher::new(policy, Simulator::new(w), SliceOpts::default());
    let t0 = Instant::now();
    d.run().expect("simulation runs");
    let total = t0.elapsed().as_nanos() as f64;
    Run {
        decisions: d.stats.decisions,
        loop_ns: d.stats.busy.as_nanos() as f64,
        total_ns: total,
    }
}

fn main() {
    let release = !cfg!(debug_assertions);
    let lib = rthulhu_tests::built(release).join("libsimple.so");
    let w = Workload::parse("bench.toml".as_ref(), WORKLOAD).unwrap();
    let plugin = Plugin::load(&lib).expect("libsimple.so loads");

    // Warm up both paths once, then alternate to spread machine noise.
    run(plugin.construct("").unwrap(), &w);
    run(Native(simple::Simple::new("").unwrap()), &w);
    let (mut abi, mut native) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        abi.push(run(plugin.construct("").unwrap(), &w));
        native.push(run(Native(simple::Simple::new("").unwrap()), &w));
    }
    let best = |runs: &[Run], f: fn(&Run) -> f64| {
        runs.iter()
            .map(|r| f(r) / r.decisions as f64)
            .fold(f64::INFINITY, f64::min)
    };
    let (abi_loop, nat_loop) = (best(&abi, |r| r.loop_ns), best(&native, |r| r.loop_ns));
    let (abi_all, nat_all) = (best(&abi, |r| r.total_ns), best(&native, |r| r.total_ns));
    println!(
        "host loop, simple policy, {} decisions per run, best of 5",
        abi[0].decisions
    );
    println!("                         ns/decision   decisions/s   (loop only | loop + simulator)");
    println!(
        "through the ABI        {abi_loop:>8.1} | {abi_all:>7.1}   {:>11.0}",
        1e9 / abi_loop
    );
    println!(
        "in-process (no ABI)    {nat_loop:>8.1} | {nat_all:>7.1}   {:>11.0}",
        1e9 / nat_loop
    );
    println!(
        "ABI overhead: {:+.1}% (loop only), {:+.1}% (with simulator)",
        (abi_loop / nat_loop - 1.0) * 100.0,
        (abi_all / nat_all - 1.0) * 100.0
    );
    println!("goal: < 200 ns per decision, ABI overhead < 10%");
}
