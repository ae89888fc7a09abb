//! A deterministic discrete-event model of the kernel side of sched_ext:
//! CPUs with local dispatch queues, a shared queue per last-level cache
//! (taken from by other caches' CPUs when theirs is empty), a kernel-to-host queue
//! of bounded size, slices that expire, wake-ups and sleeps, the real path's
//! heartbeat and rescue (a CPU idle for a heartbeat while the host holds
//! tasks moves them to a kernel-ordered fallback queue, served in turn with
//! the shared queue; see
//! docs/engine.md), and the watchdog that ejects the scheduler when a
//! runnable task is left waiting.
//!
//! Host decisions take no simulated time: the model measures the policy, not
//! the machine it runs on.

pub mod report;
pub mod rng;
pub mod workload;

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};

use plugin_api::{Counters, CpuTarget, DispatchedTask, QueuedTask, ENQ_SLEPT, ENQ_WAKEUP};

use crate::dispatcher::{DISPATCH_CLASS_SHIFT, DISPATCH_PREEMPT};
use crate::kernel::{ExitInfo, ExitKind, Kernel, KernelError, Latency, Wake, MAX_CLASSES};
use crate::occupancy::Occupancy;
use report::{GroupReport, Latencies};
use rng::Rng;
use workload::{Behaviour, Workload};

/// First simulated pid; tasks are numbered from here in workload order.
pub const PID_BASE: i32 = 1000;
/// Slice of tasks the kernel side queues on its own (ring full).
const KERNEL_SLICE_NS: u64 = 5_000_000;
/// The BPF side's heartbeat: it wakes the host while the host holds tasks,
/// and rescues held tasks when a CPU has idled this long.
const HEARTBEAT_NS: u64 = 10_000_000;
/// Longest the host waits for a CPU's running task when it need not preempt
/// (`HOST_WAIT_NS` in main.bpf.c).
const HOST_WAIT_NS: u64 = 1_000_000;
/// CPUs past its last one an urgent task looks at (`PREEMPT_SCAN` in main.bpf.c).
const PREEMPT_SCAN: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Sleeping,
    /// Runnable, somewhere between enqueue and a CPU.
    Waiting,
    Running,
    /// Exited (a fork took its place).
    Exited,
}

#[derive(Debug)]
struct Task {
    group: usize,
    weight: u64,
    behaviour: Behaviour,
    state: State,
    vtime: u64,
    exec_runtime: u64,
    start_ts: u64,
    stop_ts: u64,
    prev_cpu: u32,
    /// Work left in the current burst (ns); `u64::MAX` for CPU-bound tasks.
    work_left: u64,
    runnable_since: u64,
    woke_at: Option<u64>,
    /// Set once a dispatch placed it on a queue, so a second one is refused.
    queued_on_dsq: bool,
    /// Placed by a host decision that did not preempt (not by the kernel
    /// side on its own): the runs the look-ahead window orders.
    decided: bool,
    /// The host has decided on it at least once: `vtime` is its key.
    keyed: bool,
    /// `exec_runtime` when its key was given (`key_ran` in main.bpf.c).
    key_exec: u64,
    /// Its last host decision's key: what its record reports as vtime
    /// (`vtime` moves with renewals).
    key: u64,
    /// Slices renewed without the host since its last decision (`u64::MAX`:
    /// none until the next one, as BPF's `RENEW_NEVER`).
    renewals: u64,
    /// That decision's slice.
    key_slice: u64,
    /// Waits in a shared queue by a renewal (outside the host's window).
    renewed_queued: bool,
    /// Slice left when it was last preempted (0: it was not).
    resume: u64,
    /// Since when the host holds it (its record was sent, no decision yet).
    held_since: Option<u64>,
    /// CPUs it may run on (None: all).
    allowed: Option<Vec<u32>>,
    /// Forked and not yet queued: its first enqueue has no wake-up flag.
    forked: bool,
    /// Woke since its last record (`ENQ_SLEPT`, as the BPF side sets it).
    slept: bool,
    /// The class of its last decision (0 before any), as BPF keeps it.
    class: usize,
    /// When it exits (a fork takes its place), if it has a lifetime.
    dies_at: Option<u64>,
    slice: u64,
    partner: Option<usize>,
    /// Its part in a messaging group.
    msg: Option<Msg>,
    comm: [u8; 16],
    tgid: i32,
    cgroup_id: u64,
    uid: u32,
}

/// A messaging task's state (`Behaviour::Messaging`).
#[derive(Debug, Clone, Copy)]
struct Msg {
    sender: bool,
    /// The other side of its group: first task index and how many.
    peers: (usize, usize),
    /// A sender's next receiver (an offset into `peers`).
    next: usize,
    /// A receiver's unread messages.
    inbox: u32,
    /// One write or read is under way and not yet applied.
    pending: bool,
}

#[derive(Debug, Default)]
struct Cpu {
    current: Option<usize>,
    local: VecDeque<usize>,
    started: u64,
    /// The task it ran last: starting another costs a context switch.
    last: Option<usize>,
    /// Bumped on every start, so a stale stop event is ignored.
    generation: u64,
    /// Since when it has had nothing to run.
    idle_since: Option<u64>,
    /// An RT task holds it: sched_ext runs nothing here.
    rt_busy: bool,
    /// The host thread runs its round here.
    host_busy: bool,
}

