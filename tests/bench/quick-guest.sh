#!/bin/bash
# SPDX-License-Identifier: Apache-2.0 OR MIT
# Inside the VM (see tests/bench/quick): each "plugin:host args" spec in turn.
bin=$1; reps=$2; shift 2
cd /tmp
ws() { for _ in $(seq 200); do [ "$(cat /sys/kernel/sched_ext/state)" = "$1" ] && return 0; sleep 0.1; done; return 1; }
for spec in "$@"; do
  name=${spec%%:*}; args=${spec#*:}
  if [ "$name" != eevdf ]; then $bin/host --plugin $bin/lib$name.so $args --stats 1 > /tmp/h-$name.log 2>&1 & h=$!; ws enabled; fi
  for r in $(seq "$reps"); do
    t=$(hackbench -g 4 -l 400 2>&1 | sed -n 's/^Time: //p')
    stress-ng --cpu 2 -t 12 > /dev/null 2>&1 & hog=$!
    out=$(cyclictest -m -t2 -D 8 -q 2>&1); wait $hog
    avg=$(echo "$out" | sed -n 's/.*Avg: *\([0-9]*\).*/\1/p' | awk '{s+=$1; n++} END {printf "%.0f", s/n}')
    echo "R $spec hackbench $t cyclic_avg_us $avg"
  done
  if [ "$name" != eevdf ]; then kill -INT $h; wait $h; echo "  rc $? $(grep -a 'rescues' /tmp/h-$name.log | tail -1 | grep -o 'held.*')"; ws disabled; fi
done
