//! The dispatch loop, written once against [`Kernel`]:
//! drain → select task → slice → select CPU → dispatch → report pending count.

use std::time::{Duration, Instant};

use plugin_api::{
    Counters, CpuTarget, CustomScheduler, Decision, DispatchedTask, HostServices, Next, QueuedTask,
    Sched, SchedulerBox, SliceRenewal, WakeupPreemption,
};

use crate::kernel::{ExitInfo, Kernel, KernelError, Latency, Liveness, Wake, MAX_CLASSES};

/// A policy as the loop calls it: a loaded plugin ([`SchedulerBox`]) or, for
/// benchmarks, the same policy linked in directly ([`Native`]).
pub trait Policy {
    /// [`CustomScheduler::drain_queued_tasks`], then the pool count.
    fn drain(&mut self, s: &mut Sched<'_>) -> Result<u64, String>;
    /// The next decision ([`plugin_api::decide`]) and the pool count after
    /// it; `busy`: only a task worth preempting for is wanted.
    fn next(&mut self, s: &mut Sched<'_>, busy: bool) -> Result<Next, String>;
    /// See [`CustomScheduler::reconfigure`]: the outer error is a plugin
    /// failure, the inner one settings the plugin refused.
    fn reconfigure(&mut self, table: &str) -> Result<Result<(), String>, String>;
    /// See [`CustomScheduler::counters`].
    fn named_counters(&mut self) -> Result<Vec<(String, u64)>, String>;
    /// See [`CustomScheduler::classes`].
    fn classes(&mut self) -> Result<Vec<String>, String>;
    /// The class of the task in the last decision.
    fn last_class(&mut self) -> u32;
    /// See [`CustomScheduler::wakeup_preemption`].
    fn wakeup_preemption(&mut self) -> Result<WakeupPreemption, String>;
    /// See [`CustomScheduler::slice_renewal`].
    fn slice_renewal(&mut self) -> Result<SliceRenewal, String>;
}

impl Policy for SchedulerBox {
    fn drain(&mut self, s: &mut Sched<'_>) -> Result<u64, String> {
        self.drain_queued_tasks(s)
    }
    fn next(&mut self, s: &mut Sched<'_>, busy: bool) -> Result<Next, String> {
        self.next_decision(s, busy)
    }
    fn reconfigure(&mut self, table: &str) -> Result<Result<(), String>, String> {
        SchedulerBox::reconfigure(self, table)
    }
    fn named_counters(&mut self) -> Result<Vec<(String, u64)>, String> {
        self.counters()
    }
    fn classes(&mut self) -> Result<Vec<String>, String> {
        SchedulerBox::classes(self)
    }
    fn last_class(&mut self) -> u32 {
        SchedulerBox::last_class(self)
    }
    fn wakeup_preemption(&mut self) -> Result<WakeupPreemption, String> {
        SchedulerBox::wakeup_preemption(self)
    }
    fn slice_renewal(&mut self) -> Result<SliceRenewal, String> {
        SchedulerBox::slice_renewal(self)
    }
}

/// A policy called directly, without the plugin boundary.
pub struct Native<T> {
    policy: T,
    /// The class of its last decision.
    class: std::cell::Cell<u32>,
}

impl<T> Native<T> {
    /// Calls `policy` directly.
    pub fn new(policy: T) -> Self {
        Native {
            policy,
            class: std::cell::Cell::new(0),
        }
    }
}

impl<T: CustomScheduler> Policy for Native<T> {
    fn drain(&mut self, s: &mut Sched<'_>) -> Result<u64, String> {
        self.policy.drain_queued_tasks(s);
        Ok(self.policy.pool_count())
    }
    fn next(&mut self, s: &mut Sched<'_>, busy: bool) -> Result<Next, String> {
        let stage = std::cell::Cell::new("");
        let decision = plugin_api::decide(&mut self.policy, s, &stage, busy, &self.class).into();
        Ok(Next {
            decision,
            pool_count: self.policy.pool_count(),
        })
    }
    fn reconfigure(&mut self, table: &str) -> Result<Result<(), String>, String> {
        Ok(self.policy.reconfigure(table))
    }
    fn named_counters(&mut self) -> Result<Vec<(String, u64)>, String> {
        Ok(self.policy.counters())
    }
    fn classes(&mut self) -> Result<Vec<String>, String> {
        Ok(self.policy.classes())
    }
    fn last_class(&mut self) -> u32 {
        self.class.get()
    }
    fn wakeup_preemption(&mut self) -> Result<WakeupPreemption, String> {
        Ok(self.policy.wakeup_preemption())
    }
    fn slice_renewal(&mut self) -> Result<SliceRenewal, String> {
        Ok(self.policy.slice_renewal())
    }
}

/// [`DispatchedTask::flags`] bit: run this task now, preempting a running
/// one if no CPU is idle (the BPF side strips it before the kernel sees the flags).
pub const DISPATCH_PREEMPT: u64 = 1 << 63;
/// [`DispatchedTask::flags`] bits 48..56: the task's class (stripped too).
pub const DISPATCH_CLASS_SHIFT: u32 = 48;

/// Host default slice, `max(default_ns / waiting, min_ns)`, and how far
/// ahead of the CPUs the loop hands tasks to the kernel.
#[derive(Debug, Clone, Copy)]
pub struct SliceOpts {
    /// Slice when one task waits (ns).
    pub default_ns: u64,
    /// Floor under contention (ns).
    pub min_ns: u64,
    /// Tasks per CPU handed to the kernel beyond what the CPUs can start.
    /// 0 keeps every choice with the plugin until a CPU is free (a host
    /// round trip per hand-over); more keeps CPUs busy while the host is on
    /// its way. Those tasks wait in the kernel in the plugin's key order, so
    /// a later task with a smaller key still goes first.
    pub queue_ahead: u64,
}

impl Default for SliceOpts {
    fn default() -> Self {
        SliceOpts {
            default_ns: 5_000_000,
            // A floor of 1 ms, not 0.5: in one VM boot (2 vCPUs) hackbench
            // ran 0.96-0.99x EEVDF's time with it against 0.99-1.08x,
            // with a quarter fewer context switches and a fifth less host CPU.
            min_ns: 1_000_000,
            queue_ahead: 4,
        }
    }
}

impl SliceOpts {
    /// The host's slice when `waiting` tasks (this one included) wait.
    pub fn for_waiting(&self, waiting: u64) -> u64 {
        (self.default_ns / waiting.max(1)).max(self.min_ns)
    }
}

/// Figures of the loop itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct LoopStats {
    /// Wake-ups handled.
    pub rounds: u64,
    /// Tasks dispatched through the plugin.
    pub decisions: u64,
    /// Wall time spent scheduling (not blocked in `wait`).
    pub busy: Duration,
    /// Decisions for tasks the kernel side had taken back (skipped).
    pub ghosts: u64,
}

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum LoopError {
    /// The plugin failed or panicked (the message says which call).
    #[error("{0}")]
    Plugin(String),
    /// The kernel backend failed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
}

/// The reload service: called with `true` on SIGHUP (start reading the
/// config) and with `false` after every round; returns a fresh `[plugin]`
/// table once one is ready. The reading and parsing happen elsewhere (a
/// helper thread in the binary), so the loop never waits on a file; a config
/// that cannot be used yields nothing (the old settings stay).
pub type Reloader = Box<dyn FnMut(bool) -> Option<String>>;

/// What the loop reports about once a second to whoever watches it.
pub struct Tick<'a> {
    /// The loop's figures so far.
    pub stats: &'a LoopStats,
    /// The kernel side's counters.
    pub counters: Counters,
    /// How the kernel side kept the machine live.
    pub liveness: Liveness,
    /// Tasks the plugin holds.
    pub pending: u64,
    /// Counters the plugin publishes.
    pub plugin_counters: Vec<(String, u64)>,
    /// The plugin's classes (at most [`MAX_CLASSES`]).
    pub classes: &'a [String],
    /// Wake-up latency per class and per tracked cgroup, from the kernel side.
    pub latency: Latency,
    /// The tracked cgroups' figures, highest p99 first.
    pub cgroups: Vec<crate::cgroup_latency::CgroupFigures>,
}

