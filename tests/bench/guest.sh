#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR MIT
# Runs inside the VM (see tests/bench/real-kernel): every scheduler in turn,
# the same workloads under each, REPS rounds. Prints "RESULT sched metric value"
# lines for the host side to summarise.
# Usage: guest.sh BIN_DIR PEERS_DIR REPS SCHEDULER...
set -u
bin=$1 peers=$2 reps=$3
shift 3
scx=/sys/kernel/sched_ext
work=$(mktemp -d)
cd "$work" || exit 1
repo=$(cd "$bin/../.." && pwd)

# The strategy targets cyclictest and one of the two request/response pairs
# (the same binary under two names: rr-target and rr-other).
printf '[scheduler]\nplugin = "%s"\n[plugin]\n[[plugin.strategy]]\nname = "targets"\npriority = 10\ncomm = "^(cyclictest|rr-target)$"\n' \
  "$bin/libstrategy.so" > "$work/strategy-targets.toml"
ln -sf "$bin/rr" "$work/rr-target"
ln -sf "$bin/rr" "$work/rr-other"

wait_state() {
  for _ in $(seq 200); do
    [ "$(cat $scx/state)" = "$1" ] && return 0
    sleep 0.1
  done
  return 1
}

start() {
  case $1 in
  eevdf) sched_pid= ; return 0 ;;
  scx_*) "$peers/$1" > "$work/$1.log" 2>&1 & ;;
  rthulhu-strategy) "$bin/host" --config "$work/strategy-targets.toml" > "$work/$1.log" 2>&1 & ;;
  rthulhu-*) "$bin/host" --config "$repo/configs/${1#rthulhu-}.toml" > "$work/$1.log" 2>&1 & ;;
  esac
  sched_pid=$!
  wait_state enabled || { echo "bench: $1 did not attach: $(tail -3 "$work/$1.log")" >&2; return 1; }
}

stop() {
  [ -n "$sched_pid" ] || return 0
  kill -INT "$sched_pid"
  wait "$sched_pid"
  wait_state disabled || echo "bench: $1 did not detach" >&2
}

# Repetitions interleave (round 1: every scheduler, round 2: every one
# again...): the emulator's speed drifts over a boot (EEVDF's hackbench moved
# from 2.6 to 3.7 s between rounds of one boot), and a scheduler whose runs all
# came in a slow stretch would carry that in its ratios.
declare -A out_of_run
for r in $(seq "$reps"); do
  for s in "$@"; do
    [ -n "${out_of_run[$s]:-}" ] && continue
    echo "bench: $s, repetition $r" >&2
    if ! start "$s"; then
      echo "RESULT $s failed 1"
      out_of_run[$s]=1
      continue
    fi
    t=$(hackbench -g 4 -l 400 2>&1 | sed -n 's/^Time: //p')
    echo "RESULT $s hackbench_s ${t:-nan}"
    stress-ng --cpu 2 -t 14 > /dev/null 2>&1 &
    hog=$!
    out=$(cyclictest -m -t2 -D 10 -q 2>&1)
    wait $hog
    avg=$(echo "$out" | sed -n 's/.*Avg: *\([0-9]*\).*/\1/p' | awk '{s+=$1; n++} END {if (n) printf "%.1f", s/n; else print "nan"}')
    max=$(echo "$out" | sed -n 's/.*Max: *\([0-9]*\).*/\1/p' | sort -n | tail -1)
    echo "RESULT $s cyclictest_avg_us $avg"
    echo "RESULT $s cyclictest_max_us ${max:-nan}"
    ops=$(stress-ng --cpu 2 -t 5 --metrics-brief 2>&1 | awk '$4 == "cpu" {print $9}')
    echo "RESULT $s stressng_bogo_ops_s ${ops:-nan}"
    # Request/response pairs beside CPU hogs, 2x the CPUs: one pair the
    # strategy targets by name, one it does not.
    stress-ng --cpu "$((2 * $(nproc)))" -t 23 > /dev/null 2>&1 &
    hog=$!
    sleep 1
    for pair in target other; do
      out=$("$work/rr-$pair" 10 1000)
      for q in p50 p99 max; do
        v=$(echo "$out" | sed -n "s/.* ${q}_us \([0-9]*\).*/\1/p")
        echo "RESULT $s rr_${pair}_${q}_us ${v:-nan}"
      done
    done
    wait $hog
    # Ejected (or exited) during this repetition: later figures would be EEVDF's.
    if [ -n "$sched_pid" ] && { ! kill -0 "$sched_pid" 2>/dev/null || [ "$(cat $scx/state)" != enabled ]; }; then
      echo "RESULT $s ejected 1"
      echo "bench: $s ejected or exited in repetition $r: $(tail -3 "$work/$s.log")" >&2
      out_of_run[$s]=1
    fi
    stop "$s"
  done
done
