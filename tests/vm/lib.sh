# SPDX-License-Identifier: Apache-2.0 OR MIT
# Helpers shared by the VM test scripts (sourced, inside the guest).

scx=/sys/kernel/sched_ext
passed=0
failed=0

ok() { echo "ok - $1"; passed=$((passed + 1)); }
fail() { echo "FAIL - $1: $2"; failed=$((failed + 1)); }
state() { cat $scx/state 2>/dev/null; }
# A progress mark on the kernel console, where tests/vm/run looks when a boot
# times out (tests/vm/tests boots again only when the last mark says no
# scheduler of ours was in charge: "rthulhu-vm: scheduler eevdf").
mark() { echo "rthulhu-vm: $*" >/dev/console 2>/dev/null; }

# Waits up to $2 tenths of a second (default 100) for the sched_ext state $1.
wait_state() {
  local want=$1 n=${2:-100}
  while [ "$n" -gt 0 ]; do
    [ "$(state)" = "$want" ] && return 0
    sleep 0.1
    n=$((n - 1))
  done
  return 1
}

# Last value of counter $2 ("user", "rescued"...) in a --stats log $1.
stat_of() { [ -f "$1" ] && sed -n "s/.* $2 \([0-9][0-9]*\).*/\1/p" "$1" | tail -1; }
