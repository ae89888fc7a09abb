//! Test plugin: a FIFO policy that panics in `select_cpu` after `after_calls`
//! calls (default 0: at once). Proves a plugin panic never crosses the ABI.

use std::collections::VecDeque;

use plugin_api::{CpuTarget, CustomScheduler, QueuedTask, Sched};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    after_calls: u64,
}

pub struct Panicky {
    pool: VecDeque<QueuedTask>,
    calls: u64,
    after: u64,
}

impl CustomScheduler for Panicky {
    const NAME: &'static str = "panicky";

    fn new(config: &str) -> Result<Self, String> {
        let s: Settings = toml::from_str(config).map_err(|e| e.message().to_string())?;
        Ok(Panicky {
            pool: VecDeque::new(),
            calls: 0,
            after: s.after_calls,
        })
    }
    fn drain_queued_tasks(&mut self, sched: &mut Sched<'_>) {
        while let Some(t) = sched.dequeue_task() {
            self.pool.push_back(t);
        }
    }
    fn select_queued_task(&mut self, _: &mut Sched<'_>) -> Option<QueuedTask> {
        self.pool.pop_front()
    }
    fn select_cpu(&mut self, _: &mut Sched<'_>, t: &QueuedTask) -> CpuTarget {
        self.calls += 1;
        if self.calls > self.after {
            panic!("deliberate test panic for pid {}", t.pid);
        }
        CpuTarget::Any
    }
    fn pool_count(&self) -> u64 {
        self.pool.len() as u64
    }
}

plugin_api::export_plugin!(Panicky);
