//! `strategy`: tell the scheduler which workloads matter.
//!
//! The `[plugin]` table lists strategies; each selects tasks by command
//! regex, thread or process ids, cgroup path prefix (Kubernetes pods live
//! under `…kubepods…pod<UID>…`) or user id, and gives them a priority level
//! and/or an execution time (slice). Matched tasks run ahead of unmatched
//! ones, by level, and may preempt them; within a level, weighted virtual
//! time keeps things fair, and a task that slept preempts one with a later
//! vtime at wake-up (decided in the kernel, as in `simple`). Matching is
//! cached per thread identity (pid, process, cgroup, comm), so a regex runs
//! once per new thread, never per dispatch.
//!
//! Starvation guard: a matched task that runs longer than `max_burst_us`
//! without sleeping loses its priority until it sleeps (a prioritised CPU
//! hog cannot take the machine), and any task that has waited `max_wait_ms`
//! runs next whatever its level. An unmatched task whose slice runs out
//! gets up to `renew_slices` (4; 0: never) new slices in a row from the
//! kernel, at its vtime charged with the run, before its record comes here
//! again; a matched task's always does.
//!
//! ```toml
//! [plugin]
//! max_burst_us = 5000
//! max_wait_ms = 100
//! [[plugin.strategy]]
//! name = "ran"
//! priority = 10
//! execution_time_us = 20
//! comm = "^(nr-gnb|nr-ue|ping)$"
//! cgroup_prefix = "/kubepods.slice/kubepods-pod1234"
//! ```

mod config;

use std::collections::{BTreeMap, HashMap};

use plugin_api::{
    CpuTarget, CustomScheduler, QueuedTask, Sched, SliceRenewal, VirtualClock, WakeupPreemption,
    COMM_LEN, ENQ_SLEPT, ENQ_WAKEUP, WEIGHT_NICE_0,
};

use config::{Settings, Strategy};

/// Who a thread is, for the match cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Identity {
    pid: i32,
    tgid: i32,
    cgroup_id: u64,
    comm: [u8; COMM_LEN],
}

#[derive(Debug, Clone, Copy, Default)]
struct TaskState {
    vruntime: u64,
    /// Its `exec_runtime` at its last record (see `QueuedTask::ran_since`).
    runtime: u64,
    /// CPU time since the task last woke up.
    burst: u64,
    seen: u64,
}

/// Pool order: higher level first, then lower vruntime, then arrival.
type Key = (u32, u64, u64);

#[derive(Debug)]
struct Pooled {
    task: QueuedTask,
    level: u32,
    slice_ns: u64,
    since: u64,
}

/// The strategy scheduler.
pub struct StrategyPolicy {
    cfg: Settings,
    matches: HashMap<Identity, Option<usize>>,
    cgroup_paths: HashMap<u64, String>,
    uids: HashMap<i32, u32>,
    tasks: HashMap<i32, TaskState>,
    pool: BTreeMap<Key, Pooled>,
    /// Arrival → pool key, to find the longest-waiting task.
    arrivals: BTreeMap<u64, Key>,
    /// Virtual time: new tasks start at its frontier, sleepers' credit
    /// counts from the vruntime of what last ran.
    clock: VirtualClock,
    seq: u64,
    rounds: u64,
    /// Slice of the task most recently taken from the pool.
    last_slice: u64,
    /// Published counters: matched arrivals, demotions by the guard, aged picks.
    matched: u64,
    demoted: u64,
    aged: u64,
}

/// Bits of the kernel key below the level: the vruntime (ns), capped.
const KEY_VRUNTIME_BITS: u32 = 55;

/// The key that orders the task in the kernel's shared queue (lowest
/// first): the level in the top bits, so every higher level goes before
/// every lower one whatever the vruntimes, then the vruntime (which would
/// only saturate after 2^55 ns, over a year, of virtual time).
fn kernel_key(level: u32, vruntime: u64) -> u64 {
    let inverted = u64::from(config::MAX_PRIORITY - level.min(config::MAX_PRIORITY));
    (inverted << KEY_VRUNTIME_BITS) | vruntime.min((1 << KEY_VRUNTIME_BITS) - 1)
}
const FORGET_AFTER: u64 = 100_000;
const MAX_CACHED: usize = 1 << 16;

