// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The workload parser must turn any input into a workload or one error
//! line, and any workload it accepts must simulate without panicking (small
//! ones are run, with the simple policy linked in).
#![no_main]

use libfuzzer_sys::fuzz_target;
use plugin_api::CustomScheduler;
use rthulhu::dispatcher::{Native, SliceOpts};
use rthulhu::sim::{simulate, workload::Workload};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Workload::parse("fuzz.toml".as_ref(), text) {
        Err(e) => assert!(!e.to_string().contains('\n')),
        Ok(w) => {
            let tasks: u32 = w.groups.iter().map(|g| g.count).sum();
            if w.duration_ms <= 20 && tasks <= 32 && w.cpus <= 8 {
                let policy = Native::new(simple::Simple::new("").unwrap());
                let _ = simulate("simple", policy, &w, SliceOpts::default(), true);
            }
        }
    }
});
