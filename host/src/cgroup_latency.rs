//! Wake-up latency per cgroup: the kernel side tracks at most
//! [`MAX_CGROUPS`] cgroups at once (a slot each, see `cg_ids` in
//! main.bpf.c); this module turns the slots into figures, highest p99 first,
//! and frees the slots of cgroups that stayed quiet for [`IDLE`] so that
//! busy newcomers get tracked.

use std::fmt::Write;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::described::described;
use crate::kernel::{Latency, MAX_CGROUPS};
use crate::latency::{label_value, Percentiles};

/// A slot whose cgroup had no wake-up for this long is freed.
pub const IDLE: Duration = Duration::from_secs(60);
/// Cgroups `--stats` and `--monitor` print (the JSON has all).
const SHOWN: usize = 3;

described! {
    #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
    pub struct CgroupFigures: "One tracked cgroup's wake-up figures since it was first tracked." {
        id: u64 => "The cgroup's id (its inode in cgroupfs).",
        path: String => "Its path under /sys/fs/cgroup (empty until the host has looked it up).",
        wakeups: u64 => "Wake-ups measured.",
        wakeup_latency_ns: Percentiles => "How long its tasks waited from runnable to running (ns).",
    }
}

/// The tracked cgroups with wake-ups, highest p99 first; `path(id)` names them.
pub fn figures(l: &Latency, mut path: impl FnMut(u64) -> Option<String>) -> Vec<CgroupFigures> {
    let mut out: Vec<CgroupFigures> = (0..MAX_CGROUPS)
        .filter(|&s| l.cgroup_ids[s] != 0)
        .filter_map(|s| {
            let hist = &l.cgroup_hist[s];
            let wakeups: u64 = hist.iter().sum();
            (wakeups > 0).then(|| CgroupFigures {
                id: l.cgroup_ids[s],
                path: path(l.cgroup_ids[s]).unwrap_or_default(),
                wakeups,
                wakeup_latency_ns: Percentiles::of(hist, l.cgroup_max_ns[s]),
            })
        })
        .collect();
    out.sort_by(|a, b| {
        (b.wakeup_latency_ns.p99, b.wakeups).cmp(&(a.wakeup_latency_ns.p99, a.wakeups))
    });
    out
}

impl CgroupFigures {
    /// Its path, or `id N` while the path is not known.
    pub fn display_name(&self) -> String {
        if self.path.is_empty() {
            format!("id {}", self.id)
        } else {
            self.path.clone()
        }
    }
}

/// Remembers when each slot's counts last moved.
pub struct IdleSlots {
    seen: [(u64, u64, Option<Instant>); MAX_CGROUPS],
}

impl Default for IdleSlots {
    fn default() -> Self {
        IdleSlots {
            seen: [(0, 0, None); MAX_CGROUPS],
        }
    }
}

impl IdleSlots {
    /// The slots whose cgroup had no wake-up for [`IDLE`] as of `now`.
    pub fn idle(&mut self, l: &Latency, now: Instant) -> [bool; MAX_CGROUPS] {
        let mut idle = [false; MAX_CGROUPS];
        for (s, (seen, idle)) in self.seen.iter_mut().zip(idle.iter_mut()).enumerate() {
            let id = l.cgroup_ids[s];
            let total: u64 = l.cgroup_hist[s].iter().sum();
            let (seen_id, seen_total, since) = seen;
            if id == 0 {
                *since = None;
            } else if id != *seen_id || total != *seen_total || since.is_none() {
                (*seen_id, *seen_total, *since) = (id, total, Some(now));
            } else if since.is_some_and(|t| now.duration_since(t) >= IDLE) {
                *idle = true;
                *since = None;
                *seen_id = 0;
            }
        }
        idle
    }
}

/// The top cgroups by p99, one line each, for `--stats` and `--monitor`.
pub fn lines(cgroups: &[CgroupFigures], untracked: u64, out: &mut String) {
    for c in cgroups.iter().take(SHOWN) {
        let _ = write!(
            out,
            "\n  cgroup {}: wakeups {}, wakeup latency p50 {} µs, p99 {} µs, max {} µs",
            c.display_name(),
            c.wakeups,
            c.wakeup_latency_ns.p50 / 1000,
            c.wakeup_latency_ns.p99 / 1000,
            c.wakeup_latency_ns.max / 1000
        );
    }
    if untracked > 0 {
        let _ = write!(out, "\n  cgroups untracked: {untracked} wake-ups");
    }
}

