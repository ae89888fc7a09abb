# SPDX-License-Identifier: Apache-2.0 OR MIT
"""Turns the RESULT lines of tests/bench/guest.sh into docs/BENCHMARKS.md.

Usage: summarise.py KVER REPS RAW ACCEL [RAW ACCEL ...]: one section per
boot (one QEMU acceleration each), every table from that boot's figures."""
import statistics
import sys
from collections import defaultdict

kver, reps = sys.argv[1:3]
runs = list(zip(sys.argv[3::2], sys.argv[4::2]))


def load(raw):
    data = defaultdict(lambda: defaultdict(list))
    order = []
    for line in open(raw, encoding="utf-8", errors="replace"):
        parts = line.split()
        if len(parts) != 4 or parts[0] != "RESULT":
            continue
        _, sched, metric, value = parts
        if sched not in order:
            order.append(sched)
        try:
            data[sched][metric].append(float(value))
        except ValueError:
            pass
    return data, order


data, order = None, []

def med(s, m):
    v = [x for x in data[s][m] if x == x]
    return statistics.median(v) if v else None

metrics = [
    ("hackbench_s", "hackbench -g 4 -l 400 (s, lower is better)"),
    ("cyclictest_avg_us", "cyclictest avg wake-up latency beside a CPU hog (µs, lower is better)"),
    ("cyclictest_max_us", "cyclictest max wake-up latency beside a CPU hog (µs, lower is better)"),
    ("stressng_bogo_ops_s", "stress-ng --cpu 2 bogo-ops/s (higher is better)"),
]

def fmt(x):
    return "—" if x is None else (f"{x:.2f}" if x < 100 else f"{x:.0f}")

def ratio(a, b):
    return "—" if a is None or b in (None, 0) else f"{a / b:.2f}"

print("# Real-kernel benchmarks\n")
print(f"Kernel: Debian `{kver}` under QEMU, 2 vCPUs, one boot per section for all of its")
print(f"tables, median of {reps} repetitions taken in rounds (each round runs every scheduler")
print("in turn, so a slow stretch of the emulator falls on all of them). Reproduce with")
print("`tests/bench/real-kernel` (`REPS=n` to change; `RTHULHU_BENCH_ACCELS` picks the sections).\n")
print("TCG emulates the CPUs in software, so absolute figures are far from bare metal;")
print("the ratios, measured side by side in one boot, are what to read. Multi-threaded")
print("TCG runs each vCPU on a host thread of its own (real parallelism, races between")
print("CPUs happen); single-threaded TCG runs both vCPUs in turn on one thread.\n")
for raw, accel in runs:
    data, order = load(raw)
    print(f"## `{accel}`\n")
    for m, title in metrics:
        print(f"### {title}\n")
        print("| scheduler | median | vs EEVDF | vs scx_rustland |")
        print("| --- | --- | --- | --- |")
        base, peer = med("eevdf", m), med("scx_rustland", m)
        for s in order:
            v = med(s, m)
            print(f"| {s} | {fmt(v)} | {ratio(v, base)} | {ratio(v, peer)} |")
        print()
    # The request/response pairs: beside 2x-overcommitted CPU hogs, one pair the
    # strategy plugin targets by name and one it does not (for every other
    # scheduler the two are the same experiment twice).
    for pair, what in (("target", "targeted by the strategy"), ("other", "not targeted")):
        print(f"### Request/response round trip beside CPU hogs (2x the CPUs), pair {what} (µs, lower is better)\n")
        print("| scheduler | p50 | p99 | max | p99 vs EEVDF | p99 vs scx_rustland |")
        print("| --- | --- | --- | --- | --- | --- |")
        m = f"rr_{pair}_p99_us"
        base, peer = med("eevdf", m), med("scx_rustland", m)
        for s in order:
            p50, p99, mx = (med(s, f"rr_{pair}_{q}_us") for q in ("p50", "p99", "max"))
            print(f"| {s} | {fmt(p50)} | {fmt(p99)} | {fmt(mx)} | {ratio(p99, base)} | {ratio(p99, peer)} |")
        print()
    bad = [s for s in order if data[s].get("ejected") or data[s].get("failed")]
    if bad:
        print("Schedulers that failed to attach or exited during the run: " + ", ".join(bad) + "\n")
