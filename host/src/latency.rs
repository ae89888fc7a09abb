//! Wake-up latency per task class, from the kernel side's log2 histograms
//! ([`Latency`]): the figures the stats endpoint serves, one line per class
//! for `--stats`/`--monitor`, and a Prometheus histogram.

use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::described::described;

use crate::kernel::{Latency, LAT_BUCKETS};

described! {
    #[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
    pub struct ClassFigures: "One task class's wake-up figures since attach." {
        name: String => "The plugin's name for the class.",
        wakeups: u64 => "Wake-ups measured (a task becoming runnable, then running).",
        preempted: u64 => "Times a running task of this class was preempted before its slice ended.",
        wakeup_latency_ns: Percentiles => "How long tasks waited from runnable to running (ns).",
        buckets: Vec<u64> => "Wake-ups per log2 bucket: buckets[i] counts waits of [2^i, 2^(i+1)) ns; the last bucket also every longer wait.",
        sum_ns: u64 => "Sum of the waits (ns), for averages and Prometheus.",
    }
}

described! {
    #[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
    pub struct Percentiles: "Quantiles of a wait histogram: each placed linearly inside the log2 bucket it falls in, at most the longest wait." {
        p50: u64 => "Median (ns).",
        p99: u64 => "99th percentile (ns).",
        max: u64 => "Longest wait, exact (ns).",
    }
}

impl Percentiles {
    /// The quantiles of histogram `hist` whose longest wait is `max_ns`
    /// (a place in a bucket may lie above the longest wait in it).
    pub fn of(hist: &[u64], max_ns: u64) -> Self {
        let total = hist.iter().sum();
        Percentiles {
            p50: quantile(hist, total, 0.50).min(max_ns),
            p99: quantile(hist, total, 0.99).min(max_ns),
            max: max_ns,
        }
    }
}

/// Upper bound of bucket `i` (ns).
fn bucket_top(i: usize) -> u64 {
    1u64.checked_shl(i as u32 + 1).unwrap_or(u64::MAX)
}

/// The bucket a wait of `ns` falls in (`log2_u64` in main.bpf.c).
pub fn bucket_of(ns: u64) -> usize {
    (63 - ns.max(1).leading_zeros() as usize).min(LAT_BUCKETS - 1)
}

