//! The real host loop driving the real plugin libraries against the simulator.

use plugin_api::{Counters, CpuTarget, DispatchedTask, QueuedTask};
use rthulhu::dispatcher::{Dispatcher, SliceOpts};
use rthulhu::kernel::{Kernel, KernelError, Wake};
use rthulhu::plugin::Plugin;
use rthulhu::sim::{workload::Workload, Simulator};
use rthulhu_tests::{group, host, plugin, repo, simulate, stderr, workload};

/// A kernel backend that records the order tasks arrive and are dispatched.
struct Recording {
    inner: Simulator,
    arrived: Vec<i32>,
    dispatched: Vec<i32>,
}

impl Kernel for Recording {
    fn wait(&mut self) -> Result<Wake, KernelError> {
        self.inner.wait()
    }
    fn dequeue(&mut self) -> Option<QueuedTask> {
        let t = self.inner.dequeue()?;
        self.arrived.push(t.pid);
        Some(t)
    }
    fn dispatch(&mut self, t: &DispatchedTask) -> Result<(), KernelError> {
        self.dispatched.push(t.pid);
        self.inner.dispatch(t)
    }
    fn default_select_cpu(&mut self, t: &QueuedTask) -> CpuTarget {
        self.inner.default_select_cpu(t)
    }
    fn nr_cpus(&self) -> u32 {
        self.inner.nr_cpus()
    }
    fn now_ns(&self) -> u64 {
        self.inner.now_ns()
    }
    fn counters(&self) -> Counters {
        self.inner.counters()
    }
    fn occupancy(&self) -> rthulhu::occupancy::Occupancy {
        self.inner.occupancy()
    }
    fn set_scheduled(&mut self, pending: u64) {
        self.inner.set_scheduled(pending)
    }
}

fn orders(mode: &str) -> (Vec<i32>, Vec<i32>) {
    let lib = Plugin::load(&plugin("simple")).expect("libsimple.so loads");
    assert_eq!(lib.name(), "simple");
    let policy = lib.construct(&format!("mode = \"{mode}\"")).unwrap();
    let w = Workload::load(&repo().join("configs/workloads/mixed.toml")).unwrap();
    let kernel = Recording {
        inner: Simulator::new(&w),
        arrived: vec![],
        dispatched: vec![],
    };
    let mut d = Dispatcher::new(policy, kernel, SliceOpts::default());
    let exit = d.run().expect("run completes");
    assert!(!exit.kind.is_ejection(), "{exit:?}");
    let pending = d.kernel.arrived.len() - d.kernel.dispatched.len();
    assert!(pending <= 16, "{pending} tasks never dispatched");
    let mut arrived = d.kernel.arrived;
    arrived.truncate(d.kernel.dispatched.len());
    (arrived, d.kernel.dispatched)
}

#[test]
fn fifo_mode_dispatches_in_arrival_order() {
    let (arrived, dispatched) = orders("fifo");
    assert!(
        dispatched.len() > 1000,
        "only {} dispatches",
        dispatched.len()
    );
    assert_eq!(arrived, dispatched);
}

#[test]
fn vtime_mode_reorders_by_virtual_time() {
    let (arrived, dispatched) = orders("vtime");
    assert!(dispatched.len() > 1000);
    assert_ne!(arrived, dispatched, "vtime mode behaved like FIFO");
}