impl StrategyPolicy {
    /// Index of the first strategy that selects `t`. Answers are cached,
    /// except when the host did not know the cgroup's path or the uid yet
    /// (retried).
    fn classify(&mut self, sched: &mut Sched<'_>, t: &QueuedTask) -> Option<usize> {
        let id = Identity {
            pid: t.pid,
            tgid: t.tgid,
            cgroup_id: t.cgroup_id,
            comm: t.comm,
        };
        if let Some(&m) = self.matches.get(&id) {
            return m;
        }
        let (need_cg, need_uid) = self.cfg.needs();
        let mut cacheable = true;
        let path = if need_cg {
            match self.cgroup_paths.get(&t.cgroup_id) {
                Some(p) => Some(p.clone()),
                None => {
                    let p = sched.cgroup_path(t.cgroup_id);
                    match &p {
                        Some(p) => {
                            self.cgroup_paths.insert(t.cgroup_id, p.clone());
                        }
                        None => cacheable = false,
                    }
                    p
                }
            }
        } else {
            None
        };
        let uid = if need_uid {
            match self.uids.get(&t.tgid) {
                Some(&uid) => Some(uid),
                None => {
                    let uid = sched.task_uid(t.tgid);
                    match uid {
                        Some(u) => {
                            self.uids.insert(t.tgid, u);
                        }
                        None => cacheable = false,
                    }
                    uid
                }
            }
        } else {
            None
        };
        let comm = t.comm_str();
        let found = self.cfg.strategies.iter().position(|s| {
            s.comm.as_ref().is_none_or(|re| re.is_match(&comm))
                && (s.pids.is_empty() || s.pids.contains(&t.pid))
                && (s.tgids.is_empty() || s.tgids.contains(&t.tgid))
                && s.cgroup_prefix
                    .as_ref()
                    .is_none_or(|pre| path.as_ref().is_some_and(|p| p.starts_with(pre.as_str())))
                && s.uid.is_none_or(|want| uid == Some(want))
        });
        if cacheable {
            if self.matches.len() >= MAX_CACHED {
                self.matches.clear();
            }
            self.matches.insert(id, found);
        }
        found
    }

    /// Takes `key` out of the pool. An aged pick (`in_order` false) is out
    /// of vtime order: virtual time's "now" does not jump to it, or every
    /// task that wakes next would lose its sleeper's credit to a hog's
    /// vruntime (`simple` does the same).
    fn take(&mut self, key: Key, in_order: bool) -> QueuedTask {
        let p = self.pool.remove(&key).expect("key from the pool");
        self.arrivals.remove(&key.2);
        if in_order {
            self.clock.handed_out(key.1);
        }
        self.last_slice = p.slice_ns;
        let mut t = p.task;
        // The kernel's shared queue is ordered by this: levels first.
        t.vtime = kernel_key(p.level, key.1);
        t
    }

    fn forget_old(&mut self) {
        let rounds = self.rounds;
        if rounds % 4096 == 0 {
            self.tasks.retain(|_, s| rounds - s.seen < FORGET_AFTER);
            if self.uids.len() >= MAX_CACHED {
                self.uids.clear();
            }
        }
    }
}

impl CustomScheduler for StrategyPolicy {
    const NAME: &'static str = "strategy";

    fn new(config: &str) -> Result<Self, String> {
        Ok(StrategyPolicy {
            cfg: Settings::parse(config)?,
            matches: HashMap::new(),
            cgroup_paths: HashMap::new(),
            uids: HashMap::new(),
            tasks: HashMap::new(),
            pool: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            clock: VirtualClock::default(),
            seq: 0,
            rounds: 0,
            last_slice: 0,
            matched: 0,
            demoted: 0,
            aged: 0,
        })
    }

    fn drain_queued_tasks(&mut self, sched: &mut Sched<'_>) {
        self.rounds += 1;
        self.forget_old();
        let now = sched.now_ns();
        while let Some(t) = sched.dequeue_task() {
            let strategy = self.classify(sched, &t);
            let (credit, max_burst, clock, rounds) = (
                self.cfg.max_credit_ns,
                self.cfg.max_burst_ns,
                &mut self.clock,
                self.rounds,
            );
            let st = self.tasks.entry(t.pid).or_insert(TaskState {
                vruntime: clock.frontier(),
                runtime: t.exec_runtime,
                ..Default::default()
            });
            // Every run since the last record, not only the last one.
            let ran = t.ran_since(&mut st.runtime);
            if ran > 0 {
                clock.ran_from(st.vruntime);
            }
            let floor = clock.now().saturating_sub(credit);
            if t.flags & (ENQ_WAKEUP | ENQ_SLEPT) == ENQ_SLEPT {
                // It slept and woke without us (straight onto a CPU): the
                // same bounded credit as a wake-up that came here, then the
                // runs since. Without the floor its old vruntime would put
                // it ahead of every task for as long as it had slept.
                st.vruntime = st.vruntime.max(floor);
            }
            st.vruntime += ran.saturating_mul(WEIGHT_NICE_0) / t.weight.max(1);
            st.seen = rounds;
            if t.flags & ENQ_WAKEUP != 0 {
                st.burst = 0;
                st.vruntime = st.vruntime.max(floor);
            } else if t.flags & ENQ_SLEPT != 0 {
                // It woke without us and has run since.
                st.burst = t.burst_part(ran);
            } else {
                st.burst += t.burst_part(ran);
            }
            let s = strategy.map(|i| &self.cfg.strategies[i]);
            // The guard: a matched task hogging the CPU is demoted until it sleeps.
            let level = match s {
                Some(s) if st.burst <= max_burst => s.priority,
                _ => 0,
            };
            self.matched += u64::from(s.is_some());
            self.demoted += u64::from(s.is_some_and(|s| s.priority > 0) && level == 0);
            let slice_ns = s.and_then(|s| s.slice_ns).unwrap_or(0);
            self.seq += 1;
            let key = (u32::MAX - level, st.vruntime, self.seq);
            self.pool.insert(
                key,
                Pooled {
                    task: t,
                    level,
                    slice_ns,
                    since: now,
                },
            );
            self.arrivals.insert(self.seq, key);
        }
    }

