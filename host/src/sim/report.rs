//! What a simulation run reports, as a text table or one JSON object.

use std::fmt;

use serde::Serialize;

use crate::kernel::ExitInfo;

/// Results of one task group.
#[derive(Debug, Clone, Serialize)]
pub struct GroupReport {
    /// Group name.
    pub name: String,
    /// Tasks in the group.
    pub tasks: u32,
    /// Their sched_ext weight.
    pub weight: u64,
    /// Wake-ups measured (sleep → running).
    pub wakeups: u64,
    /// Wake-up latency, median (ns).
    pub wakeup_p50_ns: u64,
    /// Wake-up latency, 99th percentile (ns).
    pub wakeup_p99_ns: u64,
    /// Wake-up latency, worst (ns).
    pub wakeup_max_ns: u64,
    /// Longest any task of the group stayed runnable without running (ns):
    /// what the watchdog judges.
    pub wait_max_ns: u64,
    /// Fraction of all CPU time the group got (0..=1).
    pub cpu_share: f64,
    /// Bursts completed (for CPU-bound tasks: slices run).
    pub runs: u64,
    /// CPU time the group got (ns).
    pub runtime_ns: u64,
}

impl GroupReport {
    pub(crate) fn new(name: &str, tasks: u32, weight: u64) -> Self {
        GroupReport {
            name: name.to_string(),
            tasks,
            weight,
            wakeups: 0,
            wakeup_p50_ns: 0,
            wakeup_p99_ns: 0,
            wakeup_max_ns: 0,
            wait_max_ns: 0,
            cpu_share: 0.0,
            runs: 0,
            runtime_ns: 0,
        }
    }
}

/// Wake-up latency samples of a group.
#[derive(Debug, Default, Clone)]
pub struct Latencies(Vec<u64>);

impl Latencies {
    pub(crate) fn push(&mut self, ns: u64) {
        self.0.push(ns);
    }

    /// Writes count, p50, p99 and max (nearest rank) into `g`.
    pub(crate) fn fill(&self, g: &mut GroupReport) {
        let mut v = self.0.clone();
        v.sort_unstable();
        let at = |q: f64| {
            v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
                .copied()
                .unwrap_or(0)
        };
        g.wakeups = v.len() as u64;
        g.wakeup_p50_ns = at(0.50);
        g.wakeup_p99_ns = at(0.99);
        g.wakeup_max_ns = v.last().copied().unwrap_or(0);
    }
}

/// A whole simulation run.
#[derive(Debug, Clone, Serialize)]
pub struct SimReport {
    /// Policy name.
    pub plugin: String,
    /// Whether the (simulated) kernel ejected the scheduler.
    pub ejected: bool,
    /// How the run ended.
    pub exit: ExitInfo,
    /// Simulated time covered (ms).
    pub simulated_ms: f64,
    /// Tasks dispatched by the host through the plugin.
    pub dispatched: u64,
    /// Tasks the kernel side dispatched on its own (queue to host full).
    pub kernel_dispatched: u64,
    /// Dispatches redirected to the shared queue (bad CPU).
    pub bounced: u64,
    /// Dispatches refused (task not waiting).
    pub failed: u64,
    /// Running tasks preempted for an urgent one the host dispatched.
    pub preemptions: u64,
    /// Wake-ups that preempted by the plugin's rule, as the BPF side
    /// applies it (without the host).
    pub urgent_wakeups: u64,
    /// Records that reached the host without waking it (a backlog, and
    /// every CPU's next task queued), as the BPF side sends them.
    pub quiet_records: u64,
    /// Preempted tasks that finished their slice at their key, without the host.
    pub resumed: u64,
    /// Slices renewed by the plugin's renewal rule, without the host.
    pub renewed: u64,
    /// Slices that ran out with nothing else waiting: the task kept its CPU.
    pub kept: u64,
    /// Rounds the host ran (each one a wake-up on the real path).
    pub host_rounds: u64,
    /// Of those, rounds that waited for a CPU's running task to stop (at
    /// most 1 ms) instead of preempting it.
    pub host_waits: u64,
    /// Runs that started from a host decision that did not preempt (the
    /// look-ahead window's domain; direct, urgent, rescued and preempting
    /// starts are outside it).
    pub decided_runs: u64,
    /// Of those, runs that started while the host held a task the plugin
    /// then ranked ahead of them (dispatched with an earlier key): how often
    /// the window made the kernel run a task the plugin ranked lower.
    pub inversions: u64,
    /// Times the queue to the host was full.
    pub congested: u64,
    /// Times a CPU idled a heartbeat while the host held tasks (the BPF
    /// side's rescue), and the tasks it moved to the fallback queue.
    pub rescues: u64,
    /// Tasks moved by those rescues.
    pub rescued: u64,
    /// The host's real decisions per second of its own busy time.
    pub decisions_per_sec: f64,
    /// Per-group results.
    pub groups: Vec<GroupReport>,
    /// Wake-up latency per plugin class, the figures the stats endpoint
    /// serves on the real kernel (`classes`), so the two compare one to one.
    pub classes: Vec<crate::latency::ClassFigures>,
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "plugin {}: {} simulated ms, {} dispatched by the plugin, {} by the kernel side, {} failed, {} bounced, {:.0} decisions/s",
            self.plugin,
            self.simulated_ms,
            self.dispatched,
            self.kernel_dispatched,
            self.failed,
            self.bounced,
            self.decisions_per_sec
        )?;
        writeln!(
            f,
            "{:<16} {:>5} {:>6} {:>9} {:>12} {:>12} {:>12} {:>8} {:>9}",
            "group", "tasks", "weight", "wakeups", "p50 µs", "p99 µs", "max µs", "cpu %", "runs"
        )?;
        for g in &self.groups {
            writeln!(
                f,
                "{:<16} {:>5} {:>6} {:>9} {:>12.1} {:>12.1} {:>12.1} {:>8.2} {:>9}",
                g.name,
                g.tasks,
                g.weight,
                g.wakeups,
                g.wakeup_p50_ns as f64 / 1e3,
                g.wakeup_p99_ns as f64 / 1e3,
                g.wakeup_max_ns as f64 / 1e3,
                g.cpu_share * 100.0,
                g.runs
            )?;
        }
        writeln!(
            f,
            "look-ahead: {} of {} decided runs ({:.2}%) started while the plugin held a task it then ranked ahead",
            self.inversions,
            self.decided_runs,
            self.inversions as f64 * 100.0 / self.decided_runs.max(1) as f64
        )?;
        writeln!(
            f,
            "kernel side alone: {} slices kept (nothing else waited), {} renewed by the plugin's rule, {} resumed after preemption, {} host rounds ({} waited for a CPU rather than preempt)",
            self.kept, self.renewed, self.resumed, self.host_rounds, self.host_waits
        )?;
        for c in &self.classes {
            writeln!(
                f,
                "class {}: wakeups {}, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs, preempted {}",
                c.name,
                c.wakeups,
                c.wakeup_latency_ns.p50 as f64 / 1e3,
                c.wakeup_latency_ns.p99 as f64 / 1e3,
                c.wakeup_latency_ns.max as f64 / 1e3,
                c.preempted
            )?;
        }
        if self.ejected {
            write!(
                f,
                "EJECTED ({:?}): {}: {}",
                self.exit.kind, self.exit.reason, self.exit.message
            )?;
        } else {
            write!(f, "ended: {}", self.exit.reason)?;
        }
        Ok(())
    }
}