#[test]
fn vtime_mode_shares_cpu_by_weight() {
    let (out, r) = simulate(
        "simple",
        "mode = \"vtime\"",
        &repo().join("configs/workloads/weights.toml"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let (a, b) = (group(&r, "nice0"), group(&r, "nice10"));
    let ratio = a["cpu_share"].as_f64().unwrap() / b["cpu_share"].as_f64().unwrap();
    // sched_ext weights: nice 0 → 100, nice 10 → 11.
    let want = a["weight"].as_f64().unwrap() / b["weight"].as_f64().unwrap();
    assert!((want - 100.0 / 11.0).abs() < 1e-9, "weights {a} {b}");
    assert!(
        (ratio / want - 1.0).abs() < 0.10,
        "share ratio {ratio:.2}, want {want:.2} ±10%"
    );
}

#[test]
fn fifo_mode_ignores_weights() {
    let (out, r) = simulate(
        "simple",
        "mode = \"fifo\"",
        &repo().join("configs/workloads/weights.toml"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let ratio = group(&r, "nice0")["cpu_share"].as_f64().unwrap()
        / group(&r, "nice10")["cpu_share"].as_f64().unwrap();
    assert!((ratio - 1.0).abs() < 0.05, "fifo share ratio {ratio:.2}");
}

#[test]
fn mixed_workload_ends_without_ejection() {
    for mode in ["vtime", "fifo"] {
        let (out, r) = simulate(
            "simple",
            &format!("mode = \"{mode}\""),
            &repo().join("configs/workloads/mixed.toml"),
        );
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        assert_eq!(r["ejected"], false, "{mode}: {r}");
        assert!(r["dispatched"].as_u64().unwrap() > 1000, "{r}");
        for g in r["groups"].as_array().unwrap() {
            assert!(
                g["runs"].as_u64().unwrap() > 0,
                "{mode}: group starved: {g}"
            );
            assert!(g["cpu_share"].as_f64().unwrap() > 0.0, "{g}");
            assert!(g["wakeup_p50_ns"].as_u64() <= g["wakeup_p99_ns"].as_u64());
            assert!(g["wakeup_p99_ns"].as_u64() <= g["wakeup_max_ns"].as_u64());
        }
        // Periodic tasks need 1 ms every 10 ms: they must get their 10%.
        let share = group(&r, "periodic")["cpu_share"].as_f64().unwrap();
        assert!(
            (share - 0.10).abs() < 0.01,
            "{mode}: periodic share {share}"
        );
    }
}

#[test]
fn same_seed_same_result() {
    let w = repo().join("configs/workloads/mixed.toml");
    let strip = |mut v: serde_json::Value| {
        v.as_object_mut().unwrap().remove("decisions_per_sec");
        v
    };
    let (_, a) = simulate("simple", "", &w);
    let (_, b) = simulate("simple", "", &w);
    assert_eq!(strip(a.clone()), strip(b));
    let other = std::fs::read_to_string(&w)
        .unwrap()
        .replace("seed = 7", "seed = 8");
    let (_, c) = simulate("simple", "", &workload("seed8", &other));
    assert_ne!(strip(a), strip(c), "the seed changes nothing");
}

#[test]
fn plugin_panic_is_a_clean_error() {
    let (out, _) = simulate(
        "panicky",
        "after_calls = 50",
        &repo().join("configs/workloads/mixed.toml"),
    );
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("plugin panicky panicked in select_cpu: deliberate test panic"),
        "{err}"
    );
}

#[test]
fn hoarding_plugin_is_rescued_not_ejected() {
    // As on the real path: what a plugin hoards is moved to the fallback
    // queue within a heartbeat or two of a CPU idling, so no task waits for
    // the watchdog and every group keeps running.
    let mixed = std::fs::read_to_string(repo().join("configs/workloads/mixed.toml")).unwrap();
    let w = workload("hoard", &format!("timeout_ms = 500\n{mixed}"));
    let (out, r) = simulate("hoarder", "after_calls = 100", &w);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(r["ejected"], false, "{r}");
    assert!(r["rescued"].as_u64().unwrap() > 0, "{r}");
    for g in r["groups"].as_array().unwrap() {
        assert!(g["runtime_ns"].as_u64().unwrap() > 0, "group starved: {g}");
    }
}

#[test]
fn a_plugin_that_never_returns_is_ended_by_the_round_watchdog() {
    let config = workload(
        "spinner-config",
        &format!(
            "[scheduler]\nplugin = {:?}\n[plugin]\nafter_calls = 20\n",
            plugin("spinner")
        ),
    );
    let start = std::time::Instant::now();
    let out = host(&[
        "--config",
        config.to_str().unwrap(),
        "--simulate",
        repo()
            .join("configs/workloads/mixed.toml")
            .to_str()
            .unwrap(),
        "--round-timeout-ms",
        "300",
    ]);
    let took = start.elapsed();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("the plugin is stuck"), "{err}");
    assert!(
        took < std::time::Duration::from_millis(300 + 2000),
        "took {took:?} for a 300 ms bound"
    );
}

#[test]
fn messaging_reads_what_is_written_and_switches_cost_throughput() {
    // hackbench's shape, small: 4 senders and 4 receivers on 2 CPUs.
    let read = |name: &str, switch_us: u64, buffer: u32| {
        let text = format!(
            "cpus = 2\nduration_ms = 500\nswitch_us = {switch_us}\n[[group]]\nname = \"hb\"\n\
             count = 8\nbehaviour = {{ kind = \"messaging\", runtime_us = 5, buffer = {buffer} }}\n"
        );
        let (out, r) = simulate("simple", "mode = \"vtime\"", &workload(name, &text));
        assert!(out.status.success(), "{name}: {}", stderr(&out));
        assert_eq!(r["ejected"], false, "{name}: {r}");
        group(&r, "hb")["runs"].as_u64().unwrap()
    };
    // A message costs 5 µs to write and 5 to read: 2 CPUs for 500 ms read
    // at most 100000, and with nothing else to pay they come close.
    let free = read("msg-free", 0, 64);
    assert!((80_000..=100_000).contains(&free), "{free} messages read");
    // 50 µs a switch: with a 64-message buffer switches are rare (a
    // receiver drains many messages per run), so a cheaper one hides in the
    // noise of the threshold.
    let switching = read("msg-switch", 50, 64);
    assert!(
        switching < free * 95 / 100,
        "a 50 µs switch cost nothing: {switching} vs {free}"
    );
    // A one-message buffer makes every write wait for a read: more
    // switches, so slower, but not stuck.
    let tight = read("msg-tight", 50, 1);
    assert!(tight > 1000 && tight < switching, "{tight} vs {switching}");
}

#[test]
fn only_the_look_ahead_window_runs_tasks_out_of_the_plugins_order() {
    let w = Workload::load(&repo().join("configs/workloads/priority.toml")).unwrap();
    let run = |queue_ahead| {
        let lib = Plugin::load(&plugin("simple")).expect("libsimple.so loads");
        // Aging off: an aged pick is the plugin's own choice out of key
        // order, which this count cannot tell from the window's.
        let policy = lib.construct("mode = \"vtime\"\nmax_wait_ms = 0").unwrap();
        let slices = SliceOpts {
            queue_ahead,
            ..SliceOpts::default()
        };
        let r = rthulhu::sim::simulate("simple", policy, &w, slices, true).unwrap();
        assert!(!r.ejected, "{:?}", r.exit);
        (r.inversions, r.decided_runs)
    };
    // Every choice waiting for a free CPU: the kernel follows the plugin.
    let (none, runs) = run(0);
    assert!(runs > 1000, "{runs} decided runs");
    assert_eq!(
        none, 0,
        "{none} of {runs} runs out of order with no look-ahead"
    );
    // One task per CPU ahead: some runs go before a task the plugin would
    // have picked, but few.
    let (some, runs) = run(1);
    assert!(
        some > 0 && some * 5 < runs,
        "{some} of {runs} runs out of order with a look-ahead of 1"
    );
}

#[test]
fn a_cache_whose_queue_is_empty_takes_from_the_others() {
    // 5 hogs on 4 CPUs in 2 caches: 3 start in the first cache, 2 in the
    // second. Without taking from the other cache's queue, the first three
    // would share 2 CPUs (2/3 each) while the other two had one each.
    let mut text = String::from("cpus = 4\nllcs = 2\nduration_ms = 3000\n");
    for h in 0..5 {
        text += &format!(
            "[[group]]\nname = \"h{h}\"\ncount = 1\nbehaviour = {{ kind = \"cpu-bound\" }}\n"
        );
    }
    let (out, r) = simulate("simple", "mode = \"vtime\"", &workload("two-caches", &text));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r["ejected"], false, "{r}");
    let shares: Vec<f64> = (0..5)
        .map(|h| group(&r, &format!("h{h}"))["cpu_share"].as_f64().unwrap())
        .collect();
    let total: f64 = shares.iter().sum();
    assert!(total > 0.97, "CPUs idled: {total:.3} of the machine used");
    let (min, max) = shares
        .iter()
        .fold((1.0f64, 0.0f64), |(a, b), &s| (a.min(s), b.max(s)));
    assert!(min / max > 0.85, "unfair across caches: {shares:?}");
}

#[test]
fn a_cache_whose_cpus_rt_tasks_hold_does_not_strand_its_queue() {
    // RT tasks hold both CPUs of the second cache 90 ms in every 100: tasks
    // left in that cache's queue must not wait for them while the first
    // cache's CPUs keep finding work in theirs.
    let mut text = String::from("cpus = 4\nllcs = 2\nduration_ms = 3000\n");
    for cpu in [2, 3] {
        text += &format!("[[rt]]\ncpu = {cpu}\nperiod_us = 100000\nruntime_us = 90000\n");
    }
    text += "[[group]]\nname = \"hog\"\ncount = 8\nbehaviour = { kind = \"cpu-bound\" }\n";
    let (out, r) = simulate("simple", "mode = \"vtime\"", &workload("rt-cache", &text));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r["ejected"], false, "{r}");
    let wait = group(&r, "hog")["wait_max_ns"].as_u64().unwrap();
    assert!(wait < 60_000_000, "a hog waited {} ms", wait / 1_000_000);
}

