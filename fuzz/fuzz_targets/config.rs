// SPDX-License-Identifier: Apache-2.0 OR MIT
//! The config parser must turn any input into a config or one error line.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = rthulhu::config::Config::parse("fuzz.toml".as_ref(), text) {
            assert!(!e.to_string().contains('\n'));
        }
    }
});
