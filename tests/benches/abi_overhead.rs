//! Decisions per second of the host loop: the `simple` policy through the
//! plugin ABI (libsimple.so) against the same policy linked in directly,
//! once with a kernel side that costs nothing (the loop and the policy
//! alone) and once against the simulator. Prints figures; asserts nothing.

use std::collections::VecDeque;
use std::time::Instant;

use plugin_api::{Counters, CpuTarget, CustomScheduler, DispatchedTask, QueuedTask};
use rthulhu::dispatcher::{Dispatcher, Native, Policy, SliceOpts};
use rthulhu::kernel::{ExitInfo, ExitKind, Kernel, KernelError, Wake};
use rthulhu::plugin::Plugin;
use rthulhu::sim::{workload::Workload, Simulator};

/// A kernel side that re-queues every dispatched task at once: what is
/// left to measure is the loop and the policy.
struct NullKernel {
    ring: VecDeque<QueuedTask>,
    left: u64,
    now: u64,
}

impl NullKernel {
    fn new(tasks: usize, decisions: u64) -> Self {
        let ring = (0..tasks)
            .map(|i| QueuedTask {
                pid: 1 + i as i32,
                weight: 100,
                ..Default::default()
            })
            .collect();
        NullKernel {
            ring,
            left: decisions,
            now: 0,
        }
    }
}

impl Kernel for NullKernel {
    fn wait(&mut self) -> Result<Wake, KernelError> {
        if self.left > 0 {
            return Ok(Wake::Work);
        }
        let done = ExitInfo {
            kind: ExitKind::Done,
            code: 0,
            reason: String::new(),
            message: String::new(),
            dump: String::new(),
        };
        Ok(Wake::Exit(done))
    }
    fn dequeue(&mut self) -> Option<QueuedTask> {
        self.ring.pop_front()
    }
    fn dispatch(&mut self, d: &DispatchedTask) -> Result<(), KernelError> {
        self.now += 1_000;
        let t = QueuedTask {
            pid: d.pid,
            weight: 100,
            vtime: d.vtime,
            start_ts: self.now,
            stop_ts: self.now + 500,
            ..Default::default()
        };
        self.ring.push_back(t);
        self.left = self.left.saturating_sub(1);
        Ok(())
    }
    fn default_select_cpu(&mut self, _: &QueuedTask) -> CpuTarget {
        CpuTarget::Any
    }
    fn nr_cpus(&self) -> u32 {
        64
    }
    fn now_ns(&self) -> u64 {
        self.now
    }
    fn counters(&self) -> Counters {
        Counters::default()
    }
    fn occupancy(&self) -> rthulhu::occupancy::Occupancy {
        Default::default()
    }
    fn set_scheduled(&mut self, _: u64) {}
}

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

fn run<P: Policy, K: Kernel>(policy: P, kernel: K) -> Run {
    let mut d = Dispatcher::new(policy, kernel, SliceOpts::default());
    let t0 = Instant::now();
    d.run().expect("simulation runs");
    let total = t0.elapsed().as_nanos() as f64;
    Run {
        decisions: d.stats.decisions,
        loop_ns: d.stats.busy.as_nanos() as f64,
        total_ns: total,
    }
}

/// Runs both paths five times each on kernels from `make` and prints a table.
fn table<K: Kernel>(title: &str, plugin: &Plugin, make: impl Fn() -> K) {
    // Warm up both paths once, then alternate to spread machine noise.
    run(plugin.construct("").unwrap(), make());
    run(Native::new(simple::Simple::new("").unwrap()), make());
    let (mut abi, mut native) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        abi.push(run(plugin.construct("").unwrap(), make()));
        native.push(run(Native::new(simple::Simple::new("").unwrap()), make()));
    }
    let best = |runs: &[Run], f: fn(&Run) -> f64| {
        runs.iter()
            .map(|r| f(r) / r.decisions as f64)
            .fold(f64::INFINITY, f64::min)
    };
    let (abi_loop, nat_loop) = (best(&abi, |r| r.loop_ns), best(&native, |r| r.loop_ns));
    let (abi_all, nat_all) = (best(&abi, |r| r.total_ns), best(&native, |r| r.total_ns));
    println!("{title}: {} decisions per run, best of 5", abi[0].decisions);
    println!("                       ns/decision: loop   loop+kernel side   decisions/s");
    println!(
        "  through the ABI                 {abi_loop:>8.1} {abi_all:>13.1}   {:>11.0}",
        1e9 / abi_loop
    );
    println!(
        "  in-process (no ABI)             {nat_loop:>8.1} {nat_all:>13.1}   {:>11.0}",
        1e9 / nat_loop
    );
    println!(
        "  ABI overhead: {:+.1}% (loop), {:+.1}% (loop + kernel side)",
        (abi_loop / nat_loop - 1.0) * 100.0,
        (abi_all / nat_all - 1.0) * 100.0
    );
}

fn main() {
    let release = !cfg!(debug_assertions);
    let lib = rthulhu_tests::built(release).join("libsimple.so");
    let w = Workload::parse("bench.toml".as_ref(), WORKLOAD).unwrap();
    let plugin = Plugin::load(&lib).expect("libsimple.so loads");
    println!("host loop with the simple policy (vtime mode)");
    table("null kernel side, 256 tasks, 64 CPUs", &plugin, || {
        NullKernel::new(256, 2_000_000)
    });
    table("simulator, 224 tasks, 64 CPUs", &plugin, || {
        Simulator::new(&w)
    });
    println!("goal: < 200 ns per decision, ABI overhead < 10%");
}