#[test]
fn renewed_slices_spare_host_rounds_without_moving_the_shares() {
    // Two hogs on two CPUs and a sleeper that preempts one of them (its
    // last run is short), as does the host thread each round: the hog
    // preempted waits, so the other's slice end finds a task waiting and
    // cannot keep its CPU. Each plugin renews such a slice in the kernel
    // instead of asking the host.
    let w = workload(
        "renewal",
        "cpus = 2\nduration_ms = 3000\nseed = 5\nhost_latency_us = 50\n\
         [[group]]\nname = \"hog\"\ncount = 2\nbehaviour = { kind = \"cpu-bound\" }\n\
         [[group]]\nname = \"sleeper\"\ncount = 1\n\
         behaviour = { kind = \"bursty\", run_us = 800, sleep_us = 2500, jitter = 0.5 }\n",
    );
    for p in ["simple", "deadline", "strategy"] {
        let (out, on) = simulate(p, "", &w);
        assert!(out.status.success(), "{p}: {}", stderr(&out));
        let (out, off) = simulate(p, "renew_slices = 0", &w);
        assert!(out.status.success(), "{p}: {}", stderr(&out));
        let renewed = on["renewed"].as_u64().unwrap();
        assert!(renewed > 50, "{p}: {renewed} renewals: {on}");
        assert_eq!(off["renewed"], 0, "{p}: {off}");
        // Slice ends with nothing waiting keep the CPU (SCX_ENQ_LAST).
        assert!(on["kept"].as_u64().unwrap() > 0, "{p}: {on}");
        let (rounds_on, rounds_off) = (
            on["host_rounds"].as_u64().unwrap(),
            off["host_rounds"].as_u64().unwrap(),
        );
        assert!(
            rounds_on * 10 < rounds_off * 9,
            "{p}: {rounds_on} host rounds with renewals, {rounds_off} without"
        );
        for g in ["hog", "sleeper"] {
            let (a, b) = (
                group(&on, g)["cpu_share"].as_f64().unwrap(),
                group(&off, g)["cpu_share"].as_f64().unwrap(),
            );
            assert!((a - b).abs() < 0.02, "{p}: {g} share {a:.3} against {b:.3}");
        }
    }
}

