//! The service and fleet packaging: the manifests parse, fit together, and
//! carry a config the host accepts.

use rthulhu_tests::{built, host, repo, stderr, workload};
use serde_yaml::Value;

fn yaml(path: &str) -> Value {
    let text = std::fs::read_to_string(repo().join(path)).unwrap();
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn kubernetes_manifests_fit_together_and_their_config_checks_out() {
    let kust = yaml("deploy/kubernetes/kustomization.yaml");
    let files: Vec<&str> = kust["resources"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        files,
        ["namespace.yaml", "configmap.yaml", "daemonset.yaml"]
    );
    let ns = yaml("deploy/kubernetes/namespace.yaml");
    let cm = yaml("deploy/kubernetes/configmap.yaml");
    let ds = yaml("deploy/kubernetes/daemonset.yaml");
    assert_eq!(ns["kind"], "Namespace");
    assert_eq!(cm["kind"], "ConfigMap");
    assert_eq!(ds["kind"], "DaemonSet");
    let name = ns["metadata"]["name"].as_str().unwrap();
    assert_eq!(cm["metadata"]["namespace"], name);
    assert_eq!(ds["metadata"]["namespace"], name);

    let pod = &ds["spec"]["template"]["spec"];
    assert_eq!(pod["hostPID"], true);
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["privileged"], true);
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(&args[..2], ["--config", "/etc/rthulhu/config.toml"]);
    assert_eq!(pod["initContainers"][0]["args"][0], "--check-config");
    let config_volume = pod["volumes"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "config")
        .unwrap();
    assert_eq!(config_volume["configMap"]["name"], cm["metadata"]["name"]);
    assert!(c["volumeMounts"]
        .as_sequence()
        .unwrap()
        .iter()
        .any(|m| m["mountPath"] == "/etc/rthulhu"));

    // The ConfigMap's config, with the image's plugin folder pointed at the
    // plugins this test built, passes --check-config.
    let config = cm["data"]["config.toml"].as_str().unwrap();
    assert!(config.contains("kubepods") && config.contains("libstrategy.so"));
    let dir = built(false).display().to_string();
    let local = workload(
        "configmap-config",
        &config.replace("/usr/lib/rthulhu", &dir),
    );
    let out = host(&["--check-config", local.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (plugin strategy"));
}

#[test]
fn systemd_unit_checks_the_config_first_and_reloads_with_sighup() {
    let unit = std::fs::read_to_string(repo().join("packaging/rthulhu.service")).unwrap();
    let line = |key: &str| {
        unit.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("no {key}"))
            .to_string()
    };
    assert!(line("ExecStartPre=").contains("--check-config /etc/rthulhu/config.toml"));
    assert!(line("ExecStart=").contains("--config /etc/rthulhu/config.toml"));
    assert!(line("ExecReload=").contains("kill -HUP $MAINPID"));
    assert_eq!(line("Restart="), "Restart=on-failure");
    assert_eq!(line("Type="), "Type=notify");
    assert!(line("CapabilityBoundingSet=").contains("CAP_BPF"));
    // The start limit belongs to [Unit] (systemd ignores it in [Service]).
    let unit_section = unit.split("[Service]").next().unwrap();
    assert!(unit_section.contains("\nStartLimitIntervalSec="));
    assert!(unit_section.contains("\nStartLimitBurst="));
}

#[test]
fn systemd_analyze_verifies_the_unit() {
    // systemd-analyze checks that ExecStart's binary exists: point the unit
    // at the host this test built. tests/setup-deps installs systemd.
    let unit = std::fs::read_to_string(repo().join("packaging/rthulhu.service")).unwrap();
    let host = built(false).join("host");
    let dir = repo().join("target").join("unit-verify");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("rthulhu.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/rthulhu", host.to_str().unwrap()),
    )
    .unwrap();
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("running systemd-analyze (package systemd; tests/setup-deps installs it)");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        stderr(&out)
    );
}

#[test]
fn check_config_refuses_a_bad_plugin_table() {
    let simple = built(false).join("libsimple.so");
    let bad = workload(
        "check-bad",
        &format!("[scheduler]\nplugin = {simple:?}\n[plugin]\nmode = \"lottery\"\n"),
    );
    let out = host(&["--check-config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("[plugin] settings refused by simple"));
}
