//! The real kernel: bpf/main.bpf.c loaded through libbpf-rs.

pub(crate) mod lookups;
pub mod preflight;

mod skel {
    #![allow(
        clippy::all,
        missing_docs,
        non_camel_case_types,
        non_snake_case,
        dead_code
    )]
    include!(concat!(env!("OUT_DIR"), "/main.skel.rs"));
}

use std::cell::RefCell;
use std::collections::HashMap;
use std::collections::VecDeque;
use std::ffi::CStr;
use std::mem::{size_of, MaybeUninit};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::time::Duration;

use libbpf_rs::skel::{OpenSkel, SkelBuilder};
use libbpf_rs::{Link, OpenObject, RingBuffer, RingBufferBuilder, UserRingBuffer};
use plugin_api::{Counters, CpuTarget, DispatchedTask, QueuedTask};

use crate::kernel::{
    ExitInfo, ExitKind, Kernel, KernelError, Latency, Liveness, Wake, LAT_BUCKETS, MAX_CGROUPS,
    MAX_CLASSES,
};
use crate::occupancy::Occupancy;
use skel::{MainSkel, MainSkelBuilder};

/// Exit code bit asking user space to restart the scheduler (`SCX_ECODE_ACT_RESTART`).
pub const ECODE_RESTART: i64 = 1 << 48;

/// Records in the kernel→host ring (`RTHULHU_RING_RECORDS` in intf.h).
pub const RING_RECORDS: usize = 8192;

/// Size of the kernel's exit dump we keep (`RTHULHU_EXIT_DUMP_LEN` in intf.h).
const DUMP_LEN: u32 = 16384;

/// How long the loop sleeps on the ring at most before it looks at signals
/// and the exit record again.
const POLL: Duration = Duration::from_millis(100);

/// Settings written into the BPF program before it is loaded.
#[derive(Debug, Clone, Copy)]
pub struct BpfOptions {
    /// Slice of the tasks BPF dispatches itself (ns).
    pub slice_ns: u64,
    /// Watchdog: how long a runnable task may wait before the kernel ejects us (ms).
    pub timeout_ms: u32,
    /// Use the kernel's idle-CPU pick in `select_cpu` (and run wakers on idle CPUs at once).
    pub builtin_idle: bool,
    /// Heartbeat period (ns).
    pub heartbeat_ns: u64,
}

/// The kernel→host record (`struct rthulhu_queued` in bpf/intf.h): a
/// [`QueuedTask`] and the generation its decision must carry back.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct QueuedRecord {
    task: QueuedTask,
    gen: u64,
}

/// The host→kernel decision record (`struct rthulhu_dispatched` in bpf/intf.h).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct DispatchedRecord {
    pid: i32,
    cpu: i32,
    slice_ns: u64,
    vtime: u64,
    flags: u64,
    gen: u64,
}

// Layouts shared with bpf/intf.h (which asserts the same sizes on its side).
const _: () = assert!(size_of::<QueuedTask>() == 88);
const _: () = assert!(std::mem::offset_of!(QueuedTask, comm) == 72);
const _: () = assert!(size_of::<QueuedRecord>() == 96);
const _: () = assert!(size_of::<DispatchedRecord>() == 40);

/// Tasks the host expects to hold at most at once before its maps grow
/// (`RTHULHU_MAX_HELD` in intf.h): sized up front, so the loop does not
/// allocate in the steady state.
const MAX_HELD: usize = 65536;

/// Set by SIGINT/SIGTERM.
static STOP: AtomicBool = AtomicBool::new(false);
/// Set by SIGHUP.
static RELOAD: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(sig: libc::c_int) {
    let flag = if sig == libc::SIGHUP { &RELOAD } else { &STOP };
    flag.store(true, Ordering::Relaxed);
}

/// Whether SIGINT or SIGTERM asked the host to stop.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// The kernel's count of CPU hotplug events, 0 when it has none.
fn hotplug_seq() -> u64 {
    std::fs::read_to_string("/sys/kernel/sched_ext/hotplug_seq")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Routes SIGINT and SIGTERM (stop) and SIGHUP (reload the config) to flags
/// the loop checks. No SA_RESTART, so a blocked poll returns at once.
pub fn install_signal_handlers() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_signal as *const () as usize;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// The loaded (and later attached) BPF scheduler.
pub struct BpfKernel<'obj> {
    skel: MainSkel<'obj>,
    ring: RingBuffer<'static>,
    inbox: Rc<RefCell<Inbox>>,
    dispatched: UserRingBuffer,
    link: Option<Link>,
    nr_cpus: u32,
    /// Decisions written to the dispatch ring so far.
    submitted: u64,
    /// Generation of the record each task the plugin holds came with; a
    /// task missing here is a ghost (rescued, dequeued or already decided).
    gens: HashMap<i32, u64>,
    /// Records BPF said it took back (rescued or dequeued), by pid and
    /// generation, not yet matched with the record they cancel.
    cancelled: HashMap<i32, u64>,
    /// Cgroup paths and uids, read by a helper thread.
    lookups: lookups::Lookups,
}

