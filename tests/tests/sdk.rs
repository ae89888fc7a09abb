//! The plugin SDK as a vendor uses it: a plugin crate outside this
//! workspace, depending on `plugin-api` only, built on its own and loaded by
//! the host; and one built against a changed ABI, which the host refuses.

use std::path::{Path, PathBuf};
use std::process::Command;

use rthulhu_tests::{host, repo, stderr};

const PLUGIN: &str = r#"
use std::collections::VecDeque;
use plugin_api::{CpuTarget, CustomScheduler, QueuedTask, Sched};

pub struct Vendor(VecDeque<QueuedTask>);

impl CustomScheduler for Vendor {
    const NAME: &'static str = "vendor";
    fn new(_: &str) -> Result<Self, String> { Ok(Vendor(VecDeque::new())) }
    fn drain_queued_tasks(&mut self, s: &mut Sched<'_>) {
        while let Some(t) = s.dequeue_task() { self.0.push_back(t) }
    }
    fn select_queued_task(&mut self, _: &mut Sched<'_>) -> Option<QueuedTask> { self.0.pop_front() }
    fn select_cpu(&mut self, _: &mut Sched<'_>, _: &QueuedTask) -> CpuTarget { CpuTarget::Any }
    fn pool_count(&self) -> u64 { self.0.len() as u64 }
}

plugin_api::export_plugin!(Vendor);
"#;

/// Writes and builds a plugin crate in `dir` against the plugin-api at `api`.
fn build_vendor_plugin(dir: &Path, api: &Path) -> PathBuf {
    std::fs::create_dir_all(dir.join("src")).unwrap();
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            "[package]\nname = \"vendor-plugin\"\nversion = \"1.0.0\"\nedition = \"2021\"\n\n\
             [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nplugin-api = {{ path = {:?} }}\n\n\
             [workspace]\n",
            api
        ),
    )
    .unwrap();
    std::fs::write(dir.join("src/lib.rs"), PLUGIN).unwrap();
    // Start from this workspace's lock file: same dependency versions, no surprises.
    std::fs::copy(repo().join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = dir.join("target");
    let status = Command::new(cargo)
        .current_dir(dir)
        .args(["build", "--quiet", "--target-dir"])
        .arg(&target)
        .status()
        .expect("running cargo");
    assert!(
        status.success(),
        "building the vendor plugin in {} failed",
        dir.display()
    );
    target.join("debug/libvendor_plugin.so")
}

fn scratch(name: &str) -> PathBuf {
    let dir = repo().join("target").join("sdk-tests").join(name);
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

#[test]
fn a_plugin_built_outside_the_workspace_loads_and_runs() {
    let lib = build_vendor_plugin(&scratch("vendor"), &repo().join("plugin-api"));
    let w = repo().join("configs/workloads/mixed.toml");
    let out = host(&[
        "--plugin",
        lib.to_str().unwrap(),
        "--simulate",
        w.to_str().unwrap(),
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["plugin"], "vendor");
    assert!(r["dispatched"].as_u64().unwrap() > 1000, "{r}");
}

#[test]
fn a_plugin_built_against_another_abi_version_is_refused() {
    // plugin-api as a later, incompatible release would be: version 0.2.0.
    let api = scratch("plugin-api-0.2");
    std::fs::create_dir_all(api.join("src")).unwrap();
    for f in std::fs::read_dir(repo().join("plugin-api/src")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, api.join("src").join(f.file_name().unwrap())).unwrap();
    }
    let abi = std::fs::read_to_string(repo().join("Cargo.toml")).unwrap();
    let abi_stable = abi.lines().find(|l| l.starts_with("abi_stable =")).unwrap();
    std::fs::write(
        api.join("Cargo.toml"),
        format!(
            "[package]\nname = \"plugin-api\"\nversion = \"0.2.0\"\nedition = \"2021\"\n\n\
             [lib]\nname = \"plugin_api\"\n\n[dependencies]\n{abi_stable}\n"
        ),
    )
    .unwrap();
    let lib = build_vendor_plugin(&scratch("vendor-0.2"), &api);
    let w = repo().join("configs/workloads/mixed.toml");
    let out = host(&[
        "--plugin",
        lib.to_str().unwrap(),
        "--simulate",
        w.to_str().unwrap(),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("incompatible plugin-api version"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}
