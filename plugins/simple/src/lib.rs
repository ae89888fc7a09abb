//! `simple`: Gthulhu's simple policy as an Rthulhu plugin.
//!
//! `mode = "vtime"` (default) orders the pool by weighted virtual time; a task
//! that slept gets at most one slice of credit, so sleepers run soon without
//! starving others. `mode = "fifo"` runs tasks in arrival order. Every task
//! goes to whichever CPU frees up first.

use std::collections::{BTreeMap, VecDeque};

use plugin_api::{CpuTarget, CustomScheduler, QueuedTask, Sched, ENQ_WAKEUP, WEIGHT_NICE_0};
use serde::Deserialize;

/// The `[plugin]` table.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    /// "vtime" or "fifo".
    mode: Mode,
    /// Slice for every task in µs; 0 lets the host decide.
    slice_us: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            mode: Mode::Vtime,
            slice_us: 0,
        }
    }
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Vtime,
    Fifo,
}

/// Credit a sleeper may keep, in vtime units, when the host picks the slice.
const DEFAULT_CREDIT_NS: u64 = 5_000_000;

enum Pool {
    /// Keyed by (vtime, arrival) so equal vtimes keep arrival order.
    Vtime(BTreeMap<(u64, u64), QueuedTask>),
    Fifo(VecDeque<QueuedTask>),
}

/// The simple scheduler.
pub struct Simple {
    pool: Pool,
    slice_ns: u64,
    /// Smallest vtime handed out so far: the "now" of virtual time.
    min_vtime: u64,
    arrivals: u64,
}

impl Simple {
    /// Charges the last run to the task's vtime, weighted; a task waking
    /// from sleep is first brought up to at most one slice behind the pack.
    fn charge(&mut self, t: &mut QueuedTask) {
        let ran = t.stop_ts.saturating_sub(t.start_ts);
        let weight = t.weight.max(1);
        if t.flags & ENQ_WAKEUP != 0 {
            let credit = if self.slice_ns > 0 {
                self.slice_ns
            } else {
                DEFAULT_CREDIT_NS
            };
            t.vtime = t.vtime.max(self.min_vtime.saturating_sub(credit));
        }
        t.vtime += ran * WEIGHT_NICE_0 / weight;
    }
}

impl CustomScheduler for Simple {
    const NAME: &'static str = "simple";

    fn new(config: &str) -> Result<Self, String> {
        let s: Settings = toml::from_str(config).map_err(|e| e.message().to_string())?;
        Ok(Simple {
            pool: match s.mode {
                Mode::Vtime => Pool::Vtime(BTreeMap::new()),
                Mode::Fifo => Pool::Fifo(VecDeque::with_capacity(1024)),
            },
            slice_ns: s.slice_us * 1000,
            min_vtime: 0,
            arrivals: 0,
        })
    }

    fn drain_queued_tasks(&mut self, sched: &mut Sched<'_>) {
        while let Some(mut t) = sched.dequeue_task() {
            self.arrivals += 1;
            if matches!(self.pool, Pool::Vtime(_)) {
                self.charge(&mut t);
            }
            match &mut self.pool {
                Pool::Vtime(m) => {
                    m.insert((t.vtime, self.arrivals), t);
                }
                Pool::Fifo(q) => {
                    // Arrival order is also the order in the kernel's queue.
                    t.vtime = self.arrivals;
                    q.push_back(t)
                }
            }
        }
    }

    fn select_queued_task(&mut self, _: &mut Sched<'_>) -> Option<QueuedTask> {
        match &mut self.pool {
            Pool::Vtime(m) => {
                let (_, t) = m.pop_first()?;
                self.min_vtime = self.min_vtime.max(t.vtime);
                Some(t)
            }
            Pool::Fifo(q) => q.pop_front(),
        }
    }

    fn select_cpu(&mut self, _: &mut Sched<'_>, _: &QueuedTask) -> CpuTarget {
        CpuTarget::Any
    }

    fn time_slice(&mut self, _: &mut Sched<'_>, _: &QueuedTask) -> u64 {
        self.slice_ns
    }

    fn pool_count(&self) -> u64 {
        match &self.pool {
            Pool::Vtime(m) => m.len() as u64,
            Pool::Fifo(q) => q.len() as u64,
        }
    }

    fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        let fresh = Simple::new(config)?;
        if std::mem::discriminant(&fresh.pool) != std::mem::discriminant(&self.pool) {
            return Err("mode cannot change at run time; restart the host".into());
        }
        self.slice_ns = fresh.slice_ns;
        Ok(())
    }
}

plugin_api::export_plugin!(Simple);

#[cfg(test)]
mod tests {
    use super::*;
    use plugin_api::testing::TestHost;

    fn task(pid: i32, vtime: u64, ran: u64, weight: u64) -> QueuedTask {
        QueuedTask {
            pid,
            vtime,
            start_ts: 0,
            stop_ts: ran,
            weight,
            ..Default::default()
        }
    }

    fn order(config: &str, tasks: Vec<QueuedTask>) -> Vec<i32> {
        let mut s = Simple::new(config).unwrap();
        let mut host = TestHost::new(1);
        host.queue = tasks.into();
        Sched::with(&mut host, |sched| {
            s.drain_queued_tasks(sched);
            std::iter::from_fn(|| s.select_queued_task(sched))
                .map(|t| t.pid)
                .collect()
        })
    }

    #[test]
    fn fifo_keeps_arrival_order() {
        let tasks = vec![task(3, 9, 0, 100), task(1, 1, 0, 100), task(2, 5, 0, 100)];
        assert_eq!(order("mode = \"fifo\"", tasks), vec![3, 1, 2]);
    }

    #[test]
    fn vtime_charges_runtime_by_weight() {
        // Same runtime: the heavier task is charged less and goes first.
        let tasks = vec![task(1, 0, 1_000_000, 100), task(2, 0, 1_000_000, 1000)];
        assert_eq!(order("", tasks), vec![2, 1]);
    }

    #[test]
    fn reconfigures_the_slice_but_not_the_mode() {
        let mut s = Simple::new("slice_us = 100").unwrap();
        assert!(s.reconfigure("slice_us = 200").is_ok());
        assert_eq!(s.slice_ns, 200_000);
        assert!(s.reconfigure("mode = \"fifo\"").is_err());
        assert!(s.reconfigure("slice_us = \"x\"").is_err());
        assert_eq!(s.slice_ns, 200_000);
    }

    #[test]
    fn rejects_unknown_settings() {
        assert!(Simple::new("mode = \"lottery\"").is_err());
        assert!(Simple::new("slices = 3").is_err());
    }
}