impl Cpu {
    /// Held by something that is not a sched_ext task: an RT task or the
    /// host thread.
    fn taken(&self) -> bool {
        self.rt_busy || self.host_busy
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Wake(usize),
    Stop {
        cpu: u32,
        generation: u64,
    },
    Watchdog,
    HostKick,
    Heartbeat,
    /// The RT load `k` takes its CPU / gives it back.
    RtStart(usize),
    RtEnd(usize),
    /// Group `g` changes its tasks' affinity.
    Move(usize),
    /// The host, woken `host_latency` ago, starts its round.
    HostRun,
    /// The host's wait for a CPU (the `n`th) is over: it takes one now.
    HostWaitOver(u64),
}

/// The simulated kernel.
pub struct Simulator {
    now: u64,
    end: u64,
    timeout: u64,
    seq: u64,
    events: BinaryHeap<Reverse<(u64, u64, Event)>>,
    tasks: Vec<Task>,
    cpus: Vec<Cpu>,
    /// The shared queues, one per last-level cache (the CPUs split into that
    /// many groups of neighbours), each ordered by (vtime, arrival) like a
    /// vtime DSQ.
    shared: Vec<BTreeMap<(u64, u64), usize>>,
    /// When a CPU last looked at each cache's shared queue, and the queues
    /// the heartbeat found unserved for a heartbeat (served first).
    llc_served: Vec<u64>,
    llc_starved: Vec<bool>,
    /// The fallback queue (FIFO): rescued tasks; CPUs serve it and `shared` in turn.
    fallback: VecDeque<usize>,
    /// Whose turn it is: odd, `shared` first.
    turn: u64,
    /// Times a CPU idled a heartbeat while the host held tasks, and tasks moved.
    pub rescues: u64,
    /// Tasks those rescues moved.
    pub rescued: u64,
    /// Tasks the host holds.
    held: usize,
    /// What a context switch costs (ns).
    switch_cost: u64,
    /// The host's answer delay once woken (ns), and when the pending one is due.
    host_latency: u64,
    /// The CPU the host thread runs its round on, while it does, and the
    /// one it ran on last.
    host_cpu: Option<u32>,
    host_last: u32,
    host_due: Option<u64>,
    /// The CPU whose running task the host waits for (BPF's
    /// `host_may_wait`), its round not yet due.
    host_waits_on: Option<u32>,
    /// Host wake-ups that waited so instead of preempting.
    pub host_waits: u64,
    /// RT loads: (cpu, period, runtime) in ns.
    rt: Vec<(u32, u64, u64)>,
    /// Per group: lifetime and affinity-change period (ns).
    lifetimes: Vec<Option<u64>>,
    move_every: Vec<Option<u64>>,
    /// Affinity moves so far, per group (alternates one CPU / all).
    moves: Vec<u64>,
    ring: VecDeque<QueuedTask>,
    ring_size: usize,
    counters: Counters,
    rng: Rng,
    kick: bool,
    kick_armed: bool,
    /// A record that wakes the host waits in the ring.
    ring_wake: bool,
    /// Records went to the host without waking it (`quiet_record` in
    /// main.bpf.c): the first CPU to run the shared queue low wakes it.
    unnotified: bool,
    /// Records sent so.
    pub quiet_records: u64,
    /// Preempted tasks that finished their slice at their key, as BPF does.
    pub resumed: u64,
    /// Slices renewed by the plugin's rule, as BPF does (`renew_slice`).
    pub renewed: u64,
    /// Renewed tasks waiting in the shared queues.
    renewed_queued: usize,
    /// Tasks whose slice ran out and that kept their CPU, nothing else
    /// waiting (BPF: `keep_prev`).
    pub kept: u64,
    builtin_idle: bool,
    /// Tasks waiting in all local queues together.
    local_queued: usize,
    preemptions: u64,
    /// Cgroup paths by id (index + 1); id 1 is the root.
    cgroups: Vec<String>,
    exit: Option<ExitInfo>,
    finished: bool,
    groups: Vec<GroupReport>,
    latencies: Vec<Latencies>,
    /// Per class, as the BPF side measures it (runnable → running).
    class_latency: Box<Latency>,
    /// The plugin's wake-up preemption rule, applied as the BPF side does.
    preemption: Option<plugin_api::WakeupPreemption>,
    /// The plugin's slice renewal rule, likewise.
    renewal: plugin_api::SliceRenewal,
    /// Wake-ups that preempted by that rule.
    pub urgent_wakeups: u64,
    /// The CPU whose running task is waking others, if any: the CPU the
    /// BPF side's wake-up runs on, which its preemption tries first.
    waking_on: Option<u32>,
    /// Runs of host decisions not yet known to be inversions, oldest first:
    /// (start, key); kept while a task held since before them may still
    /// turn out to rank ahead of them.
    recent_runs: VecDeque<(u64, u64)>,
    /// Runs that started from a host decision that did not preempt.
    pub decided_runs: u64,
    /// Of those, runs that started while the host held a task the plugin
    /// then dispatched with an earlier key: the cost of the look-ahead window.
    pub inversions: u64,
}

impl Simulator {
    /// A simulator at time 0 with every task of `w` about to start.
    pub fn new(w: &Workload) -> Self {
        let mut sim = Simulator {
            now: 0,
            end: w.duration_ms * 1_000_000,
            timeout: w.timeout_ms * 1_000_000,
            seq: 0,
            events: BinaryHeap::new(),
            tasks: Vec::new(),
            cpus: (0..w.cpus).map(|_| Cpu::default()).collect(),
            shared: vec![BTreeMap::new(); w.llcs.max(1) as usize],
            llc_served: vec![0; w.llcs.max(1) as usize],
            llc_starved: vec![false; w.llcs.max(1) as usize],
            fallback: VecDeque::new(),
            turn: 0,
            rescues: 0,
            rescued: 0,
            held: 0,
            switch_cost: w.switch_us * 1000,
            host_latency: w.host_latency_us * 1000,
            host_cpu: None,
            host_waits_on: None,
            host_waits: 0,
            host_last: 0,
            host_due: None,
            rt: w
                .rt
                .iter()
                .map(|r| (r.cpu, r.period_us * 1000, r.runtime_us * 1000))
                .collect(),
            lifetimes: w
                .groups
                .iter()
                .map(|g| g.lifetime_us.map(|us| us * 1000))
                .collect(),
            move_every: w
                .groups
                .iter()
                .map(|g| g.move_every_us.map(|us| us * 1000))
                .collect(),
            moves: vec![0; w.groups.len()],
            ring: VecDeque::with_capacity(w.ring_size.min(1 << 16)),
            ring_size: w.ring_size,
            counters: Counters {
                nr_online_cpus: w.cpus as u64,
                ..Counters::default()
            },
            rng: Rng::new(w.seed),
            kick: false,
            kick_armed: false,
            ring_wake: false,
            unnotified: false,
            quiet_records: 0,
            resumed: 0,
            renewed: 0,
            renewed_queued: 0,
            kept: 0,
            builtin_idle: true,
            local_queued: 0,
            preemptions: 0,
            cgroups: vec!["/".to_string()],
            exit: None,
            finished: false,
            groups: Vec::new(),
            latencies: Vec::new(),
            class_latency: Box::default(),
            preemption: None,
            renewal: plugin_api::SliceRenewal::default(),
            urgent_wakeups: 0,
            waking_on: None,
            recent_runs: VecDeque::new(),
            decided_runs: 0,
            inversions: 0,
        };
        for (gi, g) in w.groups.iter().enumerate() {
            sim.groups
                .push(GroupReport::new(&g.name, g.count, g.weight()));
            sim.latencies.push(Latencies::default());
            let mut comm = [0u8; 16];
            let n = g.name.len().min(15);
            comm[..n].copy_from_slice(&g.name.as_bytes()[..n]);
            let cgroup_id = match &g.cgroup {
                None => 1,
                Some(path) => match sim.cgroups.iter().position(|c| c == path) {
                    Some(k) => k as u64 + 1,
                    None => {
                        sim.cgroups.push(path.clone());
                        sim.cgroups.len() as u64
                    }
                },
            };
            let leader = PID_BASE + sim.tasks.len() as i32;
            let half = g.count as usize / 2;
            for k in 0..g.count as usize {
                let idx = sim.tasks.len();
                let partner = match g.behaviour {
                    Behaviour::PingPong { .. } => Some(if k % 2 == 0 { idx + 1 } else { idx - 1 }),
                    _ => None,
                };
                // Senders first, then receivers; each sees the other side.
                let msg = matches!(g.behaviour, Behaviour::Messaging { .. }).then(|| Msg {
                    sender: k < half,
                    peers: (if k < half { idx - k + half } else { idx - k }, half),
                    next: k % half,
                    inbox: 0,
                    pending: false,
                });
                sim.tasks.push(Task {
                    group: gi,
                    weight: g.weight(),
                    behaviour: g.behaviour,
                    state: State::Sleeping,
                    vtime: 0,
                    exec_runtime: 0,
                    start_ts: 0,
                    stop_ts: 0,
                    prev_cpu: (idx % w.cpus as usize) as u32,
                    work_left: 0,
                    runnable_since: 0,
                    woke_at: None,
                    slept: false,
                    class: 0,
                    queued_on_dsq: false,
                    decided: false,
                    keyed: false,
                    key_exec: 0,
                    key: 0,
                    renewals: 0,
                    key_slice: 0,
                    renewed_queued: false,
                    resume: 0,
                    held_since: None,
                    allowed: g.cpus.clone(),
                    forked: false,
                    dies_at: g.lifetime_us.map(|us| us * 1000),
                    slice: KERNEL_SLICE_NS,
                    partner,
                    msg,
                    comm,
                    tgid: if g.threads {
                        leader
                    } else {
                        PID_BASE + idx as i32
                    },
                    cgroup_id,
                    uid: g.uid,
                });
                // Spread first wake-ups so periodic tasks are not in lockstep;
                // the second task of a ping-pong pair waits for its partner.
                let first = match g.behaviour {
                    Behaviour::CpuBound {} => Some(0),
                    Behaviour::Periodic { period_us, .. } => {
                        Some(sim.rng.next_u64() % (period_us * 1000))
                    }
                    Behaviour::PingPong { .. } => (k % 2 == 0).then_some(0),
                    // Receivers wait for their first message.
                    Behaviour::Messaging { runtime_us, .. } => {
                        (k < half).then(|| sim.rng.next_u64() % (runtime_us * 1000))
                    }
                    Behaviour::Bursty { sleep_us, .. } => {
                        Some(sim.rng.next_u64() % (sleep_us * 1000))
                    }
                };
                if let Some(t) = first {
                    sim.push(t, Event::Wake(idx));
                }
            }
        }
        let first_check = (sim.timeout / 4).max(1);
        sim.push(first_check, Event::Watchdog);
        sim.push(HEARTBEAT_NS, Event::Heartbeat);
        for k in 0..sim.rt.len() {
            let (_, period, _) = sim.rt[k];
            sim.push(period / 2, Event::RtStart(k));
        }
        for g in 0..sim.move_every.len() {
            if let Some(every) = sim.move_every[g] {
                sim.push(every, Event::Move(g));
            }
        }
        sim
    }

