//! `host --explain FILE`: which class each running thread would get from
//! the configured plugin, and why, without attaching anything.
//!
//! Every thread under /proc is handed to the plugin the way the kernel side
//! would queue it (one at a time: drain, then one decision), with cgroup
//! paths and uids answered from /sys/fs/cgroup and /proc on the spot; the
//! class the plugin gave the decision is the thread's. The "why" is the
//! plugin's own wording of each class's selector
//! ([`class_selectors`](plugin_api::CustomScheduler::class_selectors)).
//! A thread that exits meanwhile is skipped.

use std::collections::HashMap;
use std::fmt::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use plugin_api::{Counters, CpuTarget, HostServices, QueuedTask, Sched, SchedulerBox};

use crate::bpf::lookups::{cgroup_paths, read_uid};

/// One thread as /proc shows it.
#[derive(Debug, Clone)]
pub struct Thread {
    /// The record the kernel side would send for it.
    pub task: QueuedTask,
    /// Its cgroup's path (as under /sys/fs/cgroup).
    pub cgroup: String,
}

/// Every thread running now (those that vanish while read are skipped).
pub fn threads(proc: &Path, cgroup_root: &Path) -> Vec<Thread> {
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir(proc) else {
        return out;
    };
    for p in procs.flatten() {
        let Some(tgid) = p.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Some(pid) = t.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else {
                continue;
            };
            if let Some(th) = thread(&t.path(), pid, tgid, cgroup_root) {
                out.push(th);
            }
        }
    }
    out.sort_by_key(|t| (t.task.tgid, t.task.pid));
    out
}

fn thread(dir: &Path, pid: i32, tgid: i32, cgroup_root: &Path) -> Option<Thread> {
    let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
    // cgroup v2: the one line "0::/path".
    let cgroup = std::fs::read_to_string(dir.join("cgroup"))
        .ok()
        .and_then(|c| {
            c.lines()
                .find_map(|l| l.strip_prefix("0::").map(str::to_string))
        })
        .unwrap_or_else(|| "/".into());
    let cgroup_id = std::fs::metadata(cgroup_root.join(cgroup.trim_start_matches('/')))
        .map(|m| m.ino())
        .unwrap_or(0);
    let exec_runtime = std::fs::read_to_string(dir.join("schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let mut task = QueuedTask {
        pid,
        tgid,
        cpu: 0,
        nr_cpus_allowed: 1,
        weight: plugin_api::WEIGHT_NICE_0,
        exec_runtime,
        cgroup_id,
        ..QueuedTask::default()
    };
    task.set_comm(comm.trim_end_matches('\n'));
    Some(Thread { task, cgroup })
}

/// The host side of the plugin's questions, answered at once.
struct Answers {
    next: Option<QueuedTask>,
    cgroups: HashMap<u64, String>,
}

impl HostServices for Answers {
    fn dequeue_task(&mut self) -> Option<QueuedTask> {
        self.next.take()
    }
    fn default_select_cpu(&mut self, _: &QueuedTask) -> CpuTarget {
        CpuTarget::Any
    }
    fn nr_cpus(&self) -> u32 {
        1
    }
    fn now_ns(&self) -> u64 {
        0
    }
    fn counters(&self) -> Counters {
        Counters::default()
    }
    fn cgroup_path(&mut self, id: u64) -> Option<String> {
        self.cgroups.get(&id).cloned()
    }
    fn task_uid(&mut self, tgid: i32) -> Option<u32> {
        read_uid(tgid)
    }
}

/// The class index the plugin gives each of `threads`.
pub fn classify(
    plugin: &mut SchedulerBox,
    threads: &[Thread],
    cgroup_root: &Path,
) -> Result<Vec<u32>, String> {
    let mut host = Answers {
        next: None,
        cgroups: cgroup_paths(cgroup_root),
    };
    let mut classes = Vec::with_capacity(threads.len());
    for t in threads {
        host.next = Some(t.task);
        let class = Sched::with(&mut host, |s| -> Result<u32, String> {
            plugin.drain_queued_tasks(s)?;
            let mut class = 0;
            // Empty the pool: the thread's own decision gives its class.
            while let Some(d) = plugin.next_decision(s, false)?.decision.into_option() {
                if d.pid == t.task.pid {
                    class = plugin.last_class();
                }
            }
            Ok(class)
        })?;
        classes.push(class);
    }
    Ok(classes)
}

/// The report: per class, its selector and its threads; then the classes
/// no thread falls in.
pub fn report(
    names: &[String],
    selectors: &[String],
    threads: &[Thread],
    classes: &[u32],
) -> String {
    let mut out = String::new();
    let named = |c: u32| names.get(c as usize).map_or("?", String::as_str);
    let mut counts = vec![0usize; names.len().max(1)];
    for &c in classes {
        if let Some(n) = counts.get_mut(c as usize) {
            *n += 1;
        }
    }
    let _ = writeln!(
        out,
        "{:>7} {:>7}  {:16} {:24} cgroup",
        "tgid", "tid", "comm", "class"
    );
    for (t, &c) in threads.iter().zip(classes) {
        let _ = writeln!(
            out,
            "{:>7} {:>7}  {:16} {:24} {}",
            t.task.tgid,
            t.task.pid,
            t.task.comm_str(),
            named(c),
            t.cgroup
        );
    }
    let _ = writeln!(out, "\nclasses:");
    for (i, name) in names.iter().enumerate() {
        let why = selectors.get(i).map_or("", String::as_str);
        let _ = writeln!(out, "  {name}: {} thread(s); {why}", counts[i]);
    }
    let idle: Vec<&str> = names
        .iter()
        .zip(&counts)
        .filter(|(_, &n)| n == 0)
        .map(|(n, _)| n.as_str())
        .collect();
    if idle.is_empty() {
        let _ = writeln!(out, "\nevery class matches at least one thread");
    } else {
        let _ = writeln!(out, "\nmatching nothing now: {}", idle.join(", "));
    }
    out
}
