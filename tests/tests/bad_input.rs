//! Bad input: one line naming the file and the problem, exit code 2, nothing run.

use rthulhu_tests::{host, plugin, repo, stderr, workload};

fn refused(args: &[&str], file: &str, problem: &str) {
    let out = host(args);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    assert!(out.stdout.is_empty(), "{args:?} produced output");
    assert_eq!(
        err.trim_end().lines().count(),
        1,
        "{args:?}: not one line: {err}"
    );
    assert!(
        err.contains(file) && err.contains(problem),
        "{args:?}: {err}"
    );
}

fn mixed() -> String {
    repo()
        .join("configs/workloads/mixed.toml")
        .display()
        .to_string()
}

#[test]
fn missing_plugin_file() {
    refused(
        &["--plugin", "/nonexistent/libx.so", "--simulate", &mixed()],
        "/nonexistent/libx.so",
        "not found",
    );
}

#[test]
fn library_that_is_not_a_plugin() {
    // The real path: as root, a path through a symbolic link (/lib on a
    // merged-/usr system) is refused before anything is loaded.
    let libz = [
        "/usr/lib/x86_64-linux-gnu/libz.so.1",
        "/lib/x86_64-linux-gnu/libz.so.1",
    ]
    .into_iter()
    .find_map(|p| std::fs::canonicalize(p).ok())
    .expect("libz is installed");
    let libz = libz.to_str().unwrap();
    refused(
        &["--plugin", libz, "--simulate", &mixed()],
        libz,
        "not an Rthulhu plugin",
    );
}

#[test]
fn plugin_of_another_abi() {
    let p = plugin("wrong-abi");
    let p = p.to_str().unwrap();
    refused(
        &["--plugin", p, "--simulate", &mixed()],
        p,
        "ABI does not match",
    );
}

#[test]
fn malformed_and_unknown_config_keys() {
    let simple = plugin("simple");
    let bad = workload(
        "badcfg",
        &format!("[scheduler]\nplugin = {simple:?}\nslice = 5\n"),
    );
    let bad = bad.to_str().unwrap();
    refused(
        &["--config", bad, "--simulate", &mixed()],
        bad,
        "line 3, column 1: unknown field `slice`",
    );
    let broken = workload("brokencfg", "[scheduler\n");
    let broken = broken.to_str().unwrap();
    refused(
        &["--config", broken, "--simulate", &mixed()],
        broken,
        "line 1",
    );
    let plugin_key = workload(
        "plugincfg",
        &format!("[scheduler]\nplugin = {simple:?}\n[plugin]\nmood = 1\n"),
    );
    let plugin_key = plugin_key.to_str().unwrap();
    refused(
        &["--config", plugin_key, "--simulate", &mixed()],
        plugin_key,
        "unknown field `mood`",
    );
}

#[test]
fn bad_workload() {
    let simple = plugin("simple");
    let simple = simple.to_str().unwrap();
    let w = workload(
        "badwl",
        "cpus = 0\nduration_ms = 10\n[[group]]\nname='a'\ncount=1\nbehaviour={kind='cpu-bound'}\n",
    );
    let w = w.to_str().unwrap();
    refused(&["--plugin", simple, "--simulate", w], w, "cpus = 0");
    refused(
        &["--plugin", simple, "--simulate", "/nonexistent.toml"],
        "/nonexistent.toml",
        "No such file",
    );
}

#[test]
fn files_others_can_write_are_refused_as_root() {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: geteuid has no preconditions.
    // Only root is protected this way: as another user this test could
    // check nothing, so it fails rather than pass without testing.
    assert_eq!(
        unsafe { libc_geteuid() },
        0,
        "this test needs root (tests/run and CI run as root)"
    );
    let simple = plugin("simple");
    let cfg = workload(
        "worldwritable",
        &format!("[scheduler]\nplugin = {simple:?}\n"),
    );
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    let cfg = cfg.to_str().unwrap();
    refused(
        &["--config", cfg, "--simulate", &mixed()],
        cfg,
        "refusing file",
    );
    let out = host(&[
        "--config",
        cfg,
        "--simulate",
        &mixed(),
        "--allow-untrusted-files",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
}

extern "C" {
    #[link_name = "geteuid"]
    fn libc_geteuid() -> u32;
}

#[test]
fn out_of_range_numbers_are_refused_before_anything_starts() {
    let simple = plugin("simple");
    let simple = simple.to_str().unwrap();
    for stats in ["--stats=-1", "--stats=NaN", "--stats=inf", "--stats=0"] {
        refused(
            &["--plugin", simple, "--simulate", &mixed(), stats],
            "(command line)",
            "--stats",
        );
    }
    refused(
        &[
            "--plugin",
            simple,
            "--simulate",
            &mixed(),
            "--slice-us",
            "18446744073709551615",
        ],
        "(command line)",
        "over a second",
    );
    refused(
        &["--plugin", simple, "--round-timeout-ms", "6000"],
        "(command line)",
        "--round-timeout-ms 6000 must be below --timeout-ms 5000",
    );
}

/// As root, the file checked is the file used: no symbolic link anywhere on
/// the path, no folder others can write, no bare library name handed to the
/// loader's search path, no check skipped for a file that is missing.
#[test]
fn plugin_paths_that_could_be_swapped_are_refused_as_root() {
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        unsafe { libc_geteuid() },
        0,
        "this test needs root (tests/run and CI run as root)"
    );
    let simple = plugin("simple");
    let dir = std::env::temp_dir().join(format!("rthulhu-swap-{}", std::process::id()));
    std::fs::create_dir_all(dir.join("open")).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    // A symbolic link that could be pointed elsewhere between check and load.
    let link = dir.join("libswap.so");
    std::os::unix::fs::symlink(&simple, &link).unwrap();
    let l = link.to_str().unwrap();
    refused(&["--plugin", l, "--simulate", &mixed()], l, "symbolic link");
    // A folder anyone may write, above the plugin.
    let open = dir.join("open");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
    let inside = open.join("libsimple.so");
    std::fs::copy(&simple, &inside).unwrap();
    let i = inside.to_str().unwrap();
    refused(
        &["--plugin", i, "--simulate", &mixed()],
        i,
        "refusing folder",
    );
    // Missing now (created later would not help: it is opened once, here).
    let later = dir.join("libnotyet.so");
    let n = later.to_str().unwrap();
    refused(&["--plugin", n, "--simulate", &mixed()], n, "not found");
    // A bare name is a file in the current folder, never the library path:
    // libz.so.1 is on the loader's path, but not in the repository.
    refused(
        &["--plugin", "libz.so.1", "--simulate", &mixed()],
        "libz.so.1",
        "not found",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
