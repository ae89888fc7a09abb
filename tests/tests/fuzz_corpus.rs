//! The fuzz seed corpora (fuzz/corpus/) as regression tests: every seed is
//! parsed (and small workloads simulated) without a panic, and every error
//! is one line.

use plugin_api::CustomScheduler;
use rthulhu::config::Config;
use rthulhu::dispatcher::{Native, SliceOpts};
use rthulhu::sim::{simulate, workload::Workload};
use rthulhu_tests::repo;

fn seeds(target: &str) -> Vec<(String, String)> {
    let dir = repo().join("fuzz/corpus").join(target);
    let mut out: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .map(|p| {
            (
                p.display().to_string(),
                String::from_utf8_lossy(&std::fs::read(&p).unwrap()).into_owned(),
            )
        })
        .collect();
    out.sort();
    assert!(out.len() >= 3, "too few seeds in {}", dir.display());
    out
}

#[test]
fn config_seeds() {
    for (name, text) in seeds("config") {
        if let Err(e) = Config::parse(name.as_ref(), &text) {
            assert!(!e.to_string().contains('\n'), "{name}: {e}");
        }
    }
}

#[test]
fn workload_seeds() {
    let mut ran = 0;
    for (name, text) in seeds("workload") {
        match Workload::parse(name.as_ref(), &text) {
            Err(e) => assert!(!e.to_string().contains('\n'), "{name}: {e}"),
            Ok(w) => {
                let policy = Native::new(simple::Simple::new("").unwrap());
                let r = simulate("simple", policy, &w, SliceOpts::default(), true).unwrap();
                assert!(!r.ejected, "{name}");
                ran += 1;
            }
        }
    }
    assert!(ran >= 3);
}
