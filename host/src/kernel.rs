//! The kernel side as the dispatch loop sees it. Two implementations: the
//! sched_ext BPF program and the simulator.

use plugin_api::{Counters, CpuTarget, DispatchedTask, QueuedTask};
use serde::{Deserialize, Serialize};

use crate::described::described;
use crate::occupancy::Occupancy;

/// Why the loop woke up.
#[derive(Debug)]
pub enum Wake {
    /// Tasks are queued, or the plugin holds tasks and a CPU wants work.
    Work,
    /// The scheduler is gone (or the simulation ended); stop the loop.
    Exit(ExitInfo),
    /// The operator asked to re-read the config (SIGHUP).
    Reload,
}

/// How the scheduler ended, as the kernel's `exit` callback recorded it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct ExitInfo {
    /// `SCX_EXIT_*` kind.
    pub kind: ExitKind,
    /// Exit code (the BPF program's `scx_bpf_exit` code, or 0).
    pub code: i64,
    /// Short reason, e.g. "runnable task stall".
    pub reason: String,
    /// Details, e.g. which task stalled.
    pub message: String,
    /// The kernel's debug dump (tasks, queues) when it ejected the scheduler.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub dump: String,
}

/// Kinds of scheduler exit (values of the kernel's `enum scx_exit_kind`).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExitKind {
    /// Not exited.
    None,
    /// The simulation (or a demo run) reached its end.
    Done,
    /// Unloaded on request (signal, or the host detaching).
    Unregistered,
    /// Unloaded by the BPF program itself.
    UnregisteredBpf,
    /// Unloaded by the kernel (e.g. CPU hotplug).
    UnregisteredKernel,
    /// Unloaded by the SysRq key.
    Sysrq,
    /// Ejected on an error.
    Error,
    /// Ejected on a BPF error.
    ErrorBpf,
    /// Ejected by the watchdog: a runnable task waited too long.
    ErrorStall,
    /// A kind this host does not know.
    Other(u64),
}

impl ExitKind {
    /// From the kernel's numeric `scx_exit_kind`.
    pub fn from_raw(v: u64) -> Self {
        match v {
            0 => ExitKind::None,
            1 => ExitKind::Done,
            64 => ExitKind::Unregistered,
            65 => ExitKind::UnregisteredBpf,
            66 => ExitKind::UnregisteredKernel,
            67 => ExitKind::Sysrq,
            1024 => ExitKind::Error,
            1025 => ExitKind::ErrorBpf,
            1026 => ExitKind::ErrorStall,
            v => ExitKind::Other(v),
        }
    }

    /// True when the kernel threw the scheduler out (as opposed to a clean stop).
    pub fn is_ejection(self) -> bool {
        match self {
            ExitKind::Error | ExitKind::ErrorBpf | ExitKind::ErrorStall => true,
            ExitKind::Other(v) => v >= 1024,
            _ => false,
        }
    }
}

/// A failure of the kernel backend itself.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct KernelError(pub String);

/// Task classes the kernel side tells apart (`RTHULHU_MAX_CLASSES`).
pub const MAX_CLASSES: usize = 16;
/// Log2 buckets of a wake-up latency histogram (`RTHULHU_LAT_BUCKETS`):
/// bucket i counts waits of [2^i, 2^(i+1)) ns, the last one every longer wait.
pub const LAT_BUCKETS: usize = 40;
/// Cgroups whose wake-up latency the kernel side tracks at once
/// (`RTHULHU_MAX_CGROUPS`).
pub const MAX_CGROUPS: usize = 64;

/// Per class: how long tasks waited from becoming runnable to running
/// (`ops.runnable` to `ops.running`), and how often a running task was
/// preempted before its slice ended. Counts since attach.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Latency {
    /// Wake-ups per log2 bucket of their wait.
    pub hist: [[u64; LAT_BUCKETS]; MAX_CLASSES],
    /// Sum of the waits (ns).
    pub sum_ns: [u64; MAX_CLASSES],
    /// Longest wait (ns).
    pub max_ns: [u64; MAX_CLASSES],
    /// Preemptions suffered.
    pub preempted: [u64; MAX_CLASSES],
    /// The cgroup in each tracking slot (0: free).
    pub cgroup_ids: [u64; MAX_CGROUPS],
    /// Wake-ups per log2 bucket, per slot.
    pub cgroup_hist: [[u64; LAT_BUCKETS]; MAX_CGROUPS],
    /// Longest wait (ns), per slot.
    pub cgroup_max_ns: [u64; MAX_CGROUPS],
    /// Wake-ups of cgroups that found no free slot.
    pub cgroups_untracked: u64,
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            hist: [[0; LAT_BUCKETS]; MAX_CLASSES],
            sum_ns: [0; MAX_CLASSES],
            max_ns: [0; MAX_CLASSES],
            preempted: [0; MAX_CLASSES],
            cgroup_ids: [0; MAX_CGROUPS],
            cgroup_hist: [[0; LAT_BUCKETS]; MAX_CGROUPS],
            cgroup_max_ns: [0; MAX_CGROUPS],
            cgroups_untracked: 0,
        }
    }
}