    /// Whether a waking task goes straight to an idle CPU while nothing else
    /// waits, as the BPF side's `select_cpu` does (default on).
    pub fn with_builtin_idle(mut self, on: bool) -> Self {
        self.builtin_idle = on;
        self
    }

    /// Per-group results so far (the whole run once `wait` has returned `Exit`).
    pub fn report(&self) -> Vec<GroupReport> {
        let elapsed = self.now.max(1) as f64 * self.cpus.len() as f64;
        self.groups
            .iter()
            .zip(&self.latencies)
            .map(|(g, l)| {
                let mut g = g.clone();
                g.cpu_share = g.runtime_ns as f64 / elapsed;
                l.fill(&mut g);
                g
            })
            .collect()
    }

    /// Simulated time now (ns).
    pub fn now(&self) -> u64 {
        self.now
    }

    fn push(&mut self, at: u64, ev: Event) {
        self.seq += 1;
        self.events.push(Reverse((at, self.seq, ev)));
    }

    fn handle(&mut self, ev: Event) {
        match ev {
            Event::Wake(i) => self.wake(i),
            Event::Stop { cpu, generation } => {
                if self.cpus[cpu as usize].generation == generation && !self.keep_running(cpu) {
                    self.stop(cpu);
                }
            }
            Event::Watchdog => {
                self.watchdog();
                self.push(self.now + (self.timeout / 4).max(1), Event::Watchdog);
            }
            Event::HostKick => {
                self.kick_armed = false;
                self.kick = true;
            }
            Event::Heartbeat => {
                self.heartbeat();
                self.push(self.now + HEARTBEAT_NS, Event::Heartbeat);
            }
            Event::RtStart(k) => self.rt_start(k),
            Event::RtEnd(k) => {
                let (cpu, period, runtime) = self.rt[k];
                self.cpus[cpu as usize].rt_busy = false;
                self.push(self.now + period - runtime, Event::RtStart(k));
                self.next_on(cpu);
            }
            Event::Move(g) => self.move_group(g),
            Event::HostRun => {}
            Event::HostWaitOver(n) => {
                if self.host_waits_on.is_some() && n == self.host_waits {
                    self.host_waits_on = None;
                    self.host_takes_cpu(false);
                    self.host_round_due();
                }
            }
        }
    }

    /// An RT task takes a CPU: what ran or waited there for sched_ext is
    /// handed back to the fallback queue (local queues only hold what runs
    /// now on the real path) and may run elsewhere.
    fn rt_start(&mut self, k: usize) {
        let (cpu, _, runtime) = self.rt[k];
        self.push(self.now + runtime, Event::RtEnd(k));
        let c = &mut self.cpus[cpu as usize];
        c.rt_busy = true;
        c.idle_since = None;
        c.generation += 1; // its pending stop event is void now
        let mut handed: Vec<usize> = c.local.drain(..).collect();
        self.local_queued -= handed.len();
        if let Some(i) = c.current.take() {
            let ran = self.now.saturating_sub(c.started);
            self.counters.nr_running -= 1;
            let t = &mut self.tasks[i];
            t.exec_runtime += ran;
            t.stop_ts = self.now;
            if t.work_left != u64::MAX {
                t.work_left -= ran.min(t.work_left);
            }
            self.groups[t.group].runtime_ns += ran;
            if t.work_left == 0 {
                // It finished just as the RT task came: let stop() handle it.
                t.work_left = 1;
            }
            t.state = State::Waiting;
            t.runnable_since = self.now;
            handed.insert(0, i);
        }
        for i in handed {
            self.counters.nr_kernel_dispatches += 1;
            self.tasks[i].slice = KERNEL_SLICE_NS;
            self.tasks[i].queued_on_dsq = true;
            self.fallback.push_back(i);
            self.kick_idle_for(i);
        }
    }

    /// Group `g`'s tasks get a new affinity: one random CPU, or all CPUs
    /// again, in turn. A waiting task is dequeued and queued again (a new
    /// record; a decision for the old one is refused), a running one that may
    /// no longer run where it is stops and is queued again.
    fn move_group(&mut self, g: usize) {
        self.moves[g] += 1;
        let narrow = self.moves[g] % 2 == 1;
        let n = self.cpus.len() as u64;
        let members: Vec<usize> = (0..self.tasks.len())
            .filter(|&i| self.tasks[i].group == g && self.tasks[i].state != State::Exited)
            .collect();
        for i in members {
            let allowed = narrow.then(|| vec![(self.rng.next_u64() % n) as u32]);
            self.tasks[i].allowed = allowed;
            // BPF's set_cpumask: the plugin sees it before a renewal.
            self.tasks[i].renewals = u64::MAX;
            match self.tasks[i].state {
                State::Waiting if self.tasks[i].held_since.is_some() => {
                    self.held -= 1;
                    self.tasks[i].held_since = None;
                    self.enqueue(i);
                }
                State::Running => {
                    let cpu = self.tasks[i].prev_cpu;
                    if !self.can_run(i, cpu) {
                        self.stop(cpu);
                    }
                }
                _ => {}
            }
        }
        if let Some(every) = self.move_every[g] {
            self.push(self.now + every, Event::Move(g));
        }
    }

    fn can_run(&self, i: usize, cpu: u32) -> bool {
        self.tasks[i]
            .allowed
            .as_ref()
            .is_none_or(|a| a.contains(&cpu))
    }

