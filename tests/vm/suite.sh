#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0 OR MIT
# The functional VM tests, run inside the guest by tests/vm/tests:
# the real host + BPF + plugins on a real sched_ext kernel.
# Usage: suite.sh BIN_DIR NAME...: each NAME a shipped plugin (its attach,
# stress, hackbench and kill -9 checks) or "shared" (the stats endpoints,
# reload and misbehaving plugins).
set -u
bin=$1
shift
plugins=()
shared=no
for a in "$@"; do
  if [ "$a" = shared ]; then shared=yes; else plugins+=("$a"); fi
done
work=$(mktemp -d)
repo=$(cd "$(dirname "$0")/../.." && pwd)
# Logs go to the harness's output share when there is one, so a failure can
# be read on the host afterwards.
logs=${RTHULHU_VM_OUT:-$work}
cd "$work" || exit 1 # stress-ng wants a writable working directory
# shellcheck source=tests/vm/lib.sh
. "$repo/tests/vm/lib.sh"

# Starts the host in the background: start_host LOG ARGS...; sets $host_pid.
start_host() {
  local log=$1
  shift
  "$bin/host" "$@" > "$log" 2>&1 &
  host_pid=$!
}

plugin_path() { echo "$bin/lib$1.so"; }

# The running scheduler's last "NAME N" figure, read for 3 s through --monitor.
monitor_last() { timeout 3 "$bin/host" --monitor --stats 0.5 2>&1 | grep -ao "$1 [0-9]*" | tail -1; }

config() { # config NAME PLUGIN TABLE → path of a config file
  printf '[scheduler]\nplugin = "%s"\n[plugin]\n%s\n' "$(plugin_path "$2")" "$3" > "$work/$1.toml"
  echo "$work/$1.toml"
}


for p in "${plugins[@]}"; do
  mark "scheduler $p"
  # attach: enabled under our name, SIGINT detaches cleanly.
  log=$logs/attach-$p.log
  start_host "$log" --plugin "$(plugin_path "$p")"
  if ! wait_state enabled 200; then
    fail "$p attach" "state $(state): $(tail -3 "$log")"
  elif [ "$(cat $scx/root/ops 2>/dev/null)" != rthulhu ]; then
    fail "$p attach" "ops is '$(cat $scx/root/ops 2>/dev/null)'"
  else
    ok "$p attach (state enabled, ops rthulhu)"
  fi
  second=$("$bin/host" --plugin "$(plugin_path "$p")" 2>&1)
  rc=$?
  if [ $rc -ne 0 ] && echo "$second" | grep -aq "another sched_ext scheduler is loaded (rthulhu)"; then
    ok "$p second instance refused while attached"
  else
    fail "$p second instance" "rc $rc: $second"
  fi
  kill -INT $host_pid
  wait $host_pid
  rc=$?
  if [ $rc -eq 0 ] && wait_state disabled 20; then ok "$p SIGINT detaches (exit 0)"; else fail "$p SIGINT" "rc $rc, state $(state): $(tail -3 "$log")"; fi

  # The scx community's bar: survive stress-ng for 31 s, exit 0 at 45 s.
  log=$logs/stress-$p.log
  timeout --preserve-status 45 "$bin/host" --plugin "$(plugin_path "$p")" --stats 5 > "$log" 2>&1 &
  host_pid=$!
  wait_state enabled 200
  stress-ng -t 31 --aggressive -M -c 2 -f 2 > "$work/stress-ng.log" 2>&1
  srn=$?
  wait $host_pid
  rc=$?
  user=$(stat_of "$log" user)
  if [ $rc -eq 0 ] && [ $srn -eq 0 ] && [ "${user:-0}" -gt 0 ] && ! grep -aq ejected "$log"; then
    ok "$p stress-ng bar (exit 0, $user user dispatches)"
  else
    fail "$p stress-ng bar" "host rc $rc, stress-ng rc $srn, user dispatches ${user:-none} (log $log): $(tail -3 "$log")"
  fi

  # hackbench completes while attached, and we are still attached after it.
  log=$logs/hackbench-$p.log
  start_host "$log" --plugin "$(plugin_path "$p")"
  wait_state enabled 200
  if timeout 300 hackbench -g 4 -l 200 > "$work/hackbench.out" 2>&1 && [ "$(state)" = enabled ]; then
    ok "$p hackbench ($(grep -ao 'Time: [0-9.]*' "$work/hackbench.out"))"
  else
    fail "$p hackbench" "state $(state): $(tail -2 "$work/hackbench.out") $(tail -2 "$log")"
  fi
  kill -INT $host_pid
  wait $host_pid

  # kill -9: the kernel falls back to its default scheduler within a second.
  log=$logs/kill-$p.log
  start_host "$log" --plugin "$(plugin_path "$p")"
  if ! wait_state enabled 200; then
    fail "$p kill -9" "the host never attached: $(tail -3 "$log")"
  else
    kill -9 $host_pid
    wait $host_pid 2>/dev/null
    if wait_state disabled 10; then ok "$p kill -9 leaves the default scheduler within 1 s"; else fail "$p kill -9" "state still $(state)"; fi
  fi
  wait_state disabled 100
