//! `Sched`: the services the host offers a plugin while it schedules.

use std::marker::PhantomData;

// The first layout (a test build) lacks the entries that use some of these.
#[cfg_attr(feature = "first-layout", allow(unused_imports))]
use abi_stable::{
    prefix_type::WithMetadata,
    std_types::{ROption, RString},
    StableAbi,
};

use crate::task::{Counters, CpuTarget, QueuedTask};

/// What a host provides behind [`Sched`].
///
/// The host implements it; a plugin author implements it only to unit-test a
/// policy without a host (see the example on [`Sched::with`]).
pub trait HostServices {
    /// Next task the kernel queued, or `None` when there is none left.
    fn dequeue_task(&mut self) -> Option<QueuedTask>;
    /// The kernel's default idle-CPU pick for `task`: an idle CPU (its
    /// previous one if idle), or [`CpuTarget::Any`] when none is idle.
    fn default_select_cpu(&mut self, task: &QueuedTask) -> CpuTarget;
    /// Number of online CPUs (counted when the scheduler starts: a CPU
    /// that comes or goes restarts it).
    fn nr_cpus(&self) -> u32;
    /// Current time (ns, the clock task timestamps use).
    fn now_ns(&self) -> u64;
    /// Queue counters.
    fn counters(&self) -> Counters;
    /// Path of a cgroup (as under /sys/fs/cgroup, e.g.
    /// `/kubepods.slice/…/pod<UID>/…`) from its id, if known.
    fn cgroup_path(&mut self, _cgroup_id: u64) -> Option<String> {
        None
    }
    /// Real user id of a process, if known.
    fn task_uid(&mut self, _tgid: i32) -> Option<u32> {
        None
    }
}

/// Opaque stand-in for the host's state behind a [`Sched`].
#[repr(C)]
#[derive(StableAbi)]
pub struct HostCtx {
    _private: [u8; 0],
}

/// Function table behind [`Sched`]. New entries are only ever appended.
/// Each appended entry is `missing_field(option)`: the host loads plugins
/// built before it was added (and plugins, hosts without it).
#[doc(hidden)]
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = HostVTableRef)))]
#[sabi(missing_field(panic))]
pub struct HostVTable {
    dequeue_task: unsafe extern "C" fn(*mut HostCtx, &mut QueuedTask) -> bool,
    default_select_cpu: unsafe extern "C" fn(*mut HostCtx, &QueuedTask) -> CpuTarget,
    nr_cpus: unsafe extern "C" fn(*mut HostCtx) -> u32,
    now_ns: unsafe extern "C" fn(*mut HostCtx) -> u64,
    #[sabi(last_prefix_field)]
    counters: unsafe extern "C" fn(*mut HostCtx) -> Counters,
    // Added after the first layout: a plugin may meet a host without them.
    #[cfg(not(feature = "first-layout"))]
    #[sabi(missing_field(option))]
    cgroup_path: unsafe extern "C" fn(*mut HostCtx, u64) -> ROption<RString>,
    #[cfg(not(feature = "first-layout"))]
    #[sabi(missing_field(option))]
    task_uid: unsafe extern "C" fn(*mut HostCtx, i32) -> ROption<u32>,
}

/// Host services handed to every [`CustomScheduler`](crate::CustomScheduler) call.
///
/// ```
/// use plugin_api::{Counters, CpuTarget, HostServices, QueuedTask, Sched};
///
/// struct FakeHost(Vec<QueuedTask>);
/// impl HostServices for FakeHost {
///     fn dequeue_task(&mut self) -> Option<QueuedTask> { self.0.pop() }
///     fn default_select_cpu(&mut self, t: &QueuedTask) -> CpuTarget { CpuTarget::Cpu(t.cpu as u32) }
///     fn nr_cpus(&self) -> u32 { 4 }
///     fn now_ns(&self) -> u64 { 0 }
///     fn counters(&self) -> Counters { Counters::default() }
/// }
///
/// let mut host = FakeHost(vec![QueuedTask { pid: 1, ..Default::default() }]);
/// let got = Sched::with(&mut host, |s| (s.nr_cpus(), s.dequeue_task().map(|t| t.pid)));
/// assert_eq!(got, (4, Some(1)));
/// ```
#[repr(C)]
#[derive(StableAbi)]
pub struct Sched<'a> {
    ctx: *mut HostCtx,
    vtable: HostVTableRef,
    _borrow: PhantomData<&'a mut HostCtx>,
}