    /// Task `i` exits; a fresh fork of it takes its place at once.
    fn exit_and_fork(&mut self, i: usize) {
        let now = self.now;
        let t = &mut self.tasks[i];
        t.state = State::Exited;
        let g = t.group;
        let idx = self.tasks.len();
        let child = Task {
            state: State::Sleeping,
            vtime: 0,
            exec_runtime: 0,
            start_ts: 0,
            stop_ts: 0,
            work_left: 0,
            runnable_since: now,
            woke_at: None,
            slept: false,
            class: 0,
            queued_on_dsq: false,
            decided: false,
            keyed: false,
            key_exec: 0,
            key: 0,
            renewals: 0,
            key_slice: 0,
            renewed_queued: false,
            resume: 0,
            held_since: None,
            forked: true,
            dies_at: self.lifetimes[g].map(|l| now + l),
            tgid: PID_BASE + idx as i32,
            allowed: self.tasks[i].allowed.clone(),
            comm: self.tasks[i].comm,
            partner: None,
            msg: None,
            ..self.tasks[i]
        };
        self.tasks.push(child);
        self.wake(idx);
    }

    /// The BPF heartbeat's rescue: a CPU idle for a whole heartbeat while
    /// the host holds tasks gets those that waited that long, in arrival order.
    fn heartbeat(&mut self) {
        let now = self.now;
        // Shared queues no CPU looked at for a heartbeat (BPF's
        // find_starved_llcs): every CPU of their cache taken, say by RT tasks.
        for q in 0..self.shared.len() {
            self.llc_starved[q] =
                !self.shared[q].is_empty() && now - self.llc_served[q] > HEARTBEAT_NS;
        }
        // The BPF heartbeat wakes the host while it holds tasks: here only
        // quiet records can have missed a wake-up.
        if std::mem::take(&mut self.unnotified) {
            self.kick = true;
        }
        // Runs older than every held task can no longer be inversions.
        let oldest = self.tasks.iter().filter_map(|t| t.held_since).min();
        let keep_from = oldest.unwrap_or(now);
        while self.recent_runs.front().is_some_and(|r| r.0 < keep_from) {
            self.recent_runs.pop_front();
        }
        let late_idle = self
            .cpus
            .iter()
            .any(|c| c.idle_since.is_some_and(|t| now - t >= HEARTBEAT_NS));
        if !late_idle || self.held == 0 {
            return;
        }
        let mut old: Vec<(u64, usize)> = self
            .tasks
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                t.held_since
                    .filter(|&s| now - s >= HEARTBEAT_NS)
                    .map(|s| (s, i))
            })
            .collect();
        if old.is_empty() {
            return;
        }
        old.sort_unstable();
        self.rescues += 1;
        for (_, i) in old {
            let t = &mut self.tasks[i];
            t.held_since = None;
            self.held -= 1;
            t.queued_on_dsq = true;
            t.slice = KERNEL_SLICE_NS;
            self.fallback.push_back(i);
            self.rescued += 1;
        }
        for c in 0..self.cpus.len() as u32 {
            self.next_on(c);
        }
    }

    fn wake(&mut self, i: usize) {
        // A periodic task's releases keep their period even when one is
        // missed because the task is still busy with the last.
        if let Behaviour::Periodic { period_us, .. } = self.tasks[i].behaviour {
            self.push(self.now + period_us * 1000, Event::Wake(i));
        }
        if self.tasks[i].state != State::Sleeping {
            return;
        }
        self.tasks[i].work_left = match self.tasks[i].behaviour {
            Behaviour::CpuBound {} => u64::MAX,
            Behaviour::Periodic { runtime_us, .. } => runtime_us * 1000,
            Behaviour::PingPong { runtime_us } | Behaviour::Messaging { runtime_us, .. } => {
                runtime_us * 1000
            }
            Behaviour::Bursty { run_us, jitter, .. } => self.rng.around(run_us * 1000, jitter),
        };
        if let Some(m) = &mut self.tasks[i].msg {
            m.pending = true;
        }
        self.tasks[i].woke_at = Some(self.now);
        self.tasks[i].slept = true;
        // The BPF select_cpu fast path: an idle CPU and nothing else waiting.
        let quiet =
            self.counters.nr_scheduled == 0 && self.shared_len() == 0 && self.ring.is_empty();
        if self.builtin_idle && quiet {
            let prev = self.tasks[i].prev_cpu;
            if let Some(c) = self
                .idle_cpu_for(i, prev)
                .filter(|&c| self.cpus[c as usize].local.is_empty())
            {
                self.counters.nr_kernel_dispatches += 1;
                let t = &mut self.tasks[i];
                t.state = State::Waiting;
                t.runnable_since = self.now;
                t.slice = KERNEL_SLICE_NS;
                self.run(c, i);
                return;
            }
        }
        if self.urgent(i) {
            return;
        }
        self.enqueue(i);
    }

    /// The task is runnable: queue it for the host, or, when the queue to the
    /// host is full, straight onto the shared queue.
    fn enqueue(&mut self, i: usize) {
        let now = self.now;
        let t = &mut self.tasks[i];
        t.state = State::Waiting;
        t.runnable_since = now;
        if self.ring.len() < self.ring_size {
            let mut q = QueuedTask {
                pid: PID_BASE + i as i32,
                tgid: t.tgid,
                cpu: t.prev_cpu as i32,
                nr_cpus_allowed: self.cpus.len() as u32,
                // A fork's first enqueue, like a requeue, has no wake-up flag.
                flags: if t.woke_at.is_some() && !t.forked {
                    ENQ_WAKEUP
                } else {
                    0
                } | if t.slept { ENQ_SLEPT } else { 0 },
                start_ts: t.start_ts,
                stop_ts: t.stop_ts,
                exec_runtime: t.exec_runtime,
                weight: t.weight,
                vtime: if t.keyed { t.key } else { t.vtime },
                cgroup_id: t.cgroup_id,
                comm: [0; 16],
            };
            q.comm = t.comm;
            q.nr_cpus_allowed = t
                .allowed
                .as_ref()
                .map_or(q.nr_cpus_allowed, |a| a.len() as u32);
            t.forked = false;
            t.slept = false;
            // Until the host decides: a rescued task keeps its old key.
            t.renewals = u64::MAX;
            t.held_since = Some(now);
            self.held += 1;
            self.ring.push_back(q);
            // As the BPF side: with a backlog and every CPU's next task
            // queued, the record does not wake the host.
            let n = self.cpus.len();
            let idle = self.cpus.iter().any(|c| c.current.is_none() && !c.taken());
            if self.held > 2 * n && !idle && self.shared_len() >= n {
                self.unnotified = true;
                self.quiet_records += 1;
            } else {
                self.ring_wake = true;
            }
        } else {
            self.counters.nr_sched_congested += 1;
            self.counters.nr_kernel_dispatches += 1;
            t.slice = KERNEL_SLICE_NS;
            t.queued_on_dsq = true;
            t.forked = false;
            let key = t.vtime;
            self.push_shared(key, i);
            self.kick_idle_for(i);
        }
    }

    /// The BPF side's wake-up preemption (`urgent_wakeup` in main.bpf.c):
    /// a task the plugin has keyed, of a covered class, whose last run was
    /// short and who slept at least twice that long, without a backlog,
    /// runs at once on an idle CPU, in place of the task that woke it by a
    /// message, or in place of a task with a later current key; false
    /// leaves it to the host.
    fn urgent(&mut self, i: usize) -> bool {
        let Some(rule) = self.preemption else {
            return false;
        };
        let t = &self.tasks[i];
        let last_run = t.stop_ts.saturating_sub(t.start_ts);
        if !t.keyed
            || !rule.covers(t.class as u32)
            || last_run > rule.max_burst_ns
            || self.now.saturating_sub(t.stop_ts) < 2 * last_run
            || self.held + self.shared_len() > 2 * self.cpus.len()
        {
            return false;
        }
        let (prev, key) = (t.prev_cpu, self.current_key(i, 0));
        let n = self.cpus.len() as u32;
        // Not where a task already waits to run next (BPF: its local queue
        // is not empty); by key unless `keyed` is false.
        let preemptible = |c: u32, keyed: bool| {
            let cpu = &self.cpus[c as usize];
            !cpu.taken()
                && cpu.local.is_empty()
                && self.can_run(i, c)
                && cpu.current.is_some_and(|cur| {
                    !keyed || self.current_key(cur, self.now.saturating_sub(cpu.started)) > key
                })
        };
        // The waker's CPU first (no IPI), whatever the waker's key: a
        // message is a sync wake-up (pipes and sockets), the waker about to
        // sleep. Then the last CPU and the next few, by key.
        let target = self.idle_cpu_for(i, prev).or_else(|| {
            self.waking_on
                .filter(|&c| preemptible(c, false))
                .or_else(|| {
                    (0..n.min(PREEMPT_SCAN))
                        .map(|k| (prev + k) % n)
                        .find(|&c| preemptible(c, true))
                })
        });
        let Some(c) = target else {
            return false;
        };
        self.urgent_wakeups += 1;
        let t = &mut self.tasks[i];
        t.state = State::Waiting;
        t.runnable_since = self.now;
        t.slice = KERNEL_SLICE_NS;
        t.queued_on_dsq = true;
        // At the head of the CPU's local queue: this one runs next, and the
        // preempted task finishes its slice from the shared queue (preempt).
        self.cpus[c as usize].local.push_front(i);
        self.local_queued += 1;
        if self.cpus[c as usize].current.is_some() {
            self.preempt(c);
        } else {
            self.next_on(c);
        }
        true
    }

    /// A task's key as it stands now (`current_key` in main.bpf.c): its last
    /// decision's key advanced by what it ran since, weighted; `running` is
    /// how long its current run has lasted (0 when it is not running).
    fn current_key(&self, i: usize, running: u64) -> u64 {
        let t = &self.tasks[i];
        let ran = t.exec_runtime.saturating_sub(t.key_exec) + running;
        t.vtime + ran.saturating_mul(100) / t.weight.max(1)
    }

    /// The task running on `cpu` is preempted: it keeps what is left of its
    /// slice, to finish at its key without the host (`resume_preempted` in
    /// main.bpf.c).
    fn preempt(&mut self, cpu: u32) {
        let c = &self.cpus[cpu as usize];
        let Some(victim) = c.current else { return };
        let ran = self.now.saturating_sub(c.started);
        let t = &mut self.tasks[victim];
        t.resume = t.slice.saturating_sub(ran);
        self.class_latency.preempted[t.class] += 1;
        self.stop(cpu);
    }

    /// A task still runnable after it stopped on `cpu`, in the BPF side's
    /// order: a preempted one with slice left and a key finishes its slice
    /// from the shared queue; one whose slice ran out keeps its CPU when
    /// nothing else waits (`keep_prev`), or gets a new slice by the
    /// plugin's renewal rule; any other goes to the host.
    fn requeue(&mut self, i: usize, cpu: u32) {
        let t = &mut self.tasks[i];
        let left = std::mem::take(&mut t.resume);
        if left == 0 || !t.keyed {
            if self.keep(i, cpu) || self.renew(i) {
                return;
            }
            self.enqueue(i);
            return;
        }
        let key = t.vtime;
        self.resumed += 1;
        self.queue_shared(i, key, left);
    }

    /// Task `i`, placed by the kernel side alone, waits in its cache's
    /// shared queue at `key` for a slice of `slice`; an idle CPU it may use
    /// is kicked.
    fn queue_shared(&mut self, i: usize, key: u64, slice: u64) {
        let t = &mut self.tasks[i];
        t.state = State::Waiting;
        t.runnable_since = self.now;
        t.slice = slice;
        t.queued_on_dsq = true;
        self.push_shared(key, i);
        self.kick_idle_for(i);
    }

    /// The last task of `cpu` keeps it for another slice: its slice ran out,
    /// nothing waits for this CPU, and nothing waits in our custody (BPF:
    /// ops.dispatch found nothing, then `keep_prev` and `nothing_waits`).
    fn keep(&mut self, i: usize, cpu: u32) -> bool {
        let c = &self.cpus[cpu as usize];
        if c.taken()
            || !c.local.is_empty()
            || self.held > 0
            || !self.fallback.is_empty()
            || self.shared_len() > 0
            || !self.can_run(i, cpu)
        {
            return false;
        }
        self.kept += 1;
        let t = &mut self.tasks[i];
        t.state = State::Waiting;
        t.runnable_since = self.now;
        t.slice = KERNEL_SLICE_NS;
        self.run(cpu, i);
        true
    }

    /// The plugin's slice renewal rule (`renew_slice` in main.bpf.c): a task
    /// it has keyed, of a covered class, that has not slept since its last
    /// record and was renewed fewer than `max_renewals` times since, goes
    /// back into the shared queue at its current key with its last slice,
    /// while the host holds no task. It does not count in the host's
    /// window (`occupancy`).
    fn renew(&mut self, i: usize) -> bool {
        let rule = self.renewal;
        let t = &self.tasks[i];
        if !t.keyed
            || t.slept
            || t.renewals >= rule.max_renewals
            || !rule.covers(t.class as u32)
            || self.held > 0
        {
            return false;
        }
        let key = self.current_key(i, 0);
        let t = &mut self.tasks[i];
        t.renewals += 1;
        t.vtime = key;
        t.key_exec = t.exec_runtime;
        // The plugin's order by its own rule: its run counts in the
        // look-ahead window's measure like a decision's.
        t.decided = true;
        t.renewed_queued = true;
        let slice = t.key_slice;
        self.renewed_queued += 1;
        self.renewed += 1;
        self.queue_shared(i, key, slice);
        true
    }

    /// The woken host thread takes a CPU for its round, as the BPF side
    /// gives it one (`enqueue_host_thread`): an idle one if any (its last
    /// first), else its last CPU, preempting the task there (which resumes
    /// from the shared queue) unless it may wait for that task to stop
    /// (`may_wait`, `host_may_wait`), never one an RT task holds.
    fn host_takes_cpu(&mut self, may_wait: bool) {
        let n = self.cpus.len() as u32;
        let idle = |c: &Cpu| c.current.is_none() && !c.taken();
        let last = self.host_last;
        let cpu = if idle(&self.cpus[last as usize]) {
            Some(last)
        } else {
            (0..n)
                .find(|&c| idle(&self.cpus[c as usize]))
                .or_else(|| (!self.cpus[last as usize].rt_busy).then_some(last))
                .or_else(|| (0..n).find(|&c| !self.cpus[c as usize].rt_busy))
        };
        let Some(c) = cpu else { return };
        if may_wait && self.host_may_wait(c) {
            // Its round is due once it has the CPU (next_on, or the wait's end).
            self.host_waits_on = Some(c);
            self.host_waits += 1;
            self.host_due = Some(u64::MAX);
            self.push(
                self.now + HOST_WAIT_NS,
                Event::HostWaitOver(self.host_waits),
            );
            return;
        }
        self.host_gets(c);
    }

    /// The host's wait for `cpu` ends: it takes that CPU (preempting what
    /// still runs there) and its round is due `host_latency` on.
    fn host_wait_ends(&mut self, cpu: u32) {
        self.host_waits_on = None;
        self.host_gets(cpu);
        self.host_round_due();
    }

    /// The host got its CPU after waiting: its round is due `host_latency` on.
    fn host_round_due(&mut self) {
        let due = self.now + self.host_latency;
        self.host_due = Some(due);
        self.push(due, Event::HostRun);
    }

    /// Whether the host may wait for `cpu`'s running task to stop rather
    /// than preempt it (`host_may_wait` in main.bpf.c): no CPU idle, and all
    /// CPUs but one (at least one) have their next task queued.
    fn host_may_wait(&self, cpu: u32) -> bool {
        let queued = self.shared_len();
        self.cpus[cpu as usize].current.is_some()
            && self.cpus.iter().all(|c| c.current.is_some() || c.taken())
            && queued > 0
            && queued + 1 >= self.cpus.len()
    }

    /// The host thread takes `cpu` for its round, preempting what runs there.
    fn host_gets(&mut self, c: u32) {
        // Taken first, so that the preempted task does not start here again.
        let slot = &mut self.cpus[c as usize];
        slot.host_busy = true;
        slot.idle_since = None;
        self.host_cpu = Some(c);
        self.host_last = c;
        self.preempt(c);
    }

    /// The running task on `cpu` stops: its burst ended or its slice expired.
    fn stop(&mut self, cpu: u32) {
        let c = &mut self.cpus[cpu as usize];
        let Some(i) = c.current.take() else { return };
        let ran = self.now.saturating_sub(c.started);
        self.counters.nr_running -= 1;
        let t = &mut self.tasks[i];
        t.exec_runtime += ran;
        t.stop_ts = self.now;
        if t.work_left != u64::MAX {
            t.work_left -= ran.min(t.work_left);
        }
        self.groups[t.group].runtime_ns += ran;
        if t.dies_at.is_some_and(|d| self.now >= d) {
            self.groups[t.group].runs += 1;
            self.exit_and_fork(i);
        } else if t.msg.is_some() {
            // A message finished as it stopped: apply it; with more to do
            // at once the task is queued again, else it sleeps.
            let mut wakes = Vec::new();
            if t.work_left == 0 && t.msg.is_some_and(|m| m.pending) {
                wakes = self.message_done(i);
            }
            if self.tasks[i].work_left == 0 {
                self.tasks[i].state = State::Sleeping;
            } else {
                self.requeue(i, cpu);
            }
            for w in wakes {
                self.wake(w);
            }
        } else if t.work_left == 0 {
            self.groups[t.group].runs += 1;
            t.state = State::Sleeping;
            let partner = t.partner;
            match t.behaviour {
                Behaviour::Bursty {
                    sleep_us, jitter, ..
                } => {
                    let nap = self.rng.around(sleep_us * 1000, jitter);
                    self.push(self.now + nap, Event::Wake(i));
                }
                Behaviour::PingPong { .. } => {
                    if let Some(p) = partner {
                        self.wake(p);
                    }
                }
                // Periodic tasks already have their next release queued.
                Behaviour::Periodic { .. }
                | Behaviour::CpuBound {}
                | Behaviour::Messaging { .. } => {}
            }
        } else {
            self.groups[t.group].runs += u64::from(matches!(t.behaviour, Behaviour::CpuBound {}));
            self.requeue(i, cpu);
        }
        self.next_on(cpu);
    }

    /// A messaging task's write or read ended without its CPU stopping:
    /// apply it, and keep running while there is more to do and slice left
    /// (no context switch, as a real task writing message after message).
    /// False leaves the stop to `stop`.
    fn keep_running(&mut self, cpu: u32) -> bool {
        let Some(i) = self.cpus[cpu as usize].current else {
            return false;
        };
        let ran = self.now.saturating_sub(self.cpus[cpu as usize].started);
        let t = &mut self.tasks[i];
        if !t.msg.is_some_and(|m| m.pending) || ran < t.work_left {
            return false;
        }
        t.exec_runtime += ran;
        t.work_left = 0;
        self.groups[t.group].runtime_ns += ran;
        self.cpus[cpu as usize].started = self.now;
        self.waking_on = Some(cpu);
        for w in self.message_done(i) {
            // A wake-up may preempt this very CPU.
            self.wake(w);
        }
        self.waking_on = None;
        let c = &self.cpus[cpu as usize];
        if c.current != Some(i) {
            return true;
        }
        let t = &self.tasks[i];
        let used = self.now - t.start_ts;
        if t.work_left == 0 || used >= t.slice {
            return false;
        }
        let next = self.now + t.work_left.min(t.slice - used);
        let generation = c.generation;
        self.push(next, Event::Stop { cpu, generation });
        true
    }

    /// Applies task `i`'s finished write or read; sets up the next one when
    /// it can start at once (`work_left` > 0). Returns who to wake: the
    /// receiver written to, or a sender that waited for room.
    fn message_done(&mut self, i: usize) -> Vec<usize> {
        let Behaviour::Messaging { runtime_us, buffer } = self.tasks[i].behaviour else {
            return Vec::new();
        };
        let Some(mut m) = self.tasks[i].msg else {
            return Vec::new();
        };
        m.pending = false;
        let (first, n) = m.peers;
        let mut wakes = Vec::new();
        let more = if m.sender {
            let r = first + m.next;
            if let Some(rm) = &mut self.tasks[r].msg {
                rm.inbox += 1;
            }
            wakes.push(r);
            m.next = (m.next + 1) % n;
            self.tasks[first + m.next]
                .msg
                .is_some_and(|rm| rm.inbox < buffer)
        } else {
            let was_full = m.inbox >= buffer;
            m.inbox = m.inbox.saturating_sub(1);
            self.groups[self.tasks[i].group].runs += 1;
            if was_full {
                // Senders that found this queue full wait for it.
                wakes.extend((first..first + n).filter(|&s| {
                    self.tasks[s].state == State::Sleeping
                        && self.tasks[s]
                            .msg
                            .is_some_and(|sm| sm.peers.0 + sm.next == i)
                }));
            }
            m.inbox > 0
        };
        if more {
            m.pending = true;
            self.tasks[i].work_left = runtime_us * 1000;
        }
        self.tasks[i].msg = Some(m);
        wakes
    }

    /// A task held since `held_since` was just decided with `key`: every
    /// decided run that started meanwhile with a later key ran ahead of a
    /// task the plugin ranks before it. Each such run counts once.
    fn count_inversions(&mut self, held_since: u64, key: u64) {
        let from = self.recent_runs.partition_point(|r| r.0 < held_since);
        if from == self.recent_runs.len() {
            return;
        }
        let since = self.recent_runs.split_off(from);
        let n = since.len();
        self.recent_runs
            .extend(since.into_iter().filter(|&(_, k)| k <= key));
        self.inversions += (n - (self.recent_runs.len() - from)) as u64;
    }

    /// `cpu` looks for work: its local queue, then the shared one.
    fn next_on(&mut self, cpu: u32) {
        let c = &self.cpus[cpu as usize];
        if c.current.is_some() || c.taken() {
            return;
        }
        // The host waited at the head of this CPU's local queue.
        if self.host_waits_on == Some(cpu) {
            self.host_wait_ends(cpu);
            return;
        }
        let local = self.cpus[cpu as usize].local.pop_front();
        self.local_queued -= usize::from(local.is_some());
        // The local queue, then the fallback and shared queues in turn,
        // skipping tasks that may not run here.
        self.turn += 1;
        let next = local.or_else(|| {
            if self.turn % 2 == 1 {
                self.take_shared(cpu).or_else(|| self.take_fallback(cpu))
            } else {
                self.take_fallback(cpu).or_else(|| self.take_shared(cpu))
            }
        });
        // Taken from a queue: quiet records wake the host once the CPUs'
        // next tasks run low.
        let low = self.shared_len() < self.cpus.len();
        if local.is_none() && next.is_some() && self.unnotified && self.held > 0 && low {
            self.kick = true;
            self.unnotified = false;
        }
        match next {
            Some(i) => self.run(cpu, i),
            None => {
                // The host waits behind another CPU's running task: it
                // preempts it now (BPF: ops.dispatch kicks that CPU), and
                // the preempted task may start here.
                if let Some(h) = self.host_waits_on.filter(|&h| h != cpu) {
                    self.host_wait_ends(h);
                    if self.cpus[cpu as usize].current.is_some() {
                        return;
                    }
                }
                let c = &mut self.cpus[cpu as usize];
                c.idle_since.get_or_insert(self.now);
                // The BPF side wakes the host when a CPU idles while it holds tasks.
                self.kick |= self.held > 0;
            }
        }
    }

    fn take_fallback(&mut self, cpu: u32) -> Option<usize> {
        let k = self.fallback.iter().position(|&i| self.can_run(i, cpu))?;
        self.fallback.remove(k)
    }

    /// The first task `cpu` may run from a shared queue the heartbeat found
    /// unserved, else from its cache's, else from another cache's (BPF's
    /// move_shared).
    fn take_shared(&mut self, cpu: u32) -> Option<usize> {
        let (n, own) = (self.shared.len(), self.llc_of(cpu));
        // Indices 0..n: the starved queues; n..2n: own cache's, then the next.
        for k in 0..2 * n {
            let q = if k < n { k } else { (own + k - n) % n };
            if k < n && !self.llc_starved[q] {
                continue;
            }
            self.llc_served[q] = self.now;
            let found = self.shared[q].iter().find(|(_, &i)| self.can_run(i, cpu));
            if let Some((&key, _)) = found {
                self.llc_starved[q] = false;
                return self.shared[q].remove(&key);
            }
        }
        None
    }

    /// Tasks in all the shared queues.
    fn shared_len(&self) -> usize {
        self.shared.iter().map(BTreeMap::len).sum()
    }

    /// The last-level cache of `cpu`.
    fn llc_of(&self, cpu: u32) -> usize {
        cpu as usize * self.shared.len() / self.cpus.len()
    }

    fn run(&mut self, cpu: u32, i: usize) {
        let now = self.now;
        let t = &mut self.tasks[i];
        t.state = State::Running;
        t.queued_on_dsq = false;
        if std::mem::take(&mut t.renewed_queued) {
            self.renewed_queued -= 1;
        }
        if std::mem::take(&mut t.decided) {
            self.decided_runs += 1;
            self.recent_runs.push_back((now, t.vtime));
        }
        t.prev_cpu = cpu;
        t.start_ts = now;
        let waited = now - t.runnable_since;
        let g = &mut self.groups[t.group];
        g.wait_max_ns = g.wait_max_ns.max(waited);
        if let Some(w) = t.woke_at.take() {
            self.latencies[t.group].push(now - w);
            let l = &mut self.class_latency;
            l.hist[t.class][crate::latency::bucket_of(now - w)] += 1;
            l.sum_ns[t.class] += now - w;
            l.max_ns[t.class] = l.max_ns[t.class].max(now - w);
        }
        let run_for = t.work_left.min(t.slice.max(1));
        let c = &mut self.cpus[cpu as usize];
        // Another task than the last one here: the switch costs CPU time
        // before it makes progress (it still counts against its slice).
        let switch = if c.last == Some(i) {
            0
        } else {
            self.switch_cost
        };
        c.last = Some(i);
        c.current = Some(i);
        c.idle_since = None;
        c.started = now + switch;
        c.generation += 1;
        let generation = c.generation;
        self.counters.nr_running += 1;
        self.push(now + switch + run_for, Event::Stop { cpu, generation });
    }

    /// Into the shared queue of task `i`'s last CPU's cache, or, if it may
    /// no longer run there, of the first CPU it may use (BPF's
    /// task_shared_dsq).
    fn push_shared(&mut self, vtime: u64, i: usize) {
        let prev = self.tasks[i].prev_cpu;
        let cpu = if self.can_run(i, prev) {
            prev
        } else {
            (0..self.cpus.len() as u32)
                .find(|&c| self.can_run(i, c))
                .unwrap_or(prev)
        };
        let q = self.llc_of(cpu);
        self.seq += 1;
        self.shared[q].insert((vtime, self.seq), i);
    }

    /// An idle CPU task `i` may run on, `prefer` first.
    fn idle_cpu_for(&self, i: usize, prefer: u32) -> Option<u32> {
        let free = |c: u32| {
            let cpu = &self.cpus[c as usize];
            cpu.current.is_none() && !cpu.taken() && self.can_run(i, c)
        };
        if free(prefer) {
            return Some(prefer);
        }
        (0..self.cpus.len() as u32).find(|&c| free(c))
    }

    fn kick_idle_for(&mut self, i: usize) {
        if let Some(c) = self.idle_cpu_for(i, self.tasks[i].prev_cpu) {
            self.next_on(c);
        }
    }

    fn watchdog(&mut self) {
        let now = self.now;
        let stalled = self
            .tasks
            .iter()
            .enumerate()
            .find(|(_, t)| t.state == State::Waiting && now - t.runnable_since >= self.timeout);
        if let Some((i, t)) = stalled {
            let comm = String::from_utf8_lossy(&t.comm)
                .trim_end_matches('\0')
                .to_string();
            self.exit = Some(ExitInfo {
                kind: ExitKind::ErrorStall,
                code: 0,
                reason: "runnable task stall".into(),
                message: format!(
                    "{comm}[{}] failed to run for {} ms (simulated watchdog, timeout {} ms)",
                    PID_BASE + i as i32,
                    (now - t.runnable_since) / 1_000_000,
                    self.timeout / 1_000_000
                ),
                dump: String::new(),
            });
        }
    }

    fn finish(&mut self) {
        self.now = self.end;
        for c in 0..self.cpus.len() {
            if let Some(i) = self.cpus[c].current {
                let g = self.tasks[i].group;
                self.groups[g].runtime_ns += self.now.saturating_sub(self.cpus[c].started);
            }
        }
        self.finished = true;
        self.exit = Some(ExitInfo {
            kind: ExitKind::Done,
            code: 0,
            reason: "simulation finished".into(),
            message: String::new(),
            dump: String::new(),
        });
    }
}