/// What the dispatch loop needs from the kernel side.
pub trait Kernel {
    /// Blocks until there is work for the scheduler or the run ends.
    fn wait(&mut self) -> Result<Wake, KernelError>;
    /// Next queued task, if any.
    fn dequeue(&mut self) -> Option<QueuedTask>;
    /// Whether the plugin's task `pid` is a ghost: the kernel side took it
    /// back (rescued it, or dequeued it) or it was decided already, so a
    /// decision for it would be dropped. The loop skips ghosts without
    /// spending its window on them.
    fn is_ghost(&self, _pid: i32) -> bool {
        false
    }
    /// Sends a decision to the kernel side.
    fn dispatch(&mut self, task: &DispatchedTask) -> Result<(), KernelError>;
    /// The kernel's default idle-CPU pick.
    fn default_select_cpu(&mut self, task: &QueuedTask) -> CpuTarget;
    /// Number of online CPUs (counted when the scheduler starts: a CPU
    /// that comes or goes restarts it).
    fn nr_cpus(&self) -> u32;
    /// Current time in the clock task timestamps use (ns).
    fn now_ns(&self) -> u64;
    /// Counters.
    fn counters(&self) -> Counters;
    /// What the kernel side has in hand: running, dispatched and waiting
    /// for a CPU, or still on its way. The loop keeps its total at most
    /// `nr_cpus * (1 + queue_ahead)` (see [`Occupancy::budget`]).
    fn occupancy(&self) -> Occupancy;
    /// How the kernel side kept the machine live (fallbacks, rescues...).
    fn liveness(&self) -> Liveness {
        Liveness::default()
    }
    /// Applies the plugin's wake-up preemption rule.
    fn set_wakeup_preemption(&mut self, _rule: plugin_api::WakeupPreemption) {}
    /// Applies the plugin's slice renewal rule.
    fn set_slice_renewal(&mut self, _rule: plugin_api::SliceRenewal) {}
    /// Wake-up latency per task class, as the kernel side measured it
    /// (empty where it measures none).
    fn latency(&self) -> Latency {
        Latency::default()
    }
    /// Frees cgroup tracking slot `slot` (see [`Latency::cgroup_ids`]) for
    /// another cgroup.
    fn free_cgroup_slot(&mut self, _slot: usize) {}
    /// Path of a cgroup by id, for plugins that select by cgroup.
    fn cgroup_path(&mut self, _cgroup_id: u64) -> Option<String> {
        None
    }
    /// Real user id of a process.
    fn task_uid(&mut self, _tgid: i32) -> Option<u32> {
        None
    }
    /// Ends a round: tells the kernel side how many tasks the plugin still
    /// holds, and that the host is alive.
    fn set_scheduled(&mut self, pending: u64);
}

described! {
    // In a healthy run `rescues` and `bypassed` stay 0.
    #[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
    pub struct Liveness: "What the kernel side did to keep every CPU busy without the host, and how often the host was late." {
        held: u64 => "Tasks out to the host, not yet decided on.",
        inflight: u64 => "Tasks inserted on the host's word, not yet running.",
        direct_dispatches: u64 => "Wake-ups placed straight onto an idle CPU.",
        stale_dispatches: u64 => "Decisions dropped: the task was rescued, dequeued or queued again since.",
        keep_running: u64 => "Times the last task of a CPU kept running instead of a round trip.",
        reenqueued: u64 => "Tasks handed back from a CPU an RT/DL task took.",
        rescues: u64 => "Times a CPU idled a whole heartbeat while the host held tasks.",
        rescued: u64 => "Tasks moved to the fallback queue by those rescues.",
        bypassed: u64 => "Tasks queued in kernel order while the host was late.",
        idle_kicks: u64 => "Idle CPUs the heartbeat woke because work was queued.",
        host_wakeups: u64 => "Times the kernel side woke the host.",
        #[serde(default)]
        urgent_wakeups: u64 => "Wake-ups that preempted at once by the plugin's rule, without the host.",
        #[serde(default)]
        urgent_missed_burst: u64 => "Wake-ups of tasks the plugin's rule covers that went to the host: last run longer than the rule's burst.",
        #[serde(default)]
        urgent_missed_sleep: u64 => "Wake-ups of tasks the plugin's rule covers that went to the host: slept less than twice their last run.",
        #[serde(default)]
        urgent_missed_backlog: u64 => "Wake-ups of tasks the plugin's rule covers that went to the host: more than two tasks per CPU waited.",
        #[serde(default)]
        urgent_missed_cpu: u64 => "Wake-ups of tasks the plugin's rule covers that went to the host: no idle CPU, and none running a task ranked after them.",
        #[serde(default)]
        urgent_missed_key: u64 => "Of urgent_missed_cpu, those where a CPU ran an ordinary task the rule's key check alone kept it from preempting.",
        #[serde(default)]
        quiet_records: u64 => "Records sent without waking the host (a backlog, and every CPU's next task queued).",
        #[serde(default)]
        resumed: u64 => "Preempted tasks that finished their slice at their last key, without a host round trip.",
        #[serde(default)]
        host_waits: u64 => "Host wake-ups that waited for their CPU's next switch instead of preempting (the running task's slice cut to 1 ms, so at most until the first tick after that): no CPU idle and the others' next tasks queued.",
        #[serde(default)]
        renewed: u64 => "Slices renewed in the kernel by the plugin's renewal rule (a covered task whose slice ran out queued again at its current key, without a host round trip).",
    }
}

// The class mask of a wake-up preemption rule is a u64 with room to spare.
const _: () = assert!(MAX_CLASSES < 64);