#[test]
fn no_slice_is_renewed_while_the_host_holds_a_task() {
    // Eight hogs on four CPUs: the plugin always holds some, which may rank
    // before a hog whose slice ends, so every slice end goes to the plugin
    // (the host's own order, as without renewals).
    let (out, r) = simulate(
        "simple",
        "",
        &repo().join("configs/workloads/interactive.toml"),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r["renewed"], 0, "{r}");
}

/// `hogs` CPU hogs and a sleeper whose wake-ups go through the host (no
/// preemption in the kernel, no renewals) on `cpus` CPUs, host rounds of
/// 200 µs, under `simple`: the report.
fn hogs_and_a_sleeper(name: &str, cpus: u32, hogs: u32, ms: u64) -> serde_json::Value {
    let w = workload(
        name,
        &format!(
            "cpus = {cpus}\nduration_ms = {ms}\nseed = 3\nhost_latency_us = 200\n\
             [[group]]\nname = \"hog\"\ncount = {hogs}\nbehaviour = {{ kind = \"cpu-bound\" }}\n\
             [[group]]\nname = \"sleeper\"\ncount = 1\n\
             behaviour = {{ kind = \"bursty\", run_us = 100, sleep_us = 2000 }}\n"
        ),
    );
    let (out, r) = simulate("simple", "preempt_burst_us = 0\nrenew_slices = 0", &w);
    assert!(out.status.success(), "{name}: {}", stderr(&out));
    r
}

