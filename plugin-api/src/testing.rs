//! A stand-in host for unit-testing a policy without the real one.

use std::collections::{HashMap, VecDeque};

use crate::sched::HostServices;
use crate::task::{Counters, CpuTarget, QueuedTask};

/// A host whose kernel side is a queue you fill by hand.
///
/// ```
/// use plugin_api::testing::TestHost;
/// use plugin_api::{QueuedTask, Sched};
///
/// let mut host = TestHost::new(2);
/// host.queue.push_back(QueuedTask { pid: 7, ..Default::default() });
/// let pid = Sched::with(&mut host, |s| s.dequeue_task().map(|t| t.pid));
/// assert_eq!(pid, Some(7));
/// ```
#[derive(Debug, Default, Clone)]
pub struct TestHost {
    /// Tasks `dequeue_task` hands out, front first.
    pub queue: VecDeque<QueuedTask>,
    /// What `now_ns` returns.
    pub now: u64,
    /// What `nr_cpus` returns.
    pub cpus: u32,
    /// What `default_select_cpu` returns.
    pub idle_pick: CpuTarget,
    /// Cgroup paths by id, for `cgroup_path`.
    pub cgroups: HashMap<u64, String>,
    /// User ids by process, for `task_uid`.
    pub uids: HashMap<i32, u32>,
    /// How many times `cgroup_path` was asked (to check a policy caches).
    pub cgroup_lookups: u32,
}

impl TestHost {
    /// A host with `cpus` CPUs and nothing queued.
    pub fn new(cpus: u32) -> Self {
        TestHost {
            cpus,
            ..TestHost::default()
        }
    }
}

impl HostServices for TestHost {
    fn dequeue_task(&mut self) -> Option<QueuedTask> {
        self.queue.pop_front()
    }
    fn default_select_cpu(&mut self, _: &QueuedTask) -> CpuTarget {
        self.idle_pick
    }
    fn nr_cpus(&self) -> u32 {
        self.cpus
    }
    fn now_ns(&self) -> u64 {
        self.now
    }
    fn counters(&self) -> Counters {
        Counters {
            nr_queued: self.queue.len() as u64,
            nr_online_cpus: self.cpus.into(),
            ..Counters::default()
        }
    }
    fn cgroup_path(&mut self, cgroup_id: u64) -> Option<String> {
        self.cgroup_lookups += 1;
        self.cgroups.get(&cgroup_id).cloned()
    }
    fn task_uid(&mut self, tgid: i32) -> Option<u32> {
        self.uids.get(&tgid).copied()
    }
}
