//! Task records exchanged between the kernel side, the host and a plugin.

use abi_stable::StableAbi;

/// Length of a task's command name, as the kernel stores it (`TASK_COMM_LEN`).
pub const COMM_LEN: usize = 16;

/// [`QueuedTask::flags`] bit: the task was woken up (it slept), as opposed
/// to re-queued after its slice ran out (the kernel's `SCX_ENQ_WAKEUP`).
pub const ENQ_WAKEUP: u64 = 1;

/// [`QueuedTask::flags`] bit: the task woke from sleep since its previous
/// record. Set with [`ENQ_WAKEUP`] on a wake-up's own record, and also on a
/// later record when the wake-up never reached the plugin (the kernel side
/// placed it straight onto a CPU, or let it preempt): a plugin that tracks
/// bursts starts a new one then, instead of adding runs across a sleep, and
/// a plugin that gives sleepers bounded credit bounds it here too (the
/// record's vtime is still the one from before the sleep).
pub const ENQ_SLEPT: u64 = 1 << 55;

/// Weight of a nice-0 task in sched_ext's scale (`p->scx.weight`, 1..=10000).
pub const WEIGHT_NICE_0: u64 = 100;

/// A task that became runnable and waits for the plugin to schedule it.
///
/// The layout is shared with the BPF program (`bpf/intf.h`), so the kernel's
/// record is copied into this struct without translation.
///
/// ```
/// use plugin_api::QueuedTask;
/// let mut t = QueuedTask::default();
/// t.pid = 42;
/// t.set_comm("worker");
/// assert_eq!(t.comm_str(), "worker");
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct QueuedTask {
    /// Thread id.
    pub pid: i32,
    /// Thread-group id (the process id).
    pub tgid: i32,
    /// CPU the task ran on last.
    pub cpu: i32,
    /// How many CPUs the task's affinity mask allows.
    pub nr_cpus_allowed: u32,
    /// Enqueue flags from the kernel (`SCX_ENQ_*`), e.g. [`ENQ_WAKEUP`].
    pub flags: u64,
    /// When the task last started running (ns, monotonic).
    pub start_ts: u64,
    /// When the task last stopped running (ns, monotonic).
    pub stop_ts: u64,
    /// Total CPU time the task has consumed (ns).
    pub exec_runtime: u64,
    /// Scheduling weight, 100 for nice 0 (see [`WEIGHT_NICE_0`]).
    pub weight: u64,
    /// Virtual time. The plugin may rewrite it before handing the task back:
    /// tasks sent to [`CpuTarget::Any`] wait in a kernel queue ordered by it
    /// (lowest first), and the kernel keeps it for the task's next record:
    /// a record carries the vtime of the plugin's last decision on the task,
    /// even when the kernel renewed its slice since ([`SliceRenewal`](crate::SliceRenewal)).
    pub vtime: u64,
    /// Id of the task's cgroup (its inode number in cgroupfs).
    pub cgroup_id: u64,
    /// Command name, NUL-padded.
    pub comm: [u8; COMM_LEN],
}

impl QueuedTask {
    /// The command name as text (up to the first NUL; lossy on bad UTF-8).
    pub fn comm_str(&self) -> std::borrow::Cow<'_, str> {
        let end = self.comm.iter().position(|&b| b == 0).unwrap_or(COMM_LEN);
        String::from_utf8_lossy(&self.comm[..end])
    }

    /// CPU time the task used since `last` (its [`exec_runtime`](Self::exec_runtime)
    /// at its previous record), and `last` moved on to this record's. Charging
    /// this, not `stop_ts - start_ts`, charges every run, including those that
    /// never passed through the plugin (direct wake-ups onto idle CPUs, a lone
    /// task kept running, the kernel's fallbacks). A recycled pid (runtime
    /// lower than `last`) is charged nothing.
    ///
    /// ```
    /// use plugin_api::QueuedTask;
    /// let mut last = 0;
    /// let mut t = QueuedTask::default();
    /// t.exec_runtime = 3_000;
    /// assert_eq!(t.ran_since(&mut last), 3_000);
    /// t.exec_runtime = 5_000;
    /// assert_eq!(t.ran_since(&mut last), 2_000);
    /// assert_eq!(last, 5_000);
    /// ```
    pub fn ran_since(&self, last: &mut u64) -> u64 {
        let ran = self.exec_runtime.saturating_sub(*last);
        *last = self.exec_runtime;
        ran
    }

    /// The part of `ran` (from [`ran_since`](Self::ran_since)) that belongs
    /// to the task's current burst (CPU time since it last woke): all of it
    /// when the task has not slept since its last record (no
    /// [`ENQ_SLEPT`]: its runs since, resumed after a preemption or renewed
    /// by the kernel, are one burst), but at most the last run when it has.
    /// Runs the plugin never saw after a sleep (wake-ups placed straight
    /// onto a CPU, preempting wake-ups decided in the kernel) had sleeps
    /// between them, so summing them would make a task that sleeps often
    /// look like a hog.
    ///
    /// ```
    /// use plugin_api::{QueuedTask, ENQ_SLEPT};
    /// // 40 ms of CPU since the plugin's last record, but the last run was 100 µs.
    /// let mut t = QueuedTask { start_ts: 1_000_000, stop_ts: 1_100_000, ..Default::default() };
    /// // No sleep since the last record: one burst.
    /// assert_eq!(t.burst_part(40_000_000), 40_000_000);
    /// // It slept: only the last run is sure to be this burst's.
    /// t.flags |= ENQ_SLEPT;
    /// assert_eq!(t.burst_part(40_000_000), 100_000);
    /// assert_eq!(t.burst_part(50_000), 50_000);
    /// ```
    pub fn burst_part(&self, ran: u64) -> u64 {
        if self.flags & ENQ_SLEPT == 0 {
            return ran;
        }
        ran.min(self.stop_ts.saturating_sub(self.start_ts))
    }

    /// Sets the command name, truncated to 15 bytes like the kernel does.
    pub fn set_comm(&mut self, name: &str) {
        self.comm = [0; COMM_LEN];
        let n = name.len().min(COMM_LEN - 1);
        self.comm[..n].copy_from_slice(&name.as_bytes()[..n]);
    }
}