    fn select_queued_task(&mut self, sched: &mut Sched<'_>) -> Option<QueuedTask> {
        let (_, &oldest) = self.arrivals.first_key_value()?;
        let overdue =
            sched.now_ns().saturating_sub(self.pool[&oldest].since) > self.cfg.max_wait_ns;
        let first = *self.pool.first_key_value()?.0;
        let key = if overdue { oldest } else { first };
        self.aged += u64::from(key != first);
        Some(self.take(key, key == first))
    }

    fn select_preempting(&mut self, _: &mut Sched<'_>) -> Option<QueuedTask> {
        let (&key, p) = self.pool.first_key_value()?;
        (p.level > 0 && p.task.flags & ENQ_WAKEUP != 0).then(|| self.take(key, true))
    }

    fn select_cpu(&mut self, sched: &mut Sched<'_>, task: &QueuedTask) -> CpuTarget {
        sched.default_select_cpu(task)
    }

    fn time_slice(&mut self, _: &mut Sched<'_>, _: &QueuedTask) -> u64 {
        self.last_slice
    }

    fn pool_count(&self) -> u64 {
        self.pool.len() as u64
    }

    /// `unmatched`, then one class per strategy, by its name.
    fn classes(&self) -> Vec<String> {
        std::iter::once("unmatched".to_string())
            .chain(self.cfg.strategies.iter().map(|s| s.name.clone()))
            .collect()
    }

    /// Each strategy's selectors (all must match; the first strategy that
    /// matches wins) and what its tasks get.
    fn class_selectors(&self) -> Vec<String> {
        std::iter::once("no strategy selects the task".to_string())
            .chain(self.cfg.strategies.iter().map(Strategy::describe))
            .collect()
    }

    /// Tasks of a strategy with a priority preempt at wake-up in the
    /// kernel, unless their last run was longer than `max_burst_us` (the
    /// same guard that demotes a prioritised hog here). So do unmatched
    /// tasks, as in `simple`: the kernel lets a task preempt only one
    /// with a later key, so within level 0 a sleeper takes the CPU from a
    /// hog and never from a matched task (without it, a woken unmatched
    /// task waited out a hog's whole slice).
    fn wakeup_preemption(&self) -> WakeupPreemption {
        let classes = self
            .cfg
            .strategies
            .iter()
            .enumerate()
            .filter(|(i, s)| s.priority > 0 && *i < 63)
            .fold(1u64, |m, (i, _)| m | 1 << (i + 1));
        WakeupPreemption {
            classes,
            max_burst_ns: self.cfg.max_burst_ns,
        }
    }

    /// Unmatched tasks only, `renew_slices` times in a row: their order is
    /// vtime, which a renewal charges as we would. A matched task's slice
    /// end must come here, where the guard demotes a matched hog.
    fn slice_renewal(&self) -> SliceRenewal {
        SliceRenewal {
            classes: 1,
            max_renewals: self.cfg.renew_slices,
        }
    }

    /// The strategy that selected the task (cached when it was queued).
    fn task_class(&self, t: &QueuedTask) -> u32 {
        let id = Identity {
            pid: t.pid,
            tgid: t.tgid,
            cgroup_id: t.cgroup_id,
            comm: t.comm,
        };
        match self.matches.get(&id) {
            Some(&Some(i)) => i as u32 + 1,
            _ => 0,
        }
    }

    fn counters(&self) -> Vec<(String, u64)> {
        vec![
            ("matched".into(), self.matched),
            ("demoted".into(), self.demoted),
            ("aged".into(), self.aged),
            // The settings in force: an operator (and the VM suite) can see a
            // reload take effect.
            ("strategies".into(), self.cfg.strategies.len() as u64),
        ]
    }

    fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        self.cfg = Settings::parse(config)?;
        self.matches.clear();
        Ok(())
    }
}

plugin_api::export_plugin!(StrategyPolicy);

#[cfg(test)]
mod tests;
