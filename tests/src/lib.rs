//! Helpers for Rthulhu's cross-crate tests: build the real host binary and
//! plugins once, run them, and read their reports.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Builds `host` and every plugin with cargo, in a target directory of their
/// own (the outer `cargo test` holds the lock on the usual one), once per
/// test process, and returns the directory holding them.
pub fn built(release: bool) -> &'static Path {
    static DEBUG: OnceLock<PathBuf> = OnceLock::new();
    static RELEASE: OnceLock<PathBuf> = OnceLock::new();
    let cell = if release { &RELEASE } else { &DEBUG };
    cell.get_or_init(|| {
        let target = repo().join("target").join("test-build");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.current_dir(repo())
            .args(["build", "--quiet", "--target-dir"])
            .arg(&target);
        for p in [
            "host",
            "simple",
            "deadline",
            "strategy",
            "panicky",
            "hoarder",
            "wrong-abi",
            "spinner",
        ] {
            cmd.args(["-p", p]);
        }
        if release {
            cmd.arg("--release");
        }
        let status = cmd.status().expect("running cargo build");
        assert!(status.success(), "building host and plugins failed");
        target.join(if release { "release" } else { "debug" })
    })
}

/// Path of a built plugin, e.g. `plugin("simple")` → `…/libsimple.so`.
pub fn plugin(name: &str) -> PathBuf {
    built(false).join(format!("lib{}.so", name.replace('-', "_")))
}

/// Runs the built `host` with `args` from the repository root.
pub fn host(args: &[&str]) -> Output {
    Command::new(built(false).join("host"))
        .current_dir(repo())
        .args(args)
        .output()
        .expect("running host")
}

/// Simulates `workload` (a path under configs/workloads/ or any file) with
/// plugin `name` and an optional `[plugin]` table, returning the process
/// output and its JSON report.
pub fn simulate(name: &str, plugin_table: &str, workload: &Path) -> (Output, serde_json::Value) {
    let dir = std::env::temp_dir().join(format!("rthulhu-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // One file per call: tests run in parallel threads of one process, and
    // two of them simulating the same plugin and table must not read each
    // other's half-written file.
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let call = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let config = dir.join(format!("{name}-{:x}-{call}.toml", hash(plugin_table)));
    std::fs::write(
        &config,
        format!(
            "[scheduler]\nplugin = {:?}\n[plugin]\n{plugin_table}\n",
            plugin(name)
        ),
    )
    .unwrap();
    let out = host(&[
        "--config",
        config.to_str().unwrap(),
        "--simulate",
        workload.to_str().unwrap(),
        "--json",
    ]);
    let report = serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
    (out, report)
}

fn hash(s: &str) -> u64 {
    s.bytes().fold(0xcbf29ce484222325, |h, b| {
        (h ^ b as u64).wrapping_mul(0x100000001b3)
    })
}

/// Writes a workload file for a test and returns its path.
pub fn workload(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rthulhu-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    path
}

/// The report's group named `name`.
pub fn group<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["groups"]
        .as_array()
        .and_then(|g| g.iter().find(|g| g["name"] == name))
        .unwrap_or_else(|| panic!("no group {name} in {report}"))
}

/// stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}
