#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR MIT
# Inside the VM (see tests/bench/agreement/run): EEVDF (no host attached, the
# reference) and then each plugin in turn, the agreement workloads REPS
# times; prints "RESULT plugin workload value" lines.
# Usage: guest.sh BIN_DIR REPS PLUGIN...
set -u
bin=$1 reps=$2
shift 2
repo=$(cd "$(dirname "$0")/../../.." && pwd)
. "$repo/tests/vm/lib.sh"
cd "$(mktemp -d)" || exit 1
p99() { sed -n 's/.*late_p99_us \([0-9]*\).*/\1/p'; }
workloads() {
  local p=$1
  for _ in $(seq "$reps"); do
    # Wait for the load only: a bare `wait` would also wait for the host.
    stress-ng --cpu 4 -t 8 > /dev/null 2>&1 &
    load=$!
    echo "RESULT $p hogs-periodic $("$bin/probe" 10 8 | p99)"
    wait $load
    t=$(hackbench -g 4 -l 200 2>&1 | sed -n 's/^Time: //p')
    echo "RESULT $p messaging $(awk -v t="$t" 'BEGIN { printf "%.3f", 1 / t }')"
    stress-ng --cpu 2 --fork 2 -t 8 > /dev/null 2>&1 &
    load=$!
    echo "RESULT $p churn $("$bin/probe" 10 8 | p99)"
    wait $load
  done
}
workloads eevdf
for p in "$@"; do
  "$bin/host" --config "$repo/configs/$p.toml" > "host-$p.log" 2>&1 &
  h=$!
  wait_state enabled 200 || { echo "agreement: $p did not attach" >&2; continue; }
  workloads "$p"
  [ "$(state)" = enabled ] || echo "RESULT $p ejected 1"
  kill -INT $h
  wait $h
  wait_state disabled 50
done