struct Inbox {
    tasks: VecDeque<QueuedRecord>,
    /// (pid, generation) of records BPF took back: a record with pid -P.
    cancels: VecDeque<(i32, u64)>,
    woken: bool,
}

impl<'obj> BpfKernel<'obj> {
    /// Opens and loads the BPF program (verifier included) without attaching it.
    pub fn load(
        obj: &'obj mut MaybeUninit<OpenObject>,
        opts: BpfOptions,
    ) -> Result<Self, KernelError> {
        fn err(what: &'static str) -> impl Fn(libbpf_rs::Error) -> KernelError {
            move |e| KernelError(format!("{what}: {e}"))
        }
        let mut open = MainSkelBuilder::default()
            .open(obj)
            .map_err(err("opening the BPF object"))?;
        let ro = open.maps.rodata_data.as_deref_mut().expect("BPF rodata");
        ro.usersched_tgid = std::process::id() as i32;
        ro.slice_ns = opts.slice_ns;
        ro.heartbeat_ns = opts.heartbeat_ns;
        ro.builtin_idle = opts.builtin_idle;
        // A held task is rescued after a quarter of the watchdog's timeout.
        ro.max_hold_ns = u64::from(opts.timeout_ms) * 1_000_000 / 4;
        // The online CPUs, and a shared queue per last-level cache.
        let llcs = crate::topology::read(std::path::Path::new("/sys/devices/system/cpu"))
            .map_err(KernelError)?;
        ro.nr_llcs = llcs.count;
        for (slot, &llc) in ro.cpu_llc.iter_mut().zip(&llcs.of_cpu) {
            *slot = llc;
        }
        tracing::info!(
            last_level_caches = llcs.count,
            "one shared queue per last-level cache"
        );
        let ops = open.struct_ops.rthulhu_ops_mut();
        ops.timeout_ms = opts.timeout_ms;
        // The kernel writes its debug dump (tasks, queues) for ops.exit.
        ops.exit_dump_len = DUMP_LEN;
        // A CPU that comes or goes between here and the attach makes the
        // kernel end the run at once with a restart request, instead of
        // scheduling with a stale CPU count (0: the kernel has no counter).
        ops.hotplug_seq = hotplug_seq();
        let skel = open.load().map_err(err("loading the BPF program"))?;

        let inbox = Rc::new(RefCell::new(Inbox {
            tasks: VecDeque::with_capacity(crate::bpf::RING_RECORDS),
            cancels: VecDeque::with_capacity(crate::bpf::RING_RECORDS),
            woken: false,
        }));
        let sink = inbox.clone();
        let mut rb = RingBufferBuilder::new();
        rb.add(&skel.maps.queued, move |data: &[u8]| {
            let mut inbox = sink.borrow_mut();
            if data.len() < size_of::<QueuedRecord>() {
                return 0;
            }
            // SAFETY: the record has QueuedRecord's layout (checked above and in intf.h).
            let t: QueuedRecord = unsafe { std::ptr::read_unaligned(data.as_ptr().cast()) };
            if t.task.pid == 0 {
                inbox.woken = true;
            } else if t.task.pid < 0 {
                inbox.cancels.push_back((-t.task.pid, t.gen));
                inbox.woken = true;
            } else {
                inbox.tasks.push_back(t);
            }
            0
        })
        .map_err(err("setting up the queued ring"))?;
        let ring = rb.build().map_err(err("setting up the queued ring"))?;
        let dispatched = UserRingBuffer::new(&skel.maps.dispatched)
            .map_err(err("setting up the dispatch ring"))?;
        Ok(BpfKernel {
            skel,
            ring,
            inbox,
            dispatched,
            link: None,
            nr_cpus: llcs.online,
            submitted: 0,
            gens: HashMap::with_capacity(MAX_HELD),
            cancelled: HashMap::with_capacity(MAX_HELD),
            lookups: lookups::Lookups::start()
                .map_err(|e| KernelError(format!("starting the lookup thread: {e}")))?,
        })
    }

