//! [`AgingPool`]: tasks in the policy's order, with a bound on how long any
//! of them waits.

use std::collections::BTreeMap;

use crate::task::QueuedTask;

/// A plugin's pool of tasks ordered by a key (lowest first: a vtime, a
/// deadline), in which a task that has waited longer than a bound goes
/// first whatever its key.
///
/// Pure key order lets a task with a high key wait as long as lower keys
/// keep arriving; under heavy overcommit (hackbench: 160 tasks on 2 CPUs)
/// that costs throughput as well as latency. Measured in the VM: hackbench
/// with `strategy`, which ages at 100 ms, ran in 5.6 s; without the bound,
/// 9.1 s.
///
/// ```
/// use plugin_api::{AgingPool, QueuedTask};
///
/// let mut pool = AgingPool::new(100_000_000); // 100 ms
/// pool.insert(9, QueuedTask { pid: 1, ..Default::default() }, 0);
/// pool.insert(1, QueuedTask { pid: 2, ..Default::default() }, 150_000_000);
/// // At 150 ms pid 1 has waited past the bound: it goes first.
/// let (key, task, aged) = pool.pop(150_000_000).unwrap();
/// assert_eq!((key, task.pid, aged), (9, 1, true));
/// let (key, task, aged) = pool.pop(150_000_000).unwrap();
/// assert_eq!((key, task.pid, aged), (1, 2, false));
/// assert!(pool.is_empty());
/// ```
#[derive(Debug, Default, Clone)]
pub struct AgingPool {
    max_wait_ns: u64,
    seq: u64,
    /// (key, arrival) → task: equal keys keep arrival order.
    by_key: BTreeMap<(u64, u64), QueuedTask>,
    /// Arrival → (key, when it arrived).
    by_arrival: BTreeMap<u64, (u64, u64)>,
}

impl AgingPool {
    /// An empty pool whose tasks wait at most `max_wait_ns` (0: no bound,
    /// pure key order).
    pub fn new(max_wait_ns: u64) -> Self {
        AgingPool {
            max_wait_ns,
            ..Self::default()
        }
    }

    /// The bound (ns; 0: none).
    pub fn max_wait(&self) -> u64 {
        self.max_wait_ns
    }

    /// Changes the bound (e.g. on reconfiguration).
    pub fn set_max_wait(&mut self, max_wait_ns: u64) {
        self.max_wait_ns = max_wait_ns;
    }

    /// Adds `task` with `key`, arriving at `now` (ns, the host's clock).
    pub fn insert(&mut self, key: u64, task: QueuedTask, now: u64) {
        self.seq += 1;
        self.by_arrival.insert(self.seq, (key, now));
        self.by_key.insert((key, self.seq), task);
    }

    /// The task with the lowest key, unless the longest waiter has waited
    /// past the bound at `now`: then that one. Returns its key, the task,
    /// and `true` when it was taken out of key order.
    pub fn pop(&mut self, now: u64) -> Option<(u64, QueuedTask, bool)> {
        let (&arrival, &(key, since)) = self.by_arrival.first_key_value()?;
        let first = *self.by_key.first_key_value()?.0;
        let aged = self.max_wait_ns > 0
            && now.saturating_sub(since) > self.max_wait_ns
            && first.1 != arrival;
        let key = if aged { (key, arrival) } else { first };
        self.by_arrival.remove(&key.1);
        self.by_key.remove(&key).map(|t| (key.0, t, aged))
    }

    /// The key and task that [`pop`](Self::pop) would take next if no task
    /// were overdue.
    pub fn first(&self) -> Option<(u64, &QueuedTask)> {
        self.by_key.first_key_value().map(|(k, t)| (k.0, t))
    }

    /// Takes the task with the lowest key, whatever the waits.
    pub fn pop_first(&mut self) -> Option<(u64, QueuedTask)> {
        let ((key, arrival), t) = self.by_key.pop_first()?;
        self.by_arrival.remove(&arrival);
        Some((key, t))
    }

    /// Tasks in the pool.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}