impl Kernel for Simulator {
    fn wait(&mut self) -> Result<Wake, KernelError> {
        // The round is over: the host thread sleeps and gives its CPU back.
        if let Some(c) = self.host_cpu.take() {
            self.cpus[c as usize].host_busy = false;
            self.next_on(c);
        }
        loop {
            if let Some(e) = &self.exit {
                return Ok(Wake::Exit(e.clone()));
            }
            let batch_done = self
                .events
                .peek()
                .is_none_or(|Reverse((t, ..))| *t > self.now);
            if batch_done && (self.kick || self.ring_wake) {
                // The host answers host_latency after it was woken.
                match self.host_due {
                    None if self.host_latency > 0 => {
                        self.host_round_due();
                        // May push the round back until it has a CPU.
                        self.host_takes_cpu(true);
                    }
                    Some(due) if self.now < due => {}
                    _ => {
                        self.host_due = None;
                        self.kick = false;
                        self.ring_wake = false;
                        self.unnotified = false;
                        return Ok(Wake::Work);
                    }
                }
            }
            let Some(Reverse((at, _, ev))) = self.events.pop() else {
                self.finish();
                continue;
            };
            if at > self.end {
                self.finish();
                continue;
            }
            self.now = at;
            self.handle(ev);
        }
    }