/// `s` as a Prometheus label value (backslash, quote and newline escaped).
pub(crate) fn label_value(s: &str) -> String {
    s.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// The `q` quantile, placed linearly inside the log2 bucket it falls in
/// (as Prometheus' `histogram_quantile` does): the bucket alone would put
/// every wait from 4.2 to 8.4 ms at 8.4 ms, and two classes could not be
/// told apart.
fn quantile(buckets: &[u64], total: u64, q: f64) -> u64 {
    let want = ((total as f64) * q).ceil().max(1.0);
    let mut seen = 0.0;
    for (i, &n) in buckets.iter().enumerate() {
        let n = n as f64;
        if n > 0.0 && seen + n >= want {
            let lo = if i == 0 {
                0.0
            } else {
                bucket_top(i - 1) as f64
            };
            let hi = bucket_top(i) as f64;
            return (lo + (hi - lo) * (want - seen) / n) as u64;
        }
        seen += n;
    }
    0
}

/// The figures of every named class (classes past the names are dropped).
pub fn figures(names: &[String], l: &Latency) -> Vec<ClassFigures> {
    names
        .iter()
        .zip(l.hist.iter())
        .enumerate()
        .map(|(c, (name, hist))| {
            let wakeups = hist.iter().sum();
            ClassFigures {
                name: name.clone(),
                wakeups,
                preempted: l.preempted[c],
                wakeup_latency_ns: Percentiles::of(hist, l.max_ns[c]),
                buckets: hist.to_vec(),
                sum_ns: l.sum_ns[c],
            }
        })
        .collect()
}

/// One line per class, for `--stats` and `--monitor`.
pub fn lines(classes: &[ClassFigures], out: &mut String) {
    for c in classes {
        let _ = write!(
            out,
            "\n  class {}: wakeups {}, wakeup latency p50 {} µs, p99 {} µs, max {} µs, preempted {}",
            c.name,
            c.wakeups,
            c.wakeup_latency_ns.p50 / 1000,
            c.wakeup_latency_ns.p99 / 1000,
            c.wakeup_latency_ns.max / 1000,
            c.preempted
        );
    }
}

/// `rthulhu_wakeup_latency_seconds`, a Prometheus histogram with a `class` label.
pub fn prometheus(classes: &[ClassFigures], out: &mut String) {
    if classes.is_empty() {
        return;
    }
    out.push_str(
        "# HELP rthulhu_wakeup_latency_seconds Time from runnable to running, per task class.\n",
    );
    out.push_str("# TYPE rthulhu_wakeup_latency_seconds histogram\n");
    for c in classes {
        let label = label_value(&c.name);
        let mut cumulative = 0;
        for (i, n) in c.buckets.iter().enumerate().take(LAT_BUCKETS - 1) {
            cumulative += n;
            let le = bucket_top(i) as f64 / 1e9;
            let _ = writeln!(
                out,
                "rthulhu_wakeup_latency_seconds_bucket{{class=\"{label}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "rthulhu_wakeup_latency_seconds_bucket{{class=\"{label}\",le=\"+Inf\"}} {}",
            c.wakeups
        );
        let _ = writeln!(
            out,
            "rthulhu_wakeup_latency_seconds_sum{{class=\"{label}\"}} {}",
            c.sum_ns as f64 / 1e9
        );
        let _ = writeln!(
            out,
            "rthulhu_wakeup_latency_seconds_count{{class=\"{label}\"}} {}",
            c.wakeups
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn latency(class: usize, waits_ns: &[u64]) -> Latency {
        let mut l = Latency::default();
        for &w in waits_ns {
            l.hist[class][bucket_of(w)] += 1;
            l.sum_ns[class] += w;
            l.max_ns[class] = l.max_ns[class].max(w);
        }
        l
    }

    #[test]
    fn quantiles_are_placed_linearly_inside_their_buckets() {
        // 98 waits of 1.5 µs (bucket [1024, 2048)), one of 5 ms, one of 40 ms.
        let mut waits = vec![1500; 98];
        waits.extend([5_000_000, 40_000_000]);
        let f = figures(&["all".into()], &latency(0, &waits));
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].wakeups, 100);
        // The 50th of the 98 in [1024, 2048).
        assert_eq!(f[0].wakeup_latency_ns.p50, 1024 + 1024 * 50 / 98);
        // The 99th of 100 is the 5 ms wait, alone in [2^22, 2^23) ns.
        assert_eq!(f[0].wakeup_latency_ns.p99, 1 << 23);
        assert_eq!(f[0].wakeup_latency_ns.max, 40_000_000);
        assert_eq!(f[0].sum_ns, 98 * 1500 + 45_000_000);
        // A quantile never exceeds the longest wait.
        let f = figures(&["all".into()], &latency(0, &[1500, 1500]));
        assert_eq!(f[0].wakeup_latency_ns.p99, 1500);
    }

    #[test]
    fn a_class_without_wakeups_reports_zeros_and_only_named_classes_show() {
        let f = figures(&["a".into(), "b".into()], &latency(1, &[100]));
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].wakeups, 0);
        assert_eq!(f[0].wakeup_latency_ns, Percentiles::default());
        assert_eq!(f[1].wakeups, 1);
    }

    #[test]
    fn prometheus_buckets_are_cumulative_and_end_at_the_count() {
        let f = figures(&["x\"y".into()], &latency(0, &[3, 3, 1000]));
        let mut out = String::new();
        prometheus(&f, &mut out);
        assert!(out.contains("# TYPE rthulhu_wakeup_latency_seconds histogram"));
        // 3 ns waits: bucket [2, 4), top 4 ns.
        assert!(
            out.contains("_bucket{class=\"x\\\"y\",le=\"0.000000004\"} 2\n"),
            "{out}"
        );
        assert!(out.contains("_bucket{class=\"x\\\"y\",le=\"+Inf\"} 3\n"));
        assert!(out.contains("_count{class=\"x\\\"y\"} 3\n"));
        let mut last = 0;
        for l in out.lines().filter(|l| l.contains("_bucket")) {
            let v: u64 = l.rsplit(' ').next().unwrap().parse().unwrap();
            assert!(v >= last, "{l}");
            last = v;
        }
    }
}
