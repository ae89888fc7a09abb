//! The `[plugin]` table of the strategy policy.

use regex::Regex;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Raw {
    max_burst_us: u64,
    max_wait_ms: u64,
    max_credit_us: u64,
    renew_slices: u64,
    #[serde(rename = "strategy")]
    strategies: Vec<RawStrategy>,
}

impl Default for Raw {
    fn default() -> Self {
        Raw {
            max_burst_us: 5000,
            max_wait_ms: 100,
            max_credit_us: 5000,
            renew_slices: 4,
            strategies: Vec::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStrategy {
    name: Option<String>,
    #[serde(default)]
    priority: u32,
    execution_time_us: Option<u64>,
    comm: Option<String>,
    #[serde(default)]
    pids: Vec<i32>,
    #[serde(default)]
    tgids: Vec<i32>,
    cgroup_prefix: Option<String>,
    uid: Option<u32>,
}

/// One strategy: who it selects (every given selector must match) and what
/// they get.
#[derive(Debug)]
pub struct Strategy {
    /// Its `name`, or "strategy N" (1-based): its class in the latency stats.
    pub name: String,
    /// Priority level: higher runs first; 0 is the level of unmatched tasks.
    pub priority: u32,
    /// Slice of matched tasks (ns); `None` leaves it to the host.
    pub slice_ns: Option<u64>,
    /// Command-name regex (matched against each thread's comm).
    pub comm: Option<Regex>,
    /// Thread ids.
    pub pids: Vec<i32>,
    /// Process ids (all their threads).
    pub tgids: Vec<i32>,
    /// Cgroup path prefix, e.g. `/kubepods.slice/kubepods-pod<UID>`.
    pub cgroup_prefix: Option<String>,
    /// Real user id.
    pub uid: Option<u32>,
}

impl Strategy {
    /// Its selectors and what they give, in words, e.g.
    /// `comm =~ ^nginx and uid 33 → priority 2, slice 1000 µs`.
    pub fn describe(&self) -> String {
        let list = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(",");
        let mut sel = Vec::new();
        if let Some(re) = &self.comm {
            sel.push(format!("comm =~ {}", re.as_str()));
        }
        if !self.pids.is_empty() {
            sel.push(format!("pid in {}", list(&self.pids)));
        }
        if !self.tgids.is_empty() {
            sel.push(format!("tgid in {}", list(&self.tgids)));
        }
        if let Some(pre) = &self.cgroup_prefix {
            sel.push(format!("cgroup under {pre}"));
        }
        if let Some(uid) = self.uid {
            sel.push(format!("uid {uid}"));
        }
        let mut gives = format!("priority {}", self.priority);
        if let Some(ns) = self.slice_ns {
            gives.push_str(&format!(", slice {} µs", ns / 1000));
        }
        format!("{} → {gives}", sel.join(" and "))
    }
}

/// The whole table.
#[derive(Debug)]
pub struct Settings {
    /// A matched task that runs longer than this without sleeping loses its
    /// priority until it sleeps (the starvation guard against matched hogs).
    pub max_burst_ns: u64,
    /// A task waiting longer than this is run next, whatever its level.
    pub max_wait_ns: u64,
    /// How far behind the others a sleeper may come back (vtime).
    pub max_credit_ns: u64,
    /// Slices in a row the kernel may renew for an unmatched task before
    /// its record comes back (0: never).
    pub renew_slices: u64,
    /// Strategies, first match wins.
    pub strategies: Vec<Strategy>,
}

impl Settings {
    /// Parses and checks the table.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: Raw = toml::from_str(text).map_err(|e| e.message().trim().to_string())?;
        if raw.max_burst_us == 0 || raw.max_wait_ms == 0 {
            return Err("max_burst_us and max_wait_ms must be positive".into());
        }
        if raw.renew_slices > 100 {
            return Err(format!("renew_slices {} is over 100", raw.renew_slices));
        }
        let mut strategies = Vec::new();
        for (i, s) in raw.strategies.into_iter().enumerate() {
            let name = s
                .name
                .clone()
                .unwrap_or_else(|| format!("strategy {}", i + 1));
            let comm = match &s.comm {
                Some(re) => Some(Regex::new(re).map_err(|e| {
                    format!(
                        "{name}: bad comm regex: {}",
                        e.to_string().replace('\n', " ")
                    )
                })?),
                None => None,
            };
            let selects = comm.is_some()
                || !s.pids.is_empty()
                || !s.tgids.is_empty()
                || s.cgroup_prefix.is_some()
                || s.uid.is_some();
            if !selects {
                return Err(format!(
                    "{name}: no selector (comm, pids, tgids, cgroup_prefix or uid)"
                ));
            }
            if s.execution_time_us == Some(0) {
                return Err(format!("{name}: execution_time_us must be positive"));
            }
            if s.priority > MAX_PRIORITY {
                return Err(format!(
                    "{name}: priority {} is above the highest level, {MAX_PRIORITY}",
                    s.priority
                ));
            }
            strategies.push(Strategy {
                name: name.clone(),
                priority: s.priority,
                slice_ns: s
                    .execution_time_us
                    .map(|us| us_to_ns(us, &format!("{name}: execution_time_us")))
                    .transpose()?,
                comm,
                pids: s.pids,
                tgids: s.tgids,
                cgroup_prefix: s.cgroup_prefix,
                uid: s.uid,
            });
        }
        Ok(Settings {
            max_burst_ns: us_to_ns(raw.max_burst_us, "max_burst_us")?,
            max_wait_ns: us_to_ns(raw.max_wait_ms.saturating_mul(1000), "max_wait_ms")?,
            max_credit_ns: us_to_ns(raw.max_credit_us, "max_credit_us")?,
            renew_slices: raw.renew_slices,
            strategies,
        })
    }

    /// Whether any strategy needs cgroup paths / user ids (so the policy
    /// asks the host only when it must).
    pub fn needs(&self) -> (bool, bool) {
        let cg = self.strategies.iter().any(|s| s.cgroup_prefix.is_some());
        let uid = self.strategies.iter().any(|s| s.uid.is_some());
        (cg, uid)
    }
}

/// The highest priority level: levels stay distinct in the kernel's queue
/// order (see `kernel_key` in lib.rs), which has room for 256.
pub const MAX_PRIORITY: u32 = 255;

/// µs → ns, refusing values that would not fit (an hour is plenty for any
/// of these settings).
fn us_to_ns(us: u64, what: &str) -> Result<u64, String> {
    const HOUR_US: u64 = 3_600_000_000;
    if us > HOUR_US {
        return Err(format!("{what}: {us} µs is more than an hour"));
    }
    Ok(us * 1000)
}
