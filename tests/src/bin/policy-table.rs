//! Prints one table: every shipped plugin × every simulator workload, with
//! wake-up latency p50/p99, the longest wait of a runnable task and CPU share
//! per group.
//!
//! `cargo run --release -p rthulhu-tests --bin policy-table`

use rthulhu::dispatcher::SliceOpts;
use rthulhu::plugin::Plugin;
use rthulhu::sim::{simulate, workload::Workload};
use rthulhu_tests::{built, repo};

/// Plugins and the config whose `[plugin]` table each runs with.
const PLUGINS: [(&str, &str); 3] = [
    ("simple", "configs/simple.toml"),
    ("deadline", "configs/deadline.toml"),
    ("strategy", "configs/strategy.toml"),
];
const WORKLOADS: [&str; 5] = ["interactive", "messaging", "priority", "mixed", "churn"];

fn main() {
    let bin = built(!cfg!(debug_assertions));
    println!(
        "{:<12} {:<9} {:<12} {:>10} {:>10} {:>12} {:>7}",
        "workload", "plugin", "group", "p50 µs", "p99 µs", "wait max ms", "cpu %"
    );
    for w in WORKLOADS {
        let path = repo().join(format!("configs/workloads/{w}.toml"));
        let workload = Workload::load(&path).unwrap_or_else(|e| panic!("{e}"));
        for (name, config) in PLUGINS {
            let plugin = Plugin::load(&bin.join(format!("lib{name}.so"))).expect("plugin loads");
            let cfg = rthulhu::config::Config::load(&repo().join(config)).expect("config");
            let policy = plugin
                .construct(&cfg.plugin_table)
                .expect("plugin accepts its config");
            let r = simulate(name, policy, &workload, SliceOpts::default(), true).expect("runs");
            for g in &r.groups {
                println!(
                    "{:<12} {:<9} {:<12} {:>10.1} {:>10.1} {:>12.1} {:>7.2}",
                    w,
                    name,
                    g.name,
                    g.wakeup_p50_ns as f64 / 1e3,
                    g.wakeup_p99_ns as f64 / 1e3,
                    g.wait_max_ns as f64 / 1e6,
                    g.cpu_share * 100.0
                );
            }
            if r.ejected {
                println!("{w:<12} {name:<9} EJECTED: {}", r.exit.message);
            }
        }
    }
}