    fn dequeue(&mut self) -> Option<QueuedTask> {
        self.ring.pop_front()
    }

    fn dispatch(&mut self, d: &DispatchedTask) -> Result<(), KernelError> {
        let idx = d.pid.checked_sub(PID_BASE).map(|i| i as usize);
        let ok = idx.is_some_and(|i| {
            self.tasks
                .get(i)
                .is_some_and(|t| t.state == State::Waiting && !t.queued_on_dsq)
        });
        let Some(i) = idx.filter(|_| ok) else {
            self.counters.nr_failed_dispatches += 1;
            return Ok(());
        };
        self.counters.nr_user_dispatches += 1;
        let t = &mut self.tasks[i];
        let held_since = t.held_since.take();
        self.held -= usize::from(held_since.is_some());
        // A preempting decision jumps the queue by the plugin's own choice:
        // outside the window, so not counted for or against it.
        t.decided = d.flags & DISPATCH_PREEMPT == 0;
        t.keyed = true;
        t.key_exec = t.exec_runtime;
        t.vtime = d.vtime;
        t.key = d.vtime;
        t.slice = d.slice_ns.max(1);
        t.key_slice = t.slice;
        t.renewals = 0;
        t.queued_on_dsq = true;
        t.class = ((d.flags >> DISPATCH_CLASS_SHIFT) & 0xff).min(MAX_CLASSES as u64 - 1) as usize;
        let prev = t.prev_cpu;
        if let Some(h) = held_since {
            self.count_inversions(h, d.vtime);
        }
        let target = match d.cpu {
            CpuTarget::Cpu(c)
                if (c as usize) < self.cpus.len()
                    && self.can_run(i, c)
                    && !self.cpus[c as usize].taken() =>
            {
                self.cpus[c as usize].local.push_back(i);
                self.local_queued += 1;
                self.next_on(c);
                c
            }
            target => {
                if target != CpuTarget::Any {
                    self.counters.nr_bounce_dispatches += 1;
                }
                self.push_shared(d.vtime, i);
                self.kick_idle_for(i);
                prev
            }
        };
        // Preemption, as the BPF side does it: kick the task's CPU, whose
        // running task goes back to the scheduler and the best queued task runs.
        if d.flags & DISPATCH_PREEMPT != 0 && self.tasks[i].state == State::Waiting {
            self.preemptions += 1;
            self.preempt(target);
        }
        Ok(())
    }