done

if [ "$shared" = yes ]; then
  mark "scheduler shared (the host with test plugins)"
  # Observability: the JSON socket (root only), --monitor, Prometheus on loopback.
  ip link set lo up 2>/dev/null || busybox ifconfig lo 127.0.0.1 up 2>/dev/null
  log=$logs/stats.log
  start_host "$log" --config "$repo/configs/deadline.toml" --metrics-addr 127.0.0.1:9464
  wait_state enabled 200
  sleep 2
  mode=$(stat -c %a /run/rthulhu/stats.sock 2>/dev/null)
  mon=$(timeout 3 "$bin/host" --monitor --stats 0.5 2>&1)
  metrics=$(exec 3<>/dev/tcp/127.0.0.1/9464 && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3)
  if [ "$mode" = 600 ] && echo "$mon" | grep -aq "deadline up .* decisions/s.*preemptions" && echo "$metrics" | grep -aq "^rthulhu_user_dispatches_total [0-9]" &&
    echo "$mon" | grep -aq "class interactive: wakeups [0-9]" &&
    echo "$metrics" | grep -aq '^rthulhu_wakeup_latency_seconds_bucket{class="batch",le="+Inf"} [0-9]'; then
    ok "stats: socket mode 600, --monitor lines (with per-class wake-up latency), Prometheus text (with its histogram)"
  else
    fail "stats" "mode '$mode', monitor: $(echo "$mon" | tail -1), metrics: $(echo "$metrics" | head -3)"
  fi
  kill -INT $host_pid
  wait $host_pid

  # SIGHUP re-reads the config without detaching: the new settings take effect
  # (the plugin's "strategies" counter on the stats socket goes from 1 to 2); a
  # broken file keeps the old settings.
  log=$logs/reload.log
  cfg=$(config reload strategy "[[plugin.strategy]]
  comm = '^stress-ng'
  priority = 1")
  start_host "$log" --config "$cfg"
  wait_state enabled 200
  sleep 2
  before=$(monitor_last strategies)
  printf "[[plugin.strategy]]\ncomm = '^hackbench'\npriority = 2\n" >> "$cfg"
  kill -HUP $host_pid
  sleep 2
  after=$(monitor_last strategies)
  echo 'this is [not toml' >> "$cfg"
  kill -HUP $host_pid
  sleep 2
  kept=$(monitor_last strategies)
  if [ "$before" = "strategies 1" ] && [ "$after" = "strategies 2" ] && [ "$kept" = "strategies 2" ] &&
    grep -aq "keeping the old settings" "$log" && [ "$(state)" = enabled ]; then
    ok "SIGHUP reconfigures in place ($before -> $after); a broken config keeps the old settings"
  else
    fail "SIGHUP reload" "state $(state), strategies '$before' -> '$after' -> '$kept': $(tail -4 "$log")"
  fi
  kill -INT $host_pid
  wait $host_pid

  # Runs a misbehaving plugin under load until the host gives up; sets $rc
  # (124 if the host was still running 20 s after the load began).
  # The load overcommits the CPUs, so decisions keep flowing through the
  # plugin (a lone task per CPU would just keep running, asking nothing).
  # misbehave LOG CONFIG [HOST ARGS...]
  misbehave() {
    local log=$1 cfg=$2 load n=0
    shift 2
    start_host "$log" --config "$cfg" "$@"
    wait_state enabled 200
    stress-ng -t 8 -c 4 > /dev/null 2>&1 &
    load=$!
    while kill -0 $host_pid 2>/dev/null && [ $n -lt 200 ]; do
      sleep 0.1
      n=$((n + 1))
    done
    if kill -0 $host_pid 2>/dev/null; then
      kill -INT $host_pid
      wait $host_pid
      rc=124
    else
      wait $host_pid
      rc=$?
    fi
    kill $load 2>/dev/null
    wait $load 2>/dev/null
  }

  # A plugin that stops handing tasks back cannot stall the machine: the
  # kernel side rescues what it holds every heartbeat, the watchdog never
  # fires, work finishes, and the guest stays usable.
  log=$logs/hoarder.log
  start_host "$log" --config "$(config hoard hoarder 'after_calls = 200')" --timeout-ms 2000 --stats 1
  wait_state enabled 200
  stress-ng -t 6 -c 4 --metrics-brief > "$work/hoard-load.log" 2>&1
  srn=$?
  sleep 1
  attached=$(state)
  kill -INT $host_pid
  wait $host_pid
  rc=$?
  rescued=$(stat_of "$log" rescued)
  if [ $srn -eq 0 ] && [ "$attached" = enabled ] && [ $rc -eq 0 ] && [ "${rescued:-0}" -gt 0 ] &&
    ! grep -aq ejected "$log" && [ "$(echo usable | tr a-z A-Z)" = USABLE ] &&
    [ "$(sh -c 'sleep 0.1; echo $((6 * 7))')" = 42 ]; then
    ok "hoarding plugin: its tasks are rescued by the kernel side ($rescued rescued), no stall, guest usable"
  else
    fail "hoarding plugin" "stress-ng rc $srn, state '$attached', host rc $rc, rescued '${rescued:-}': $(tail -3 "$log")"
  fi

  # A plugin that panics mid-run: clean detach, non-zero exit.
  log=$logs/panic.log
  misbehave "$log" "$(config panic panicky 'after_calls = 300')"
  if [ $rc -eq 1 ] && grep -aq "panicked in select_cpu" "$log" && wait_state disabled 50; then
    ok "panicking plugin: clean detach, exit 1"
  else
    fail "panicking plugin" "rc $rc, state $(state): $(tail -3 "$log")"
  fi

  # A plugin that never returns: the host's round watchdog ends it (exit 1),
  # the kernel unloads the scheduler, the guest goes on.
  log=$logs/spinner.log
  misbehave "$log" "$(config spin spinner 'after_calls = 300')" --round-timeout-ms 500
  if [ $rc -eq 1 ] && grep -aq "the plugin is stuck" "$log" && wait_state disabled 50 &&
    [ "$(sh -c 'sleep 0.1; echo $((6 * 7))')" = 42 ]; then
    ok "spinning plugin: the round watchdog ends the host (exit 1), the guest goes on"
  else
    fail "spinning plugin" "rc $rc, state $(state): $(tail -3 "$log")"
  fi

  # SIGTERM while the plugin spins (before the round watchdog's bound): served
  # within a moment, exit 0, the kernel's default scheduler takes over.
  log=$logs/spinner-term.log
  start_host "$log" --config "$(config spin-term spinner 'after_calls = 50')" --round-timeout-ms 4000
  wait_state enabled 200
  stress-ng -t 6 -c 4 > /dev/null 2>&1 &
  load=$!
  sleep 2
  kill -TERM $host_pid
  n=0
  while kill -0 $host_pid 2>/dev/null && [ $n -lt 15 ]; do sleep 0.1; n=$((n + 1)); done
  if kill -0 $host_pid 2>/dev/null; then
    fail "SIGTERM while the plugin spins" "still running 1.5 s after SIGTERM"
    kill -9 $host_pid
    wait $host_pid
  else
    wait $host_pid
    rc=$?
    if [ $rc -eq 0 ] && grep -aq "stopping on a signal while the plugin is busy" "$log" && wait_state disabled 50; then
      ok "SIGTERM while the plugin spins: served within $((n * 100)) ms, exit 0"
    else
      fail "SIGTERM while the plugin spins" "rc $rc, state $(state): $(tail -3 "$log")"
    fi
  fi
  kill $load 2>/dev/null
  wait $load 2>/dev/null

  # Wake-up latency per class, measured in BPF, and the plugin's wake-up
  # preemption rule applied in BPF: a strategy with a priority targets the
  # probe beside CPU hogs, and three rivals (the same program under another
  # name) stay unmatched. The probe's class counts its wake-ups, some of which
  # preempted in the kernel without the host ("urgent"), and the unmatched
  # class has figures of its own; --explain, run meanwhile, names both. The
  # probe and the rivals run in cgroups of their own: the per-cgroup figures
  # track both, the probe's p99 below the rivals'. That is where the
  # priority shows: the unmatched class mixes the rivals with the hogs and
  # everything else, and since unmatched sleepers preempt hogs too (07a269c)
  # both classes sit at the emulator's timer floor (5.4 against 5.0 ms and
  # 6.0 against 5.6 ms in two CI runs), so their order is noise.
  log=$logs/classes.log
  cfg=$(config classes strategy "[[plugin.strategy]]
  name = 'probe'
  comm = '^probe$'
  priority = 5")
  ln -sf "$bin/probe" "$work/rival"
  mkdir -p /sys/fs/cgroup/rthulhu-probe /sys/fs/cgroup/rthulhu-rival
  start_host "$log" --config "$cfg" --metrics-addr 127.0.0.1:9465
  wait_state enabled 200
  stress-ng --cpu 4 -t 8 > /dev/null 2>&1 &
  load=$!
  "$bin/probe" 10 6 > "$work/probe.out" &
  probe=$!
  echo $probe > /sys/fs/cgroup/rthulhu-probe/cgroup.procs
  rivals=
  for r in 1 2 3; do
    "$work/rival" 10 6 > "$work/rival$r.out" &
    rivals="$rivals $!"
    echo $! > /sys/fs/cgroup/rthulhu-rival/cgroup.procs
  done
  rival=${rivals##* }
  sleep 1
  "$bin/host" --explain "$cfg" > "$work/explain.out" 2>&1
  explain_rc=$?
  wait $probe $rivals $load
  sleep 2
  mon=$(timeout 3 "$bin/host" --monitor --stats 0.5 2>&1)
  metrics=$(exec 3<>/dev/tcp/127.0.0.1/9465 && printf 'GET /metrics HTTP/1.0\r\n\r\n' >&3 && cat <&3)
  cg_wakeups=$(echo "$metrics" | sed -n 's/^rthulhu_cgroup_wakeups_total{cgroup="\/rthulhu-probe"} \([0-9]*\)$/\1/p')
  cg_p99() { echo "$metrics" | sed -n "s/^rthulhu_cgroup_wakeup_latency_p99_seconds{cgroup=\"\\/$1\"} \([0-9.e-]*\)$/\1/p"; }
  probe_cg99=$(cg_p99 rthulhu-probe)
  rival_cg99=$(cg_p99 rthulhu-rival)
  field() { sed -n "s/.*$1 \([0-9]*\).*/\1/p" | tail -1; }
  probe_line=$(echo "$mon" | grep -a "class probe:" | tail -1)
  other_line=$(echo "$mon" | grep -a "class unmatched:" | tail -1)
  pw=$(echo "$probe_line" | field wakeups)
  p99=$(echo "$probe_line" | sed -n 's/.*p99 \([0-9]*\) µs.*/\1/p')
  o99=$(echo "$other_line" | sed -n 's/.*p99 \([0-9]*\) µs.*/\1/p')
  urgent=$(echo "$mon" | grep -a " up " | field urgent)
  named() { awk -v pid="$1" -v class="$2" '$2 == pid && $4 == class { found = 1 } END { exit !found }' "$work/explain.out"; }
  if [ "${pw:-0}" -gt 100 ] && [ "${urgent:-0}" -gt 0 ] && echo "$other_line" | grep -q "wakeups [1-9]" &&
    [ -n "$p99" ] && [ -n "$o99" ]; then
    ok "per-class wake-up latency: ${probe_line# }; ${other_line# }; $urgent urgent wake-ups"
  else
    fail "per-class wake-up latency" "urgent '$urgent'; probe p99 '$p99' µs vs unmatched '$o99' µs; probe: '$probe_line'; unmatched: '$other_line'"
  fi
  if [ $explain_rc -eq 0 ] && named $probe probe && named $rival unmatched; then
    ok "--explain while attached: the probe (pid $probe) in class probe, its rival (pid $rival) unmatched"
  else
    fail "--explain" "exit $explain_rc, probe $probe, rival $rival: $(grep -aE "probe|rival|classes|matching" "$work/explain.out" | head -5)"
  fi
  if [ "${cg_wakeups:-0}" -gt 100 ] && [ -n "$probe_cg99" ] && [ -n "$rival_cg99" ] &&
    awk -v a="$probe_cg99" -v b="$rival_cg99" 'BEGIN { exit !(a < b) }'; then
    ok "per-cgroup wake-up latency: /rthulhu-probe $cg_wakeups wake-ups, p99 $probe_cg99 s; /rthulhu-rival p99 $rival_cg99 s"
  else
    fail "per-cgroup wake-up latency" "/rthulhu-probe wake-ups '$cg_wakeups', p99 '$probe_cg99' s vs /rthulhu-rival '$rival_cg99' s: $(echo "$metrics" | grep -a cgroup | head -6)"
  fi
  rmdir /sys/fs/cgroup/rthulhu-probe /sys/fs/cgroup/rthulhu-rival 2>/dev/null
  kill -INT $host_pid
  wait $host_pid

  # A closed stdout never stops the scheduler (`host --stats 1 | head -1`):
  # the --stats lines are printed off the dispatch thread.
  log=$logs/stdout-closed.log
  "$bin/host" --plugin "$(plugin_path simple)" --stats 0.2 2> "$log" | head -1 > "$work/first.line" &
  pipeline=$!
  wait_state enabled 200
  sleep 3
  pid=$(pgrep -xf "$bin/host --plugin $(plugin_path simple) --stats 0.2")
  if [ -n "$pid" ] && [ "$(state)" = enabled ] && grep -aq "^simple up " "$work/first.line" &&
    grep -aq "stdout is closed" "$log" && [ "$(sh -c 'echo $((6 * 7))')" = 42 ]; then
    ok "closed stdout: --stats lines stop, scheduling goes on"
  else
    fail "closed stdout" "pid '$pid', state $(state), first line '$(cat "$work/first.line")': $(tail -3 "$log")"
  fi
  [ -n "$pid" ] && kill -INT $pid
  wait $pipeline
  wait_state disabled 50

  # No page faults in the loop: after a warm-up, 20 s of hackbench leave
  # host.page_faults (the host process's faults since attach) where it was.
  log=$logs/faults.log
  start_host "$log" --plugin "$(plugin_path simple)"
  wait_state enabled 200
  timeout 120 hackbench -g 4 -l 100 > /dev/null 2>&1
  sleep 2
  f1=$(monitor_last faults)
  end=$((SECONDS + 20))
  rounds=0
  while [ $SECONDS -lt $end ]; do
    timeout 120 hackbench -g 4 -l 100 > /dev/null 2>&1 && rounds=$((rounds + 1))
  done
  sleep 2
  f2=$(monitor_last faults)
  if [ -n "$f1" ] && [ "$f1" = "$f2" ] && [ $rounds -gt 0 ] && [ "$(state)" = enabled ]; then
    ok "no page faults while scheduling: $f1 after the warm-up, $f2 after $rounds hackbench runs in 20 s"
  else
    fail "page faults" "'$f1' after the warm-up, '$f2' after $rounds hackbench runs, state $(state): $(tail -2 "$log")"
  fi
  kill -INT $host_pid
  wait $host_pid

  # CPU hotplug while attached under load: the kernel asks for a restart; the
  # host restarts with the settings last applied (a SIGHUP's included), keeps
  # scheduling, and SIGINT still ends it with exit 0.
  log=$logs/hotplug.log
  cfg=$(config hotplug strategy "[[plugin.strategy]]
  comm = '^stress-ng'
  priority = 1")
  start_host "$log" --config "$cfg"
  wait_state enabled 200
  printf "[[plugin.strategy]]\ncomm = '^hackbench'\npriority = 2\n" >> "$cfg"
  kill -HUP $host_pid
  sleep 2
  stress-ng -c 4 -t 15 > /dev/null 2>&1 &
  load=$!
  sleep 1
  cpu=/sys/devices/system/cpu/cpu$(($(nproc) - 1))/online
  echo 0 > "$cpu"
  sleep 2
  echo 1 > "$cpu"
  n=0
  while [ $n -lt 100 ] && [ "$(grep -ac 'asked for a restart' "$log")" -lt 2 ]; do sleep 0.1; n=$((n + 1)); done
  wait_state enabled 100
  sleep 2
  strategies=$(monitor_last strategies)
  restarts=$(grep -ac 'asked for a restart' "$log")
  wait $load
  load_rc=$?
  kill -INT $host_pid
  wait $host_pid
  rc=$?
  if [ "$restarts" -ge 1 ] && [ "$strategies" = "strategies 2" ] && [ $load_rc -eq 0 ] && [ $rc -eq 0 ] &&
    ! grep -aq 'ejected' "$log"; then
    ok "CPU hotplug: restarted $restarts times with the reloaded settings ($strategies), load ended, exit 0 on SIGINT"
  else
    fail "CPU hotplug" "restarts $restarts, '$strategies', load rc $load_rc, host rc $rc: $(grep -a 'host:' "$log" | tail -4)"
  fi
  wait_state disabled 50

fi

echo "vm: $passed passed, $failed failed"
[ $failed -eq 0 ]
