//! Test plugin: a FIFO policy that stops handing tasks back after
//! `after_calls` dispatches (default 0: never hands any back): the kernel
//! side must rescue what it holds, or the watchdog would eject the scheduler.

use std::collections::VecDeque;

use plugin_api::{CpuTarget, CustomScheduler, QueuedTask, Sched};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    after_calls: u64,
}

pub struct Hoarder {
    pool: VecDeque<QueuedTask>,
    handed: u64,
    after: u64,
}

impl CustomScheduler for Hoarder {
    const NAME: &'static str = "hoarder";

    fn new(config: &str) -> Result<Self, String> {
        let s: Settings = toml::from_str(config).map_err(|e| e.message().to_string())?;
        Ok(Hoarder {
            pool: VecDeque::new(),
            handed: 0,
            after: s.after_calls,
        })
    }
    fn drain_queued_tasks(&mut self, sched: &mut Sched<'_>) {
        while let Some(t) = sched.dequeue_task() {
            self.pool.push_back(t);
        }
    }
    fn select_queued_task(&mut self, _: &mut Sched<'_>) -> Option<QueuedTask> {
        if self.handed >= self.after {
            return None;
        }
        self.handed += 1;
        self.pool.pop_front()
    }
    fn select_cpu(&mut self, _: &mut Sched<'_>, _: &QueuedTask) -> CpuTarget {
        CpuTarget::Any
    }
    fn pool_count(&self) -> u64 {
        self.pool.len() as u64
    }
}

plugin_api::export_plugin!(Hoarder);
