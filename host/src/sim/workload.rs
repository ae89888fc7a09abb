//! Simulator workloads: a TOML file of task groups.
//!
//! ```toml
//! cpus = 4
//! duration_ms = 2000
//! seed = 1
//! [[group]]
//! name = "hogs"
//! count = 4
//! nice = 0
//! behaviour = { kind = "cpu-bound" }
//! ```

use std::path::Path;

use serde::Deserialize;

use crate::input::{read_text, toml_error, InputError};

/// A whole workload.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Simulated CPUs.
    pub cpus: u32,
    /// Last-level caches: the CPUs split into this many groups of
    /// neighbours, each with a shared queue of its own, as the BPF side keeps
    /// one per cache (default 1).
    #[serde(default = "default_llcs")]
    pub llcs: u32,
    /// Simulated time to run (ms).
    pub duration_ms: u64,
    /// Seed for every random choice: same seed, same result.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Watchdog: a runnable task not run for this long ends the run (ms).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Capacity of the kernel-to-host queue; when full, tasks go straight to
    /// the shared queue (counted as congestion).
    #[serde(default = "default_ring_size")]
    pub ring_size: usize,
    /// How long the host takes to answer once woken (µs): CPUs it would
    /// feed wait meanwhile, and the host thread holds a CPU for that time
    /// (an idle one, else its last, preempting the task there), as on the
    /// real path (default 0).
    #[serde(default)]
    pub host_latency_us: u64,
    /// CPU time a context switch costs (µs): a CPU that starts a task other
    /// than the one it ran last spends this long before the task makes
    /// progress (default 0). It is what makes short slices and preemption
    /// cost throughput, as on a real machine.
    #[serde(default)]
    pub switch_us: u64,
    /// RT tasks that take a CPU away from the scheduler now and then.
    #[serde(default)]
    pub rt: Vec<RtLoad>,
    /// Task groups.
    #[serde(rename = "group")]
    pub groups: Vec<Group>,
}

fn default_llcs() -> u32 {
    1
}
fn default_seed() -> u64 {
    1
}
fn default_timeout_ms() -> u64 {
    5000
}
fn default_ring_size() -> usize {
    4096
}

/// A group of identical tasks.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    /// Name in reports; also the tasks' command name (first 15 bytes).
    pub name: String,
    /// Number of tasks (for ping-pong: tasks, paired up, so even).
    pub count: u32,
    /// Nice value (-20..=19); ignored when `weight` is given.
    #[serde(default)]
    pub nice: i32,
    /// sched_ext weight (1..=10000, 100 = nice 0).
    pub weight: Option<u64>,
    /// Cgroup path of the tasks, as under /sys/fs/cgroup (default "/").
    pub cgroup: Option<String>,
    /// Real user id of the tasks (default 0).
    #[serde(default)]
    pub uid: u32,
    /// The tasks are threads of one process (one tgid) instead of processes.
    #[serde(default)]
    pub threads: bool,
    /// CPUs the tasks may run on (default: all).
    pub cpus: Option<Vec<u32>>,
    /// Each task exits after this long (µs) and a fresh fork takes its
    /// place: a new pid, kernel vtime 0, a first enqueue with no wake-up flag.
    pub lifetime_us: Option<u64>,
    /// Every this long (µs) each task's affinity changes (one random CPU,
    /// then all CPUs again), which dequeues and re-queues a waiting task.
    pub move_every_us: Option<u64>,
    /// What each task does.
    pub behaviour: Behaviour,
}

/// An RT (SCHED_FIFO) task pinned to `cpu`: every `period_us` it takes the
/// CPU for `runtime_us`; whatever sched_ext ran or had queued there is handed
/// back to run elsewhere.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RtLoad {
    /// The CPU it takes.
    pub cpu: u32,
    /// Period (µs).
    pub period_us: u64,
    /// How long it holds the CPU each period (µs).
    pub runtime_us: u64,
}

/// What a task does.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Behaviour {
    /// Always runnable.
    CpuBound {},
    /// Wakes every `period_us`, runs `runtime_us`, sleeps (latency-sensitive).
    Periodic {
        /// Period (µs).
        period_us: u64,
        /// Work per period (µs).
        runtime_us: u64,
    },
    /// Pairs that pass a message back and forth: run, wake the partner, sleep.
    PingPong {
        /// Work per message (µs).
        runtime_us: u64,
    },
    /// hackbench's shape: the first half of the group sends, the second half
    /// receives. Each sender writes one message to each receiver in turn,
    /// each receiver reads what it is sent; a message costs `runtime_us` to
    /// write and again to read. A receiver's queue holds `buffer` messages:
    /// a sender that finds the next one full sleeps until that receiver
    /// reads, a receiver with nothing to read sleeps until a message comes.
    /// A task keeps its CPU from message to message while its slice lasts.
    /// The group's `runs` count messages read.
    Messaging {
        /// Work per message written, and per message read (µs).
        runtime_us: u64,
        /// Messages a receiver's queue holds.
        buffer: u32,
    },
    /// Runs and sleeps for random lengths around the given means.
    Bursty {
        /// Mean run length (µs).
        run_us: u64,
        /// Mean sleep length (µs).
        sleep_us: u64,
        /// Relative spread, 0.0..=1.0 (0.5 = ±50%).
        #[serde(default)]
        jitter: f64,
    },
}

