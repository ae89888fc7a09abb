//! Rthulhu's host: loads a policy plugin and runs the dispatch loop against a
//! kernel backend (the real sched_ext BPF program, or the simulator).

pub mod bpf;
pub mod cgroup_latency;
pub mod config;
pub mod cpus;
pub mod described;
pub mod dispatcher;
pub mod explain;
pub mod input;
pub mod kernel;
pub mod latency;
pub mod notify;
pub mod occupancy;
pub mod plugin;
pub mod round_watch;
pub mod safety;
pub mod sim;
pub mod stats;
pub mod stats_server;
pub mod topology;