/// `rthulhu_cgroup_wakeup_latency_p99_seconds` and
/// `rthulhu_cgroup_wakeups_total`, labelled by `cgroup` (at most
/// [`MAX_CGROUPS`] series each).
pub fn prometheus(cgroups: &[CgroupFigures], out: &mut String) {
    if cgroups.is_empty() {
        return;
    }
    let mut series = |name: &str, kind: &str, help: &str, value: fn(&CgroupFigures) -> f64| {
        let _ = writeln!(
            out,
            "# HELP rthulhu_{name} {help}\n# TYPE rthulhu_{name} {kind}"
        );
        for c in cgroups {
            let _ = writeln!(
                out,
                "rthulhu_{name}{{cgroup=\"{}\"}} {}",
                label_value(&c.display_name()),
                value(c)
            );
        }
    };
    series(
        "cgroup_wakeup_latency_p99_seconds",
        "gauge",
        "99th percentile of the time from runnable to running, per tracked cgroup.",
        |c| c.wakeup_latency_ns.p99 as f64 / 1e9,
    );
    series(
        "cgroup_wakeups_total",
        "counter",
        "Wake-ups measured, per tracked cgroup.",
        |c| c.wakeups as f64,
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tracked(slots: &[(usize, u64, &[u64])]) -> Latency {
        let mut l = Latency::default();
        for &(s, id, waits) in slots {
            l.cgroup_ids[s] = id;
            for &w in waits {
                l.cgroup_hist[s][crate::latency::bucket_of(w)] += 1;
                l.cgroup_max_ns[s] = l.cgroup_max_ns[s].max(w);
            }
        }
        l
    }

    #[test]
    fn cgroups_come_highest_p99_first_and_quiet_slots_are_skipped() {
        let l = tracked(&[
            (3, 7, &[1_000, 2_000]),
            (9, 8, &[5_000_000, 1_000]),
            (12, 9, &[]),
        ]);
        let f = figures(&l, |id| (id == 8).then(|| "/slow".to_string()));
        assert_eq!(f.iter().map(|c| c.id).collect::<Vec<_>>(), [8, 7]);
        assert_eq!(f[0].path, "/slow");
        assert_eq!(f[0].wakeup_latency_ns.max, 5_000_000);
        assert!(f[0].wakeup_latency_ns.p99 > f[1].wakeup_latency_ns.p99);
        let mut text = String::new();
        lines(&f, 4, &mut text);
        assert!(text.contains("cgroup /slow: wakeups 2") && text.contains("cgroup id 7:"));
        assert!(text.contains("untracked: 4"));
        let mut prom = String::new();
        prometheus(&f, &mut prom);
        assert!(
            prom.contains("rthulhu_cgroup_wakeups_total{cgroup=\"/slow\"} 2"),
            "{prom}"
        );
    }

    #[test]
    fn a_slot_is_idle_only_after_a_quiet_minute() {
        let t0 = Instant::now();
        let mut slots = IdleSlots::default();
        let mut l = tracked(&[(5, 42, &[1_000])]);
        assert!(!slots.idle(&l, t0)[5]);
        assert!(!slots.idle(&l, t0 + IDLE / 2)[5]);
        // A wake-up restarts the minute.
        l.cgroup_hist[5][10] += 1;
        assert!(!slots.idle(&l, t0 + IDLE)[5]);
        assert!(!slots.idle(&l, t0 + IDLE + IDLE / 2)[5]);
        assert!(slots.idle(&l, t0 + 2 * IDLE)[5]);
        // Freed: the same counts again are a fresh start, not idle at once.
        assert!(!slots.idle(&l, t0 + 2 * IDLE)[5]);
        assert!(!slots.idle(&tracked(&[]), t0 + 3 * IDLE)[5]);
    }
}