/// Receives [`Tick`]s.
pub type Observer = Box<dyn FnMut(Tick<'_>)>;

/// How often the observer hears from the loop.
const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The host's scheduler: a policy driving a kernel backend.
pub struct Dispatcher<P, K> {
    /// The policy.
    pub policy: P,
    /// The kernel side.
    pub kernel: K,
    /// Slice defaults.
    pub slices: SliceOpts,
    /// Loop figures.
    pub stats: LoopStats,
    /// Where a reload gets the new `[plugin]` table from.
    pub reloader: Option<Reloader>,
    /// The `[plugin]` table a reload applied last, if any: a restart
    /// rebuilds the plugin with it, not with the table it started with.
    pub applied: Option<String>,
    /// Who hears the loop's figures (the stats endpoint).
    pub observer: Option<Observer>,
    pending: u64,
    last_tick: Option<Instant>,
    /// The plugin's class names, asked at the start of the run.
    classes: Vec<String>,
    idle_cgroups: crate::cgroup_latency::IdleSlots,
}

impl<P: Policy, K: Kernel> Dispatcher<P, K> {
    /// A loop over `policy` and `kernel`.
    pub fn new(policy: P, kernel: K, slices: SliceOpts) -> Self {
        Dispatcher {
            policy,
            kernel,
            slices,
            stats: LoopStats::default(),
            reloader: None,
            applied: None,
            observer: None,
            pending: 0,
            last_tick: None,
            classes: Vec::new(),
            idle_cgroups: Default::default(),
        }
    }

    /// The plugin's class names, as asked at the start of the run.
    pub fn class_names(&self) -> &[String] {
        &self.classes
    }

    /// Runs until the kernel side ends the run; returns how it ended.
    pub fn run(&mut self) -> Result<ExitInfo, LoopError> {
        self.read_classes()?;
        loop {
            let wake = self.kernel.wait()?;
            // Everything from here to the next wait calls into the plugin:
            // the round watchdog ends the process if it never returns.
            crate::round_watch::enter();
            let done = self.handle(wake);
            crate::round_watch::leave();
            if let Some(info) = done? {
                return Ok(info);
            }
        }
    }

    /// The plugin's class names (at most [`MAX_CLASSES`], never none) and
    /// its wake-up preemption and slice renewal rules, handed to the kernel
    /// side.
    fn read_classes(&mut self) -> Result<(), LoopError> {
        self.classes = self.policy.classes().map_err(LoopError::Plugin)?;
        self.classes.truncate(MAX_CLASSES);
        if self.classes.is_empty() {
            self.classes.push("all".into());
        }
        let mut rule = self.policy.wakeup_preemption().map_err(LoopError::Plugin)?;
        // Only classes the loop tells the kernel about (at most
        // MAX_CLASSES, below 64) can be covered.
        let known = (1u64 << self.classes.len()) - 1;
        rule.classes &= known;
        self.kernel.set_wakeup_preemption(rule);
        let mut renewal = self.policy.slice_renewal().map_err(LoopError::Plugin)?;
        renewal.classes &= known;
        self.kernel.set_slice_renewal(renewal);
        Ok(())
    }

    /// One wake-up; `Some` when the run ended.
    fn handle(&mut self, wake: Wake) -> Result<Option<ExitInfo>, LoopError> {
        match wake {
            Wake::Exit(info) => return Ok(Some(info)),
            Wake::Reload => self.reload(true)?,
            Wake::Work => {
                let t0 = Instant::now();
                self.schedule()?;
                self.stats.busy += t0.elapsed();
                self.reload(false)?;
                if self.observer.is_some() && self.last_tick.is_none_or(|t| t0 - t >= TICK) {
                    self.last_tick = Some(t0);
                    self.tick()?;
                }
            }
        }
        Ok(None)
    }

    fn tick(&mut self) -> Result<(), LoopError> {
        let plugin_counters = self.policy.named_counters().map_err(LoopError::Plugin)?;
        let latency = self.kernel.latency();
        let idle = self.idle_cgroups.idle(&latency, Instant::now());
        for (slot, _) in idle.iter().enumerate().filter(|(_, &idle)| idle) {
            self.kernel.free_cgroup_slot(slot);
        }
        // Paths come from the lookup helper's answers (never waited for).
        let kernel = &mut self.kernel;
        let cgroups = crate::cgroup_latency::figures(&latency, |id| kernel.cgroup_path(id));
        if let Some(observe) = self.observer.as_mut() {
            observe(Tick {
                stats: &self.stats,
                counters: self.kernel.counters(),
                liveness: self.kernel.liveness(),
                pending: self.pending,
                plugin_counters,
                classes: &self.classes,
                latency,
                cgroups,
            });
        }
        Ok(())
    }

    /// Hands a re-read `[plugin]` table, once ready, to the running policy,
    /// without detaching. A table the plugin refuses leaves the old
    /// settings; a plugin that panics doing so stops the loop like any
    /// plugin failure.
    fn reload(&mut self, sighup: bool) -> Result<(), LoopError> {
        let Some(table) = self.reloader.as_mut().and_then(|r| r(sighup)) else {
            return Ok(());
        };
        match self.policy.reconfigure(&table).map_err(LoopError::Plugin)? {
            Ok(()) => {
                tracing::info!("reconfigured the plugin from the reloaded config");
                self.applied = Some(table);
                // New settings may name other classes (the counts so far
                // stay with the class numbers they were taken under).
                self.read_classes()?;
            }
            Err(e) => {
                tracing::warn!("plugin refused the reloaded settings, keeping the old ones: {e}")
            }
        }
        Ok(())
    }

    /// One round: hand every queued task to the policy and dispatch what it picks.
    pub fn schedule(&mut self) -> Result<(), LoopError> {
        self.stats.rounds += 1;
        let policy = &mut self.policy;
        let mut host = Services(&mut self.kernel);
        // What the plugin holds; the host's default slice shrinks as it grows.
        let mut pending = Sched::with(&mut host, |s| policy.drain(s)).map_err(LoopError::Plugin)?;
        let mut budget =
            host.0
                .occupancy()
                .budget(host.0.nr_cpus(), self.slices.queue_ahead, pending);
        // With every CPU busy, the plugin may still pick a few tasks worth
        // preempting for (one per CPU at most per round).
        let mut preemptions = u64::from(host.0.nr_cpus());
        while pending > 0 && (budget > 0 || preemptions > 0) {
            let busy = budget == 0;
            let next =
                Sched::with(&mut host, |s| policy.next(s, busy)).map_err(LoopError::Plugin)?;
            let waiting = std::mem::replace(&mut pending, next.pool_count);
            let Some(Decision {
                pid,
                vtime,
                cpu,
                slice_ns,
                preempt,
            }) = next.decision.into_option()
            else {
                break;
            };
            // A task the kernel side took back meanwhile: the plugin's pool
            // still had it. Nothing to send, and no CPU was spent on it.
            if host.0.is_ghost(pid) {
                self.stats.ghosts += 1;
                continue;
            }
            let slice = if slice_ns == 0 {
                self.slices.for_waiting(waiting)
            } else {
                slice_ns
            };
            let mut d = DispatchedTask {
                pid,
                cpu,
                slice_ns: slice,
                vtime,
                flags: 0,
            };
            if self.classes.len() > 1 {
                let class = policy.last_class().min(MAX_CLASSES as u32 - 1);
                d.flags |= u64::from(class) << DISPATCH_CLASS_SHIFT;
            }
            // Only a busy round may preempt, whatever the plugin's vtable says.
            if busy {
                if preempt {
                    d.flags |= DISPATCH_PREEMPT;
                }
                preemptions -= 1;
            } else {
                budget -= 1;
            }
            host.0.dispatch(&d)?;
            self.stats.decisions += 1;
        }
        host.0.set_scheduled(pending);
        self.pending = pending;
        Ok(())
    }
}

/// The kernel backend seen through the plugin's `Sched` services.
struct Services<'k, K>(&'k mut K);

impl<K: Kernel> HostServices for Services<'_, K> {
    fn dequeue_task(&mut self) -> Option<QueuedTask> {
        self.0.dequeue()
    }
    fn default_select_cpu(&mut self, task: &QueuedTask) -> CpuTarget {
        self.0.default_select_cpu(task)
    }
    fn nr_cpus(&self) -> u32 {
        self.0.nr_cpus()
    }
    fn now_ns(&self) -> u64 {
        self.0.now_ns()
    }
    fn counters(&self) -> Counters {
        self.0.counters()
    }
    fn cgroup_path(&mut self, cgroup_id: u64) -> Option<String> {
        self.0.cgroup_path(cgroup_id)
    }
    fn task_uid(&mut self, tgid: i32) -> Option<u32> {
        self.0.task_uid(tgid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_slice_shrinks_with_waiters_down_to_the_floor() {
        let s = SliceOpts {
            default_ns: 10_000,
            min_ns: 1_000,
            queue_ahead: 0,
        };
        assert_eq!(s.for_waiting(0), 10_000);
        assert_eq!(s.for_waiting(1), 10_000);
        assert_eq!(s.for_waiting(4), 2_500);
        assert_eq!(s.for_waiting(100), 1_000);
    }
}
