//! Test plugin: a FIFO policy that never returns from `select_queued_task`
//! after `after_calls` calls (default 0: at once). Proves the host's round
//! watchdog ends a host whose plugin hangs, and that the machine goes on.

use std::collections::VecDeque;

use plugin_api::{CpuTarget, CustomScheduler, QueuedTask, Sched};

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct Settings {
    after_calls: u64,
}

pub struct Spinner {
    pool: VecDeque<QueuedTask>,
    calls: u64,
    after: u64,
}

impl CustomScheduler for Spinner {
    const NAME: &'static str = "spinner";

    fn new(config: &str) -> Result<Self, String> {
        let s: Settings = toml::from_str(config).map_err(|e| e.message().to_string())?;
        Ok(Spinner {
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
        self.calls += 1;
        if self.calls > self.after {
            // Deliberately never returns: the host's round watchdog must act.
            loop {
                std::hint::spin_loop();
            }
        }
        self.pool.pop_front()
    }
    fn select_cpu(&mut self, _: &mut Sched<'_>, _: &QueuedTask) -> CpuTarget {
        CpuTarget::Any
    }
    fn pool_count(&self) -> u64 {
        self.pool.len() as u64
    }
}

plugin_api::export_plugin!(Spinner);