#[test]
fn the_host_thread_holds_a_cpu_for_each_round() {
    // One CPU, a hog and a sleeper whose wake-ups go through the host (no
    // preemption in the kernel, no renewals): each round, 200 µs here, is
    // CPU time no task gets, and the hog the host thread preempts finishes
    // its slice from the shared queue, as on the real path.
    let r = hogs_and_a_sleeper("host-cpu", 1, 1, 2000);
    let rounds = r["host_rounds"].as_u64().unwrap();
    assert!(rounds > 500, "{rounds} host rounds: {r}");
    let host = rounds as f64 * 200e3 / 2e9;
    let tasks: f64 = ["hog", "sleeper"]
        .iter()
        .map(|g| group(&r, g)["cpu_share"].as_f64().unwrap())
        .sum();
    assert!(
        (tasks + host - 1.0).abs() < 0.005,
        "tasks {tasks:.4} + host {host:.4} of one CPU: {r}"
    );
    assert!(r["resumed"].as_u64().unwrap() > 0, "{r}");
}

#[test]
fn the_host_waits_for_a_switch_only_while_the_cpus_have_their_next_tasks() {
    // hackbench's shape with a backlog (20 tasks on 2 CPUs): host rounds
    // mostly come while the other CPU's next task is queued, and then the
    // host waits for its CPU's running task to stop (at most 1 ms) rather
    // than preempt it, as `host_may_wait` in main.bpf.c.
    let backlog = workload(
        "host-wait-backlog",
        "cpus = 2\nduration_ms = 500\nseed = 5\nhost_latency_us = 100\nswitch_us = 10\n\
         [[group]]\nname = \"hb\"\ncount = 20\n\
         behaviour = { kind = \"messaging\", runtime_us = 20, buffer = 8 }\n",
    );
    let (out, r) = simulate("simple", "", &backlog);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(r["ejected"], false, "{r}");
    let (waits, rounds) = (r["host_waits"].as_u64(), r["host_rounds"].as_u64());
    let (waits, rounds) = (waits.unwrap(), rounds.unwrap());
    assert!(
        waits > 0 && waits < rounds,
        "{waits} of {rounds} rounds waited: {r}"
    );
    // Two hogs and a sleeper on 2 CPUs: no task waits queued when the
    // sleeper's record reaches the host, so the host preempts a hog.
    let r = hogs_and_a_sleeper("host-wait-none-queued", 2, 2, 1000);
    assert!(r["host_rounds"].as_u64().unwrap() > 100, "{r}");
    assert_eq!(r["host_waits"], 0, "{r}");
}