    /// Registers the scheduler with sched_ext: from here on it schedules the machine.
    pub fn attach(&mut self) -> Result<(), KernelError> {
        let link = self
            .skel
            .maps
            .rthulhu_ops
            .attach_struct_ops()
            .map_err(|e| KernelError(format!("attaching the scheduler: {e}")))?;
        self.link = Some(link);
        Ok(())
    }

    /// Unregisters the scheduler; the kernel falls back to its default one.
    pub fn detach(&mut self) {
        self.link.take();
    }

    fn exit_info(&self) -> Option<ExitInfo> {
        let bss = self.skel.maps.bss_data.as_deref()?;
        // Acquire pairs with the exit callback's release store of `kind`,
        // which it writes last.
        let kind = atomic_load(&bss.exit_info.kind);
        if kind == 0 {
            return None;
        }
        let text = |b: &[i8]| {
            let bytes: Vec<u8> = b.iter().map(|&c| c as u8).collect();
            CStr::from_bytes_until_nul(&bytes)
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        Some(ExitInfo {
            kind: ExitKind::from_raw(kind as u64),
            code: bss.exit_info.code,
            reason: text(&bss.exit_info.reason),
            message: text(&bss.exit_info.msg),
            dump: text(&bss.exit_dump),
        })
    }

    fn bss(&self) -> &skel::types::bss {
        self.skel.maps.bss_data.as_deref().expect("BPF bss")
    }
}

impl Kernel for BpfKernel<'_> {
    fn wait(&mut self) -> Result<Wake, KernelError> {
        loop {
            if let Some(info) = self.exit_info() {
                self.detach();
                return Ok(Wake::Exit(info));
            }
            if STOP.load(Ordering::Relaxed) {
                self.detach();
                // The kernel's exit callback ran on detach; report what it saw.
                let info = self.exit_info().unwrap_or(ExitInfo {
                    kind: ExitKind::Unregistered,
                    code: 0,
                    reason: "stopped by signal".into(),
                    message: String::new(),
                    dump: String::new(),
                });
                return Ok(Wake::Exit(info));
            }
            if RELOAD.swap(false, Ordering::Relaxed) {
                return Ok(Wake::Reload);
            }
            {
                let mut inbox = self.inbox.borrow_mut();
                if !inbox.tasks.is_empty() || std::mem::take(&mut inbox.woken) {
                    return Ok(Wake::Work);
                }
            }
            // Blocks in epoll until BPF queues something (or the heartbeat fires).
            let rc = self.ring.poll_raw(POLL);
            if rc < 0 && rc != -libc::EINTR {
                return Err(KernelError(format!(
                    "polling the queued ring: errno {}",
                    -rc
                )));
            }
            if rc == 0 {
                // A quiet spell: one round anyway, so the plugin and the
                // stats hear from us even on an idle machine.
                return Ok(Wake::Work);
            }
        }
    }

    fn dequeue(&mut self) -> Option<QueuedTask> {
        let mut inbox = self.inbox.borrow_mut();
        if inbox.tasks.is_empty() {
            drop(inbox);
            // Pick up what arrived since the last poll, without blocking.
            self.ring.consume_raw();
            inbox = self.inbox.borrow_mut();
        }
        while let Some((pid, gen)) = inbox.cancels.pop_front() {
            if self.gens.get(&pid) == Some(&gen) {
                self.gens.remove(&pid);
            } else {
                // Its record is still on its way: drop it when it comes.
                self.cancelled.insert(pid, gen);
            }
        }
        loop {
            let rec = inbox.tasks.pop_front()?;
            if self.cancelled.get(&rec.task.pid) == Some(&rec.gen) {
                self.cancelled.remove(&rec.task.pid);
                continue;
            }
            self.gens.insert(rec.task.pid, rec.gen);
            return Some(rec.task);
        }
    }

    fn is_ghost(&self, pid: i32) -> bool {
        !self.gens.contains_key(&pid)
    }