/// The kernel's nice-to-weight table (`sched_prio_to_weight`), nice -20..=19.
const PRIO_TO_WEIGHT: [u64; 40] = [
    88761, 71755, 56483, 46273, 36291, 29154, 23254, 18705, 14949, 11916, 9548, 7620, 6100, 4904,
    3906, 3121, 2501, 1991, 1586, 1277, 1024, 820, 655, 526, 423, 335, 272, 215, 172, 137, 110, 87,
    70, 56, 45, 36, 29, 23, 18, 15,
];

/// sched_ext weight of a nice value: the CFS weight scaled so nice 0 is 100.
pub fn nice_to_weight(nice: i32) -> u64 {
    let w = PRIO_TO_WEIGHT[(nice.clamp(-20, 19) + 20) as usize];
    ((w * 100 + 512) / 1024).max(1)
}

impl Group {
    /// The group's sched_ext weight.
    pub fn weight(&self) -> u64 {
        self.weight.unwrap_or_else(|| nice_to_weight(self.nice))
    }
}

impl Workload {
    /// Reads and checks a workload file.
    pub fn load(path: &Path) -> Result<Self, InputError> {
        let text = read_text(path)?;
        Self::parse(path, &text)
    }

    /// Parses and checks `text`, naming `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Self, InputError> {
        let w: Workload = toml::from_str(text).map_err(|e| toml_error(path, text, &e))?;
        w.check().map_err(|msg| InputError::new(path, msg))?;
        Ok(w)
    }

    fn check(&self) -> Result<(), String> {
        if !(1..=1024).contains(&self.cpus) {
            return Err(format!("cpus = {} is out of range 1..=1024", self.cpus));
        }
        if !(1..=self.cpus.min(64)).contains(&self.llcs) {
            return Err(format!(
                "llcs = {} is out of range 1..={} (at most one per CPU, and 64)",
                self.llcs,
                self.cpus.min(64)
            ));
        }
        if self.duration_ms == 0 || self.duration_ms > 3_600_000 {
            return Err("duration_ms must be within 1..=3600000".into());
        }
        if !(1..=3_600_000).contains(&self.timeout_ms) || !(1..=1 << 20).contains(&self.ring_size) {
            return Err(
                "timeout_ms must be within 1..=3600000 and ring_size within 1..=1048576".into(),
            );
        }
        if self.groups.is_empty() {
            return Err("no [[group]] declared".into());
        }
        const HOUR_US: u64 = 3_600_000_000;
        if self.host_latency_us > HOUR_US || self.switch_us > HOUR_US {
            return Err("host_latency_us and switch_us must be at most one hour".into());
        }
        for r in &self.rt {
            if r.cpu >= self.cpus {
                return Err(format!(
                    "[[rt]] cpu {} is not one of the {} CPUs",
                    r.cpu, self.cpus
                ));
            }
            if r.period_us > HOUR_US || r.runtime_us == 0 || r.runtime_us >= r.period_us {
                return Err("[[rt]] needs 0 < runtime_us < period_us <= one hour".into());
            }
        }
        let total: u64 = self.groups.iter().map(|g| g.count as u64).sum();
        if total > 100_000 {
            return Err(format!("{total} tasks is more than the simulator's 100000"));
        }
        let mut names = std::collections::HashSet::new();
        for g in &self.groups {
            let at = |msg: &str| format!("group \"{}\": {msg}", g.name);
            if g.name.is_empty() || !names.insert(&g.name) {
                return Err(at("names must be non-empty and unique"));
            }
            if g.count == 0 {
                return Err(at("count must be at least 1"));
            }
            if !(-20..=19).contains(&g.nice) {
                return Err(at("nice must be within -20..=19"));
            }
            if matches!(g.weight, Some(w) if !(1..=10000).contains(&w)) {
                return Err(at("weight must be within 1..=10000"));
            }
            if let Some(cpus) = &g.cpus {
                if cpus.is_empty() || cpus.iter().any(|&c| c >= self.cpus) {
                    return Err(at("cpus must list some of the workload's CPUs"));
                }
            }
            let bad_every = |v: Option<u64>| matches!(v, Some(us) if us == 0 || us > HOUR_US);
            if bad_every(g.lifetime_us) || bad_every(g.move_every_us) {
                return Err(at(
                    "lifetime_us and move_every_us must be within 1..=one hour",
                ));
            }
            let paired = matches!(
                g.behaviour,
                Behaviour::PingPong { .. } | Behaviour::Messaging { .. }
            );
            if g.lifetime_us.is_some() && paired {
                return Err(at("ping-pong and messaging tasks cannot have a lifetime"));
            }
            // Every length is kept within an hour, so no product overflows.
            let too_long = match g.behaviour {
                Behaviour::CpuBound {} => false,
                Behaviour::Periodic { period_us, .. } => period_us > HOUR_US,
                Behaviour::PingPong { runtime_us } | Behaviour::Messaging { runtime_us, .. } => {
                    runtime_us > HOUR_US
                }
                Behaviour::Bursty {
                    run_us, sleep_us, ..
                } => run_us > HOUR_US || sleep_us > HOUR_US,
            };
            if too_long {
                return Err(at("lengths must be at most one hour"));
            }
            match g.behaviour {
                Behaviour::CpuBound {} => {}
                Behaviour::Periodic {
                    period_us,
                    runtime_us,
                } => {
                    if runtime_us == 0 || runtime_us >= period_us {
                        return Err(at("periodic needs 0 < runtime_us < period_us"));
                    }
                }
                Behaviour::PingPong { runtime_us } => {
                    if runtime_us == 0 || g.count % 2 != 0 {
                        return Err(at("ping-pong needs runtime_us > 0 and an even count"));
                    }
                }
                Behaviour::Messaging { runtime_us, buffer } => {
                    if runtime_us == 0 || buffer == 0 || g.count < 2 || g.count % 2 != 0 {
                        return Err(at(
                            "messaging needs runtime_us > 0, buffer > 0 and an even count",
                        ));
                    }
                }
                Behaviour::Bursty {
                    run_us,
                    sleep_us,
                    jitter,
                } => {
                    if run_us == 0 || sleep_us == 0 || !(0.0..=1.0).contains(&jitter) {
                        return Err(at("bursty needs run_us, sleep_us > 0 and jitter in 0..=1"));
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Workload, String> {
        Workload::parse(Path::new("w.toml"), text).map_err(|e| e.to_string())
    }

    const HEAD: &str = "cpus = 2\nduration_ms = 100\n";

    #[test]
    fn nice_weights_follow_the_kernel_scale() {
        assert_eq!(nice_to_weight(0), 100);
        assert_eq!(nice_to_weight(10), 11);
        assert_eq!(nice_to_weight(-20), 8668);
    }

    #[test]
    fn parses_every_behaviour() {
        let w = parse(&format!(
            "{HEAD}[[group]]\nname='a'\ncount=1\nbehaviour={{kind='cpu-bound'}}\n\
             [[group]]\nname='b'\ncount=2\nbehaviour={{kind='ping-pong', runtime_us=5}}\n\
             [[group]]\nname='c'\ncount=1\nbehaviour={{kind='periodic', period_us=10, runtime_us=5}}\n\
             [[group]]\nname='d'\ncount=1\nbehaviour={{kind='bursty', run_us=1, sleep_us=2, jitter=0.5}}\n\
             [[group]]\nname='e'\ncount=4\nbehaviour={{kind='messaging', runtime_us=5, buffer=8}}\n"
        ))
        .unwrap();
        assert_eq!(w.groups.len(), 5);
        assert_eq!(
            w.groups[2].behaviour,
            Behaviour::Periodic {
                period_us: 10,
                runtime_us: 5
            }
        );
    }

    #[test]
    fn refuses_bad_workloads_with_one_line() {
        for (body, want) in [
            (
                "[[group]]\nname='a'\ncount=1\nbehaviour={kind='spin'}\n",
                "unknown variant",
            ),
            (
                "[[group]]\nname='a'\ncount=1\nbehaviour={kind='cpu-bound', x=1}\n",
                "unknown field",
            ),
            (
                "[[group]]\nname='a'\ncount=3\nbehaviour={kind='ping-pong', runtime_us=5}\n",
                "even count",
            ),
            (
                "[[group]]\nname='a'\ncount=0\nbehaviour={kind='cpu-bound'}\n",
                "count",
            ),
            ("", "missing field `group`"),
            (
                "[[group]]\nname='a'\ncount=1\ncpus=[2]\nbehaviour={kind='cpu-bound'}\n",
                "cpus must list",
            ),
            (
                "[[group]]\nname='a'\ncount=2\nlifetime_us=5\nbehaviour={kind='ping-pong', runtime_us=5}\n",
                "cannot have a lifetime",
            ),
            (
                "[[group]]\nname='a'\ncount=3\nbehaviour={kind='messaging', runtime_us=5, buffer=4}\n",
                "even count",
            ),
            (
                "llcs = 3\n[[group]]\nname='a'\ncount=1\nbehaviour={kind='cpu-bound'}\n",
                "llcs = 3 is out of range 1..=2",
            ),
            (
                "[[rt]]\ncpu=5\nperiod_us=10\nruntime_us=5\n[[group]]\nname='a'\ncount=1\nbehaviour={kind='cpu-bound'}\n",
                "[[rt]] cpu 5",
            ),
            (
                "[[rt]]\ncpu=0\nperiod_us=10\nruntime_us=10\n[[group]]\nname='a'\ncount=1\nbehaviour={kind='cpu-bound'}\n",
                "runtime_us < period_us",
            ),
        ] {
            let e = parse(&format!("{HEAD}{body}")).unwrap_err();
            assert!(
                e.starts_with("w.toml: ") && e.contains(want) && !e.contains('\n'),
                "{e}"
            );
        }
    }
}