impl Sched<'_> {
    /// Runs `f` with a `Sched` backed by `host`.
    pub fn with<H: HostServices, R>(host: &mut H, f: impl FnOnce(&mut Sched<'_>) -> R) -> R {
        let mut sched = Sched {
            ctx: (host as *mut H).cast(),
            vtable: VTableFor::<H>::REF,
            _borrow: PhantomData,
        };
        f(&mut sched)
    }

    /// Next task the kernel queued, or `None` when there is none left.
    #[inline]
    pub fn dequeue_task(&mut self) -> Option<QueuedTask> {
        let mut t = QueuedTask::default();
        // SAFETY: ctx and vtable were paired in `Sched::with` and outlive self.
        unsafe { (self.vtable.dequeue_task())(self.ctx, &mut t) }.then_some(t)
    }

    /// The kernel's default idle-CPU pick for `task`: an idle CPU (its
    /// previous one if idle), or [`CpuTarget::Any`] when none is idle.
    #[inline]
    pub fn default_select_cpu(&mut self, task: &QueuedTask) -> CpuTarget {
        // SAFETY: as in `dequeue_task`.
        unsafe { (self.vtable.default_select_cpu())(self.ctx, task) }
    }

    /// Number of online CPUs (counted when the scheduler starts: a CPU
    /// that comes or goes restarts it).
    #[inline]
    pub fn nr_cpus(&self) -> u32 {
        // SAFETY: as in `dequeue_task`.
        unsafe { (self.vtable.nr_cpus())(self.ctx) }
    }

    /// Current time (ns, the clock task timestamps use).
    #[inline]
    pub fn now_ns(&self) -> u64 {
        // SAFETY: as in `dequeue_task`.
        unsafe { (self.vtable.now_ns())(self.ctx) }
    }

    /// Queue counters (queued, scheduled, running, dispatches…).
    #[inline]
    pub fn counters(&self) -> Counters {
        // SAFETY: as in `dequeue_task`.
        unsafe { (self.vtable.counters())(self.ctx) }
    }

    /// Path of a cgroup from its id ([`QueuedTask::cgroup_id`]), as under
    /// /sys/fs/cgroup; `None` if not known yet (the host looks it up on
    /// another thread and knows it a moment later: ask again then, and do not
    /// cache `None`) or if the host predates this service. Cache a path.
    pub fn cgroup_path(&mut self, cgroup_id: u64) -> Option<String> {
        #[cfg(feature = "first-layout")]
        return {
            let _ = cgroup_id;
            None
        };
        #[cfg(not(feature = "first-layout"))]
        {
            let f = self.vtable.cgroup_path()?;
            // SAFETY: as in `dequeue_task`.
            unsafe { f(self.ctx, cgroup_id) }
                .into_option()
                .map(RString::into_string)
        }
    }

    /// Real user id of process `tgid`; `None` if not known yet (looked up on
    /// another thread, like [`Sched::cgroup_path`]: ask again later) or if
    /// the process is gone.
    pub fn task_uid(&mut self, tgid: i32) -> Option<u32> {
        #[cfg(feature = "first-layout")]
        return {
            let _ = tgid;
            None
        };
        #[cfg(not(feature = "first-layout"))]
        {
            let f = self.vtable.task_uid()?;
            // SAFETY: as in `dequeue_task`.
            unsafe { f(self.ctx, tgid) }.into_option()
        }
    }
}

struct VTableFor<H>(PhantomData<H>);

impl<H: HostServices> VTableFor<H> {
    const WM: &'static WithMetadata<HostVTable> = &WithMetadata::new(HostVTable {
        dequeue_task: dequeue_task::<H>,
        default_select_cpu: default_select_cpu::<H>,
        nr_cpus: nr_cpus::<H>,
        now_ns: now_ns::<H>,
        counters: counters::<H>,
        #[cfg(not(feature = "first-layout"))]
        cgroup_path: cgroup_path::<H>,
        #[cfg(not(feature = "first-layout"))]
        task_uid: task_uid::<H>,
    });
    const REF: HostVTableRef = HostVTableRef(Self::WM.static_as_prefix());
}

// The host's callbacks. `ctx` is always the `H` that `Sched::with` erased.
unsafe extern "C" fn dequeue_task<H: HostServices>(
    ctx: *mut HostCtx,
    out: &mut QueuedTask,
) -> bool {
    match (*ctx.cast::<H>()).dequeue_task() {
        Some(t) => {
            *out = t;
            true
        }
        None => false,
    }
}
unsafe extern "C" fn default_select_cpu<H: HostServices>(
    ctx: *mut HostCtx,
    t: &QueuedTask,
) -> CpuTarget {
    (*ctx.cast::<H>()).default_select_cpu(t)
}
unsafe extern "C" fn nr_cpus<H: HostServices>(ctx: *mut HostCtx) -> u32 {
    (*ctx.cast::<H>()).nr_cpus()
}
unsafe extern "C" fn now_ns<H: HostServices>(ctx: *mut HostCtx) -> u64 {
    (*ctx.cast::<H>()).now_ns()
}
unsafe extern "C" fn counters<H: HostServices>(ctx: *mut HostCtx) -> Counters {
    (*ctx.cast::<H>()).counters()
}
#[cfg(not(feature = "first-layout"))]
unsafe extern "C" fn cgroup_path<H: HostServices>(ctx: *mut HostCtx, id: u64) -> ROption<RString> {
    (*ctx.cast::<H>()).cgroup_path(id).map(RString::from).into()
}
#[cfg(not(feature = "first-layout"))]
unsafe extern "C" fn task_uid<H: HostServices>(ctx: *mut HostCtx, tgid: i32) -> ROption<u32> {
    (*ctx.cast::<H>()).task_uid(tgid).into()
}
