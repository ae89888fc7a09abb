// SPDX-License-Identifier: Apache-2.0 OR MIT
//! Compiles bpf/main.bpf.c with clang-19 and generates its Rust skeleton.

use std::path::PathBuf;

use libbpf_cargo::SkeletonBuilder;

fn main() {
    let bpf = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bpf");
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("OUT_DIR")).join("main.skel.rs");
    for f in ["main.bpf.c", "intf.h", "vmlinux.h"] {
        println!("cargo:rerun-if-changed={}", bpf.join(f).display());
    }
    let clang = std::env::var("RTHULHU_CLANG").unwrap_or_else(|_| "clang-19".into());
    SkeletonBuilder::new()
        .source(bpf.join("main.bpf.c"))
        .clang(&clang)
        .clang_args([
            "-fms-extensions",
            "-Wno-microsoft-anon-tag",
            "-Wall",
            "-Werror",
            "-mcpu=v3", // 32-bit atomics (task_ctx flags)
        ])
        .build_and_generate(&out)
        .unwrap_or_else(|e| {
            panic!("building the BPF program with {clang} failed (install clang-19: tests/setup-deps): {e:#}")
        });
}
