//! The plugin guide's compatibility promise, tested: a plugin built against
//! an older 0.1 layout of the ABI (the first one, before `cgroup_path`,
//! `task_uid` and the plugin's `counters` were appended; plugin-api's
//! `first-layout` feature rebuilds it) loads in this host and schedules
//! exactly as the same plugin built against today's layout.

use std::path::PathBuf;
use std::process::Command;

use rthulhu_tests::{built, host, repo, stderr};

/// Builds the shipped plugins against the first layout, in a target folder
/// of their own, and returns the folder holding them.
fn first_layout_plugins() -> PathBuf {
    let target = repo().join("target").join("abi-first-layout");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(repo())
        .args(["build", "--quiet", "--target-dir"])
        .arg(&target)
        .args(["-p", "simple", "-p", "deadline"])
        .args(["--features", "plugin-api/first-layout"])
        .status()
        .expect("running cargo build");
    assert!(status.success(), "building the first-layout plugins failed");
    target.join("debug")
}

fn simulate(plugin: &std::path::Path) -> serde_json::Value {
    let workload = repo().join("configs/workloads/mixed.toml");
    let dir = std::env::temp_dir().join(format!("rthulhu-abi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join(format!(
        "{}.toml",
        plugin.to_string_lossy().replace('/', "_")
    ));
    std::fs::write(
        &config,
        format!("[scheduler]\nplugin = {plugin:?}\n[plugin]\npreempt_burst_us = 0\n"),
    )
    .unwrap();
    let out = host(&[
        "--config",
        config.to_str().unwrap(),
        "--simulate",
        workload.to_str().unwrap(),
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}: {}",
        plugin.display(),
        stderr(&out)
    );
    let mut report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Measured on the wall clock: the one figure that differs between runs.
    report["decisions_per_sec"].take();
    report
}

#[test]
fn a_plugin_built_against_the_first_layout_loads_and_schedules_the_same() {
    let old = first_layout_plugins();
    for name in ["simple", "deadline"] {
        let file = format!("lib{name}.so");
        let (then, now) = (old.join(&file), built(false).join(&file));
        assert_ne!(
            std::fs::read(&then).unwrap(),
            std::fs::read(&now).unwrap(),
            "{name}: the first-layout build is the same library as today's"
        );
        let (mut a, mut b) = (simulate(&then), simulate(&now));
        // A plugin without the class entries is one class, `all`, to the
        // host; everything else is the same.
        let old_classes = a["classes"].take();
        assert_eq!(
            old_classes.as_array().map(Vec::len),
            Some(1),
            "{old_classes}"
        );
        assert_eq!(old_classes[0]["name"], "all");
        assert_eq!(
            old_classes[0]["wakeups"],
            b["classes"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c["wakeups"].as_u64().unwrap())
                .sum::<u64>(),
            "{name}: the same wake-ups, in one class or several"
        );
        b["classes"].take();
        assert_eq!(a, b, "{name}");
    }
}