    fn dispatch(&mut self, d: &DispatchedTask) -> Result<(), KernelError> {
        let rec = DispatchedRecord {
            pid: d.pid,
            cpu: d.cpu.cpu().map_or(-1, |c| c as i32),
            slice_ns: d.slice_ns,
            vtime: d.vtime,
            flags: d.flags,
            // A task the plugin holds twice (a stale duplicate) gets gen 0,
            // which BPF never hands out: it drops that decision.
            gen: self.gens.remove(&d.pid).unwrap_or(0),
        };
        let mut sample = self
            .dispatched
            .reserve(size_of::<DispatchedRecord>())
            .map_err(|e| KernelError(format!("dispatch ring full: {e}")))?;
        // SAFETY: the sample is exactly one record long.
        unsafe { std::ptr::write_unaligned(sample.as_mut_ptr().cast(), rec) };
        self.dispatched
            .submit(sample)
            .map_err(|e| KernelError(format!("dispatch ring: {e}")))?;
        self.submitted += 1;
        if let Some(b) = self.skel.maps.bss_data.as_deref_mut() {
            atomic_store(&mut b.host_submitted, self.submitted);
        }
        Ok(())
    }

    /// Any CPU: BPF inserts the task into the shared queue and wakes an
    /// idle CPU it may run on, its last one first, when the decision lands
    /// (no syscall per decision, and the pick is fresh, not a round old).
    fn default_select_cpu(&mut self, _task: &QueuedTask) -> CpuTarget {
        CpuTarget::Any
    }

    fn nr_cpus(&self) -> u32 {
        self.nr_cpus
    }

    fn now_ns(&self) -> u64 {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: valid out-pointer; CLOCK_MONOTONIC is what bpf_ktime_get_ns uses.
        unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
        ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
    }

    fn counters(&self) -> Counters {
        let b = self.bss();
        Counters {
            nr_queued: atomic_load(&b.nr_queued) + self.inbox.borrow().tasks.len() as u64,
            nr_scheduled: atomic_load(&b.nr_scheduled),
            nr_running: atomic_load(&b.nr_running),
            nr_online_cpus: u64::from(self.nr_cpus),
            nr_user_dispatches: atomic_load(&b.nr_user_dispatches),
            nr_kernel_dispatches: atomic_load(&b.nr_kernel_dispatches),
            nr_bounce_dispatches: atomic_load(&b.nr_bounce_dispatches),
            nr_failed_dispatches: atomic_load(&b.nr_failed_dispatches),
            nr_sched_congested: atomic_load(&b.nr_sched_congested),
        }
    }

    fn occupancy(&self) -> Occupancy {
        let b = self.bss();
        Occupancy::new(
            atomic_load(&b.nr_running),
            atomic_load(&b.nr_inflight),
            self.submitted,
            atomic_load(&b.nr_drained),
            atomic_load(&b.nr_idle_cpus),
        )
    }

    fn liveness(&self) -> Liveness {
        let b = self.bss();
        Liveness {
            held: atomic_load(&b.nr_held),
            inflight: atomic_load(&b.nr_inflight),
            direct_dispatches: atomic_load(&b.nr_direct_dispatches),
            stale_dispatches: atomic_load(&b.nr_stale_dispatches),
            keep_running: atomic_load(&b.nr_keep_running),
            reenqueued: atomic_load(&b.nr_reenqueued),
            rescues: atomic_load(&b.nr_rescues),
            rescued: atomic_load(&b.nr_rescued),
            bypassed: atomic_load(&b.nr_bypassed),
            idle_kicks: atomic_load(&b.nr_idle_kicks),
            host_wakeups: atomic_load(&b.nr_host_wakeups),
            urgent_wakeups: atomic_load(&b.nr_urgent_wakeups),
            urgent_missed_burst: atomic_load(&b.nr_urgent_missed_burst),
            urgent_missed_sleep: atomic_load(&b.nr_urgent_missed_sleep),
            urgent_missed_backlog: atomic_load(&b.nr_urgent_missed_backlog),
            urgent_missed_cpu: atomic_load(&b.nr_urgent_missed_cpu),
            urgent_missed_key: atomic_load(&b.nr_urgent_missed_key),
            quiet_records: atomic_load(&b.nr_quiet_records),
            resumed: atomic_load(&b.nr_resumed),
            host_waits: atomic_load(&b.nr_host_waits),
            renewed: atomic_load(&b.nr_renewed),
        }
    }

    fn set_wakeup_preemption(&mut self, rule: plugin_api::WakeupPreemption) {
        if let Some(b) = self.skel.maps.bss_data.as_deref_mut() {
            atomic_store(&mut b.urgent_burst_ns, rule.max_burst_ns);
            atomic_store(&mut b.urgent_classes, rule.classes);
        }
    }

    fn set_slice_renewal(&mut self, rule: plugin_api::SliceRenewal) {
        if let Some(b) = self.skel.maps.bss_data.as_deref_mut() {
            // Below the BPF side's "never" mark, so a changed task still
            // comes to the plugin first.
            let max = rule.max_renewals.min(u64::from(u32::MAX - 1));
            atomic_store(&mut b.renew_max, max);
            atomic_store(&mut b.renew_classes, rule.classes);
        }
    }