    fn latency(&self) -> Latency {
        *self.class_latency
    }

    fn set_slice_renewal(&mut self, rule: plugin_api::SliceRenewal) {
        self.renewal = rule;
    }

    fn set_wakeup_preemption(&mut self, rule: plugin_api::WakeupPreemption) {
        self.preemption = (rule.classes != 0).then_some(rule);
    }

    /// As the BPF backend, which hears of every task it took back: a task
    /// no longer waiting for a decision (rescued, or decided already).
    fn is_ghost(&self, pid: i32) -> bool {
        let i = pid
            .checked_sub(PID_BASE)
            .and_then(|i| usize::try_from(i).ok());
        i.and_then(|i| self.tasks.get(i))
            .is_none_or(|t| t.state != State::Waiting || t.queued_on_dsq)
    }

    /// As the BPF backend: any CPU; the idle pick happens when the
    /// decision lands (the shared queue insert kicks an idle CPU it may run on).
    fn default_select_cpu(&mut self, _task: &QueuedTask) -> CpuTarget {
        CpuTarget::Any
    }

    fn nr_cpus(&self) -> u32 {
        self.cpus.len() as u32
    }

    fn now_ns(&self) -> u64 {
        self.now
    }

    fn counters(&self) -> Counters {
        Counters {
            nr_queued: self.ring.len() as u64,
            ..self.counters
        }
    }