/// Where a task should run.
///
/// A typed value instead of a magic CPU number.
///
/// ```
/// use plugin_api::CpuTarget;
/// assert_eq!(CpuTarget::Cpu(3).cpu(), Some(3));
/// assert_eq!(CpuTarget::Any.cpu(), None);
/// ```
#[repr(u8)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CpuTarget {
    /// Whichever CPU becomes free first: the shared queue, ordered by the
    /// task's `vtime` (lowest first).
    #[default]
    Any,
    /// This CPU's own queue. If the task may not run there, the host falls
    /// back to [`CpuTarget::Any`].
    Cpu(u32),
}

impl CpuTarget {
    /// The CPU number, if a CPU was chosen.
    pub fn cpu(self) -> Option<u32> {
        match self {
            CpuTarget::Any => None,
            CpuTarget::Cpu(c) => Some(c),
        }
    }
}

/// A scheduling decision as the host sends it to the kernel side.
///
/// ```
/// use plugin_api::{CpuTarget, DispatchedTask, QueuedTask};
/// let mut q = QueuedTask::default();
/// q.pid = 7;
/// q.vtime = 1000;
/// let d = DispatchedTask::new(&q, CpuTarget::Any, 5_000_000);
/// assert_eq!((d.pid, d.vtime, d.slice_ns), (7, 1000, 5_000_000));
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct DispatchedTask {
    /// Thread id of the task to run.
    pub pid: i32,
    /// Where to run it.
    pub cpu: CpuTarget,
    /// Time slice (ns).
    pub slice_ns: u64,
    /// Virtual time to record for the task; orders the shared queue.
    pub vtime: u64,
    /// Dispatch flags, passed to the kernel's insert call.
    pub flags: u64,
}

impl DispatchedTask {
    /// A decision for `task`: run it on `cpu` for `slice_ns`, keeping its vtime.
    pub fn new(task: &QueuedTask, cpu: CpuTarget, slice_ns: u64) -> Self {
        DispatchedTask {
            pid: task.pid,
            cpu,
            slice_ns,
            vtime: task.vtime,
            flags: 0,
        }
    }
}

/// Queue counters the host exposes to a plugin.
///
/// ```
/// let c = plugin_api::Counters::default();
/// assert_eq!(c.nr_queued, 0);
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Counters {
    /// Tasks waiting in the kernel-to-host queue.
    pub nr_queued: u64,
    /// Tasks the plugin holds (its last reported pool count).
    pub nr_scheduled: u64,
    /// Tasks currently running on a CPU.
    pub nr_running: u64,
    /// CPUs online.
    pub nr_online_cpus: u64,
    /// Dispatches decided by the host (through the plugin).
    pub nr_user_dispatches: u64,
    /// Dispatches the kernel side did on its own (host threads, kthreads, idle CPUs).
    pub nr_kernel_dispatches: u64,
    /// Dispatches that could not go where asked and were redirected.
    pub nr_bounce_dispatches: u64,
    /// Dispatches that failed (the task had gone).
    pub nr_failed_dispatches: u64,
    /// Times the kernel-to-host queue was full.
    pub nr_sched_congested: u64,
}