    fn latency(&self) -> Latency {
        let mut l = Latency::default();
        if let Some(b) = self.skel.maps.bss_data.as_deref() {
            // The sizes in intf.h are ours (a mismatch does not compile).
            let _: &[[u64; LAT_BUCKETS]; MAX_CLASSES] = &b.lat_hist;
            // Counters BPF updates with atomics: each read is whole, the set
            // is not a snapshot (a wake-up may show in the sum before its bucket).
            for c in 0..MAX_CLASSES {
                for (i, v) in b.lat_hist[c].iter().enumerate() {
                    l.hist[c][i] = atomic_load(v);
                }
                l.sum_ns[c] = atomic_load(&b.lat_sum_ns[c]);
                l.max_ns[c] = atomic_load(&b.lat_max_ns[c]);
                l.preempted[c] = atomic_load(&b.nr_preempted[c]);
            }
            let _: &[[u64; LAT_BUCKETS]; MAX_CGROUPS] = &b.cg_hist;
            for s in 0..MAX_CGROUPS {
                l.cgroup_ids[s] = atomic_load(&b.cg_ids[s]);
                for (i, v) in b.cg_hist[s].iter().enumerate() {
                    l.cgroup_hist[s][i] = atomic_load(v);
                }
                l.cgroup_max_ns[s] = atomic_load(&b.cg_max_ns[s]);
            }
            l.cgroups_untracked = atomic_load(&b.nr_cgroups_untracked);
        }
        l
    }

    fn free_cgroup_slot(&mut self, slot: usize) {
        if let Some(b) = self.skel.maps.bss_data.as_deref_mut() {
            if slot < MAX_CGROUPS {
                // Counts first, then the id: a new owner starts from zero
                // (see the tolerated race in main.bpf.c).
                for v in b.cg_hist[slot].iter_mut() {
                    atomic_store(v, 0);
                }
                atomic_store(&mut b.cg_max_ns[slot], 0);
                atomic_store(&mut b.cg_ids[slot], 0);
            }
        }
    }

    fn cgroup_path(&mut self, cgroup_id: u64) -> Option<String> {
        self.lookups.cgroup_path(cgroup_id)
    }

    fn task_uid(&mut self, tgid: i32) -> Option<u32> {
        self.lookups.task_uid(tgid)
    }

    fn set_scheduled(&mut self, pending: u64) {
        let now = self.now_ns();
        if let Some(b) = self.skel.maps.bss_data.as_deref_mut() {
            atomic_store(&mut b.nr_scheduled, pending);
            // The heartbeat reads this to tell a late host from a busy machine.
            atomic_store(&mut b.host_progress_ns, now);
        }
    }
}

/// Reads a word BPF updates concurrently.
fn atomic_load<T: AtomicWord>(v: &T) -> T {
    T::load(v)
}

/// Writes a word BPF reads concurrently.
fn atomic_store<T: AtomicWord>(v: &mut T, x: T) {
    T::store(v, x)
}

/// Words shared with BPF, accessed through the atomic type of their size so
/// that neither side's accesses are torn or reordered away.
trait AtomicWord: Copy {
    fn load(v: &Self) -> Self;
    fn store(v: &mut Self, x: Self);
}

impl AtomicWord for u64 {
    fn load(v: &u64) -> u64 {
        // SAFETY: aligned u64 in the mapped bss, alive as long as `v`.
        unsafe { AtomicU64::from_ptr(v as *const u64 as *mut u64) }.load(Ordering::Acquire)
    }
    fn store(v: &mut u64, x: u64) {
        // SAFETY: as above; `&mut` proves the pointer is valid for writes.
        unsafe { AtomicU64::from_ptr(v) }.store(x, Ordering::Release)
    }
}

impl AtomicWord for i32 {
    fn load(v: &i32) -> i32 {
        // SAFETY: aligned i32 in the mapped bss, alive as long as `v`.
        unsafe { AtomicI32::from_ptr(v as *const i32 as *mut i32) }.load(Ordering::Acquire)
    }
    fn store(v: &mut i32, x: i32) {
        // SAFETY: as above.
        unsafe { AtomicI32::from_ptr(v) }.store(x, Ordering::Release)
    }
}

impl Drop for BpfKernel<'_> {
    fn drop(&mut self) {
        self.detach();
    }
}
