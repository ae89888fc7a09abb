//! The stable ABI between the Rthulhu host and scheduling-policy plugins.
//!
//! A plugin is a `cdylib` that implements [`CustomScheduler`] and exports it
//! with [`export_plugin!`]. It depends on this crate only: no BPF, no kernel
//! headers. The host loads it with a layout check (via `abi_stable`), so a
//! plugin built against an incompatible version is refused, never called.
//!
//! Panics inside plugin code are caught at the boundary and returned to the
//! host as errors; build plugins with `panic = "unwind"` (the default).

#![warn(missing_docs)]

mod aging;
mod clock;
mod module;
mod sched;
mod scheduler;
mod task;
pub mod testing;

#[doc(hidden)]
pub use abi_stable;

pub use aging::AgingPool;
pub use clock::VirtualClock;
pub use module::{make_module, PluginMod, PluginModRef};
pub use sched::{HostCtx, HostServices, Sched};
pub use scheduler::{
    decide, CustomScheduler, Decision, ErasedScheduler, NamedCounter, Next, SchedulerBox,
    SliceRenewal, WakeupPreemption,
};
pub use task::{
    Counters, CpuTarget, DispatchedTask, QueuedTask, COMM_LEN, ENQ_SLEPT, ENQ_WAKEUP, WEIGHT_NICE_0,
};