    fn occupancy(&self) -> Occupancy {
        // Decisions land at once here: nothing is ever on its way.
        Occupancy {
            running: self.counters.nr_running,
            inflight: (self.local_queued + self.shared_len() + self.fallback.len()
                - self.renewed_queued) as u64,
            unsent: 0,
            idle_cpus: self
                .cpus
                .iter()
                .filter(|c| c.current.is_none() && !c.taken())
                .count() as u64,
        }
    }

    fn cgroup_path(&mut self, cgroup_id: u64) -> Option<String> {
        let k = usize::try_from(cgroup_id).ok()?.checked_sub(1)?;
        self.cgroups.get(k).cloned()
    }

    fn task_uid(&mut self, tgid: i32) -> Option<u32> {
        let i = usize::try_from(tgid.checked_sub(PID_BASE)?).ok()?;
        self.tasks.get(i).map(|t| t.uid)
    }

    fn set_scheduled(&mut self, pending: u64) {
        self.counters.nr_scheduled = pending;
        // The heartbeat: a plugin that keeps tasks is asked again soon.
        if pending > 0 && !self.kick_armed {
            self.kick_armed = true;
            self.push(self.now + HEARTBEAT_NS, Event::HostKick);
        }
    }
}

/// Runs `policy` on workload `w` through the host's dispatch loop.
pub fn simulate<P: crate::dispatcher::Policy>(
    plugin: &str,
    policy: P,
    w: &Workload,
    slices: crate::dispatcher::SliceOpts,
    builtin_idle: bool,
) -> Result<report::SimReport, crate::dispatcher::LoopError> {
    let kernel = Simulator::new(w).with_builtin_idle(builtin_idle);
    let mut d = crate::dispatcher::Dispatcher::new(policy, kernel, slices);
    let exit = d.run()?;
    let c = d.kernel.counters();
    let busy = d.stats.busy.as_secs_f64();
    Ok(report::SimReport {
        plugin: plugin.to_string(),
        ejected: exit.kind.is_ejection(),
        exit,
        simulated_ms: d.kernel.now() as f64 / 1e6,
        dispatched: c.nr_user_dispatches,
        kernel_dispatched: c.nr_kernel_dispatches,
        bounced: c.nr_bounce_dispatches,
        preemptions: d.kernel.preemptions,
        failed: c.nr_failed_dispatches,
        congested: c.nr_sched_congested,
        rescues: d.kernel.rescues,
        rescued: d.kernel.rescued,
        decisions_per_sec: if busy > 0.0 {
            d.stats.decisions as f64 / busy
        } else {
            0.0
        },
        groups: d.kernel.report(),
        classes: crate::latency::figures(d.class_names(), &d.kernel.latency()),
        urgent_wakeups: d.kernel.urgent_wakeups,
        quiet_records: d.kernel.quiet_records,
        resumed: d.kernel.resumed,
        renewed: d.kernel.renewed,
        kept: d.kernel.kept,
        host_rounds: d.stats.rounds,
        host_waits: d.kernel.host_waits,
        decided_runs: d.kernel.decided_runs,
        inversions: d.kernel.inversions,
    })
}
