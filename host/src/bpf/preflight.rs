//! Checks before touching the kernel: root, sched_ext present, no other
//! sched_ext scheduler loaded. Each failure is one line.

use std::path::Path;

const SCX_SYSFS: &str = "/sys/kernel/sched_ext";

/// Why the real kernel cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PreflightError {
    /// Attaching a scheduler needs CAP_SYS_ADMIN and CAP_BPF.
    #[error(
        "attaching to the kernel needs root (try sudo, or --simulate WORKLOAD for the simulator)"
    )]
    NotRoot,
    /// The running kernel was built without sched_ext.
    #[error("kernel {0} has no sched_ext (needs Linux >= 6.12 with CONFIG_SCHED_CLASS_EXT=y; tests/vm/run boots one)")]
    NoSchedExt(String),
    /// Another scheduler owns sched_ext.
    #[error("another sched_ext scheduler is loaded ({0}); stop it first")]
    Busy(String),
}

/// Runs every check.
pub fn check() -> Result<(), PreflightError> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(PreflightError::NotRoot);
    }
    if !Path::new(SCX_SYSFS).join("state").exists() {
        let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        return Err(PreflightError::NoSchedExt(release.trim().to_string()));
    }
    let state = read(&format!("{SCX_SYSFS}/state"));
    if state != "disabled" {
        let ops = read(&format!("{SCX_SYSFS}/root/ops"));
        let who = if ops.is_empty() {
            format!("state {state}")
        } else {
            ops
        };
        return Err(PreflightError::Busy(who));
    }
    Ok(())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
