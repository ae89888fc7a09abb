//! `CustomScheduler`, the trait a policy implements, and its FFI-safe box.

use std::any::Any;
use std::cell::Cell;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

// The first layout (a test build) lacks the entries that use some of these.
#[cfg_attr(feature = "first-layout", allow(unused_imports))]
use abi_stable::{
    prefix_type::WithMetadata,
    std_types::{ROption, RResult, RStr, RString, RVec},
    StableAbi,
};

use crate::sched::Sched;
use crate::task::{CpuTarget, QueuedTask};

/// A scheduling policy.
///
/// The host calls, on every wake-up: [`drain_queued_tasks`](Self::drain_queued_tasks)
/// once, then for each task [`select_queued_task`](Self::select_queued_task) →
/// [`time_slice`](Self::time_slice) → [`select_cpu`](Self::select_cpu), until
/// `select_queued_task` returns `None` or every CPU has work; then it reports
/// [`pool_count`](Self::pool_count) to the kernel side. Tasks a plugin keeps in
/// its pool stay runnable: holding one too long gets the scheduler ejected by
/// the kernel's watchdog.
///
/// ```
/// use std::collections::VecDeque;
/// use plugin_api::{CpuTarget, CustomScheduler, QueuedTask, Sched};
///
/// /// First come, first served, on any CPU.
/// #[derive(Default)]
/// struct Fifo(VecDeque<QueuedTask>);
///
/// impl CustomScheduler for Fifo {
///     const NAME: &'static str = "fifo-example";
///     fn new(_config: &str) -> Result<Self, String> {
///         Ok(Fifo::default())
///     }
///     fn drain_queued_tasks(&mut self, sched: &mut Sched<'_>) {
///         while let Some(t) = sched.dequeue_task() {
///             self.0.push_back(t);
///         }
///     }
///     fn select_queued_task(&mut self, _: &mut Sched<'_>) -> Option<QueuedTask> {
///         self.0.pop_front()
///     }
///     fn select_cpu(&mut self, _: &mut Sched<'_>, _: &QueuedTask) -> CpuTarget {
///         CpuTarget::Any
///     }
///     fn pool_count(&self) -> u64 {
///         self.0.len() as u64
///     }
/// }
///
/// // In a plugin crate (crate-type = ["cdylib"]) this one line exports it:
/// plugin_api::export_plugin!(Fifo);
/// ```
pub trait CustomScheduler: Send + Sized + 'static {
    /// Short name of the policy, shown in logs and stats.
    const NAME: &'static str;

    /// Builds the policy from its `[plugin]` config table, given as TOML text
    /// (empty when there is none). Return a one-line message on bad settings.
    fn new(config: &str) -> Result<Self, String>;

    /// Moves the tasks the kernel queued into the plugin's pool, by calling
    /// [`Sched::dequeue_task`] until it returns `None`.
    fn drain_queued_tasks(&mut self, sched: &mut Sched<'_>);

    /// The next task to run, removed from the pool; `None` ends this round.
    fn select_queued_task(&mut self, sched: &mut Sched<'_>) -> Option<QueuedTask>;

    /// Where `task` should run.
    fn select_cpu(&mut self, sched: &mut Sched<'_>, task: &QueuedTask) -> CpuTarget;

    /// Time slice for `task` in ns; 0 lets the host decide
    /// (`max(slice_default / waiting, slice_min)`).
    fn time_slice(&mut self, _sched: &mut Sched<'_>, _task: &QueuedTask) -> u64 {
        0
    }

    /// Called instead of [`select_queued_task`](Self::select_queued_task)
    /// when every CPU is busy: return a task worth preempting a running one
    /// for (removing it from the pool), or `None` (the default) to let it
    /// wait for a CPU to free up. The host then kicks a CPU so the task runs
    /// at once instead of at the next scheduler tick.
    fn select_preempting(&mut self, _sched: &mut Sched<'_>) -> Option<QueuedTask> {
        None
    }

    /// How many tasks the plugin holds.
    fn pool_count(&self) -> u64;

    /// Named counters the plugin publishes (served by the host's stats
    /// endpoint next to its own figures). Called about once a second.
    fn counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }

    /// Names of the classes this policy puts tasks in, for the per-class
    /// wake-up latency the host measures in the kernel (stats `classes`);
    /// [`task_class`](Self::task_class) returns an index into this list.
    /// Called once, after [`new`](Self::new). The default: one class, `all`.
    /// The host keeps the first 16.
    ///
    /// ```
    /// # use plugin_api::{CpuTarget, CustomScheduler, QueuedTask, Sched};
    /// struct TwoClasses;
    /// impl CustomScheduler for TwoClasses {
    ///     const NAME: &'static str = "two";
    ///     fn new(_: &str) -> Result<Self, String> { Ok(TwoClasses) }
    ///     fn drain_queued_tasks(&mut self, _: &mut Sched<'_>) {}
    ///     fn select_queued_task(&mut self, _: &mut Sched<'_>) -> Option<QueuedTask> { None }
    ///     fn select_cpu(&mut self, _: &mut Sched<'_>, _: &QueuedTask) -> CpuTarget { CpuTarget::Any }
    ///     fn pool_count(&self) -> u64 { 0 }
    ///     fn classes(&self) -> Vec<String> {
    ///         vec!["batch".into(), "interactive".into()]
    ///     }
    ///     fn task_class(&self, task: &QueuedTask) -> u32 {
    ///         u32::from(task.comm_str().starts_with("ping"))
    ///     }
    /// }
    /// assert_eq!(TwoClasses.classes().len(), 2);
    /// ```
    fn classes(&self) -> Vec<String> {
        vec!["all".into()]
    }

    /// How each class's tasks are chosen, in words, index for index with
    /// [`classes`](Self::classes) (e.g. `comm =~ ^nginx, uid 1000`): what
    /// `host --explain` prints next to each class. The default: nothing.
    ///
    /// ```
    /// # use plugin_api::{CpuTarget, CustomScheduler, QueuedTask, Sched};
    /// struct Pings;
    /// impl CustomScheduler for Pings {
    ///     const NAME: &'static str = "pings";
    ///     fn new(_: &str) -> Result<Self, String> { Ok(Pings) }
    ///     fn drain_queued_tasks(&mut self, _: &mut Sched<'_>) {}
    ///     fn select_queued_task(&mut self, _: &mut Sched<'_>) -> Option<QueuedTask> { None }
    ///     fn select_cpu(&mut self, _: &mut Sched<'_>, _: &QueuedTask) -> CpuTarget { CpuTarget::Any }
    ///     fn pool_count(&self) -> u64 { 0 }
    ///     fn classes(&self) -> Vec<String> { vec!["other".into(), "ping".into()] }
    ///     fn class_selectors(&self) -> Vec<String> {
    ///         vec!["everything else".into(), "comm starts with ping".into()]
    ///     }
    /// }
    /// assert_eq!(Pings.class_selectors()[1], "comm starts with ping");
    /// ```
    fn class_selectors(&self) -> Vec<String> {
        Vec::new()
    }

    /// The class of `task` (an index into [`classes`](Self::classes)), asked
    /// when the task is dispatched; the task keeps it until it is dispatched
    /// again. The default: 0.
    fn task_class(&self, _task: &QueuedTask) -> u32 {
        0
    }

    /// The rule by which tasks preempt at wake-up in the kernel, without a
    /// round trip through the host (see [`WakeupPreemption`]). Asked at the
    /// start and after every reconfiguration. The default: none do.
    fn wakeup_preemption(&self) -> WakeupPreemption {
        WakeupPreemption::default()
    }

    /// The rule by which the kernel gives a task a new slice when its slice
    /// runs out, without a round trip through the host (see
    /// [`SliceRenewal`]). Asked at the start and after every
    /// reconfiguration. The default: it never does, every slice end comes
    /// back to the plugin.
    fn slice_renewal(&self) -> SliceRenewal {
        SliceRenewal::default()
    }

    /// Applies a new `[plugin]` table at run time. The default refuses, and
    /// the host keeps the current settings.
    fn reconfigure(&mut self, _config: &str) -> Result<(), String> {
        Err(format!(
            "plugin {} cannot be reconfigured at run time",
            Self::NAME
        ))
    }
}

/// Which tasks preempt at wake-up, decided in the kernel the moment they
/// wake (no host round trip): those of the classes in `classes` (bit i:
/// class i, see [`CustomScheduler::task_class`]) whose last run lasted at
/// most `max_burst_ns` — a task that ran longer (a hog) goes through the
/// plugin as usual, which guards against churn. Such a task takes an idle
/// CPU, or a CPU (its last one first) running a task it ranks before, by
/// keys as they stand now: each one's last [`Decision::vtime`] advanced by
/// the CPU time it used since, weighted as vtime (ns × 100 / weight). Never
/// a CPU an RT task or the host holds; with none, it goes through the
/// plugin.
///
/// ```
/// use plugin_api::WakeupPreemption;
/// // Class 1 ("interactive") preempts when its last run was under 1 ms.
/// let rule = WakeupPreemption { classes: 1 << 1, max_burst_ns: 1_000_000 };
/// assert!(rule.covers(1) && !rule.covers(0));
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WakeupPreemption {
    /// Bit i set: tasks of class i may preempt at wake-up.
    pub classes: u64,
    /// The longest last run a preempting task may have had (ns).
    pub max_burst_ns: u64,
}

impl WakeupPreemption {
    /// Whether tasks of `class` may preempt at wake-up.
    pub fn covers(&self, class: u32) -> bool {
        class < 64 && self.classes & (1 << class) != 0
    }
}

/// Which tasks the kernel queues again on its own when their slice runs
/// out: those of the classes in `classes` (bit i: class i, see
/// [`CustomScheduler::task_class`]), at most `max_renewals` times in a row.
/// Such a task goes back into the kernel's queue at its key as it stands
/// now — its last [`Decision::vtime`] advanced by the CPU time it used since,
/// weighted as vtime (ns × 100 / weight) — with its last decision's slice,
/// and the plugin does not see it; after `max_renewals` renewals its record
/// comes to the plugin as usual. That record carries every run since the
/// last one (`exec_runtime`) and, as `vtime`, the last decision's key, so a
/// plugin that charges what ran since its last record on top of that key
/// ends where the kernel's renewals did.
///
/// Never renewed: a task that slept since its last record (its sleeper
/// credit is the plugin's to bound), a task whose weight or allowed CPUs
/// changed since the plugin's last decision on it (or, while it waited in
/// a queue, its cgroup), a task preempted or yielding (it finishes its
/// slice at its key, as always), a task the plugin has not decided on since
/// its last record, and any task while the host holds one (which may rank
/// first). Only for plugins whose order is a vtime charged with CPU time:
/// a plugin that acts on each slice end (demoting a hog, say) must leave
/// those classes out. A renewed task may run ahead of a task the plugin
/// aged ([`AgingPool`](crate::AgingPool)) for at most `max_renewals` slices.
///
/// ```
/// use plugin_api::SliceRenewal;
/// // Class 0 is renewed up to 4 slices in a row.
/// let rule = SliceRenewal { classes: 1, max_renewals: 4 };
/// assert!(rule.covers(0) && !rule.covers(1));
/// assert!(!SliceRenewal::default().covers(0));
/// ```
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SliceRenewal {
    /// Bit i set: tasks of class i may have their slice renewed.
    pub classes: u64,
    /// Renewals in a row before the task's record comes to the plugin
    /// again (0: none).
    pub max_renewals: u64,
}

impl SliceRenewal {
    /// Whether tasks of `class` may have their slice renewed.
    pub fn covers(&self, class: u32) -> bool {
        self.max_renewals > 0 && class < 64 && self.classes & (1 << class) != 0
    }
}

/// One scheduling decision: a task, where it runs, and for how long
/// (`slice_ns` 0: the host decides).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    /// The task's thread id.
    pub pid: i32,
    /// Its vtime as the plugin handed it back (orders the kernel's shared queue).
    pub vtime: u64,
    /// Where it runs.
    pub cpu: CpuTarget,
    /// Its slice in ns, 0 for the host's default.
    pub slice_ns: u64,
    /// Chosen by [`CustomScheduler::select_preempting`]: run it now, even
    /// if that means preempting a running task.
    pub preempt: bool,
}

/// What [`SchedulerBox::next_decision`] returns: the decision, if any, and
/// how many tasks the plugin still holds after it (saving the host a call).
#[repr(C)]
#[derive(StableAbi, Clone, Copy, Debug, PartialEq, Eq)]
pub struct Next {
    /// The decision, or none when the pool has nothing to run.
    pub decision: ROption<Decision>,
    /// [`CustomScheduler::pool_count`] after this decision.
    pub pool_count: u64,
}

/// The next decision of `sched`: [`CustomScheduler::select_queued_task`]
/// (or, when every CPU is `busy`, [`CustomScheduler::select_preempting`]),
/// then [`time_slice`](CustomScheduler::time_slice) and
/// [`select_cpu`](CustomScheduler::select_cpu) for that task. `stage` names
/// the method running, for error messages.
/// The chosen task's class ([`CustomScheduler::task_class`]) goes to `class`.
#[doc(hidden)]
pub fn decide<T: CustomScheduler>(
    sched: &mut T,
    s: &mut Sched<'_>,
    stage: &Cell<&'static str>,
    busy: bool,
    class: &Cell<u32>,
) -> Option<Decision> {
    let task = if busy {
        stage.set("select_preempting");
        sched.select_preempting(s)?
    } else {
        stage.set("select_queued_task");
        sched.select_queued_task(s)?
    };
    stage.set("time_slice");
    let slice_ns = sched.time_slice(s, &task);
    stage.set("select_cpu");
    let cpu = sched.select_cpu(s, &task);
    stage.set("task_class");
    class.set(sched.task_class(&task));
    Some(Decision {
        pid: task.pid,
        vtime: task.vtime,
        cpu,
        slice_ns,
        preempt: busy,
    })
}

/// Opaque stand-in for a plugin's scheduler behind a [`SchedulerBox`].
#[repr(C)]
#[derive(StableAbi)]
pub struct ErasedScheduler {
    _private: [u8; 0],
}

type Call<T> = RResult<T, RString>;

/// Function table behind [`SchedulerBox`]. New entries are only ever appended.
/// Each appended entry is `missing_field(option)`: the host loads plugins
/// built before it was added (and plugins, hosts without it).
///
/// One call per decision (not one per trait method) keeps the cost of the
/// boundary small next to the policy's own work.
#[doc(hidden)]
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = SchedulerVTableRef)))]
#[sabi(missing_field(panic))]
pub struct SchedulerVTable {
    drain_queued_tasks: unsafe extern "C" fn(*mut ErasedScheduler, &mut Sched<'_>) -> Call<u64>,
    next_decision: unsafe extern "C" fn(*mut ErasedScheduler, &mut Sched<'_>, bool) -> Call<Next>,
    pool_count: unsafe extern "C" fn(*mut ErasedScheduler) -> Call<u64>,
    // Outer error: the plugin panicked; inner: it refused the settings.
    reconfigure: unsafe extern "C" fn(*mut ErasedScheduler, RStr<'_>) -> Call<RResult<(), RString>>,
    #[sabi(last_prefix_field)]
    drop: unsafe extern "C" fn(*mut ErasedScheduler),
    // Added after the first layout: a host may meet a plugin without it.
    #[cfg(not(feature = "first-layout"))]
    #[sabi(missing_field(option))]
    counters: unsafe extern "C" fn(*mut ErasedScheduler) -> Call<RVec<NamedCounter>>,
    #[cfg(not(feature = "first-layout"))]
    #[sabi(missing_field(option))]
    classes: unsafe extern "C" fn(*mut ErasedScheduler) -> Call<RVec<RString>>,
    // The class of the task in the last decision (kept by the glue).
    #[cfg(not(feature = "first-layout"))]
    #[sabi(missing_field(option))]
    last_class: unsafe extern "C" fn(*mut ErasedScheduler) -> u32,
    #[cfg(not(feature = "first-layout"))]
    #[sabi(missing_field(option))]
    wakeup_preemption: unsafe extern "C" fn(*mut ErasedScheduler) -> Call<WakeupPreemption>,
    #[cfg(not(feature = "first-layout"))]
    #[sabi(missing_field(option))]
    class_selectors: unsafe extern "C" fn(*mut ErasedScheduler) -> Call<RVec<RString>>,
    #[cfg(not(feature = "first-layout"))]
    #[sabi(missing_field(option))]
    slice_renewal: unsafe extern "C" fn(*mut ErasedScheduler) -> Call<SliceRenewal>,
}

/// A counter a plugin publishes ([`CustomScheduler::counters`]).
#[repr(C)]
#[derive(StableAbi, Clone, Debug, PartialEq, Eq)]
pub struct NamedCounter {
    /// Its name, e.g. `"preemptions"`.
    pub name: RString,
    /// Its value.
    pub value: u64,
}

/// A plugin's scheduler as the host holds it: owned, FFI-safe, and with every
/// panic of the plugin turned into an `Err` naming the method and carrying
/// the panic message.
///
/// After a panic the box is poisoned: every later call fails without entering
/// the plugin again.
#[repr(C)]
#[derive(StableAbi)]
pub struct SchedulerBox {
    this: *mut ErasedScheduler,
    vtable: SchedulerVTableRef,
}

// SAFETY: built only from `T: CustomScheduler`, which is `Send`.
unsafe impl Send for SchedulerBox {}

impl SchedulerBox {
    /// Boxes `sched` behind the stable function table.
    pub fn new<T: CustomScheduler>(sched: T) -> Self {
        let cell = Box::new(Guarded {
            inner: sched,
            poisoned: false,
            last_class: 0,
        });
        SchedulerBox {
            this: Box::into_raw(cell).cast(),
            vtable: VTableFor::<T>::REF,
        }
    }

    /// [`CustomScheduler::drain_queued_tasks`], then the pool count.
    #[inline]
    pub fn drain_queued_tasks(&mut self, sched: &mut Sched<'_>) -> Result<u64, String> {
        // SAFETY: `this` matches `vtable` (both from `new`) and is live until drop.
        plain(unsafe { (self.vtable.drain_queued_tasks())(self.this, sched) })
    }

    /// The next decision (see [`decide`]) and the pool count after it;
    /// `busy`: every CPU is busy, only a preempting task is wanted.
    #[inline]
    pub fn next_decision(&mut self, sched: &mut Sched<'_>, busy: bool) -> Result<Next, String> {
        // SAFETY: as above.
        plain(unsafe { (self.vtable.next_decision())(self.this, sched, busy) })
    }

    /// See [`CustomScheduler::pool_count`].
    #[inline]
    pub fn pool_count(&mut self) -> Result<u64, String> {
        // SAFETY: as above.
        plain(unsafe { (self.vtable.pool_count())(self.this) })
    }

    /// See [`CustomScheduler::classes`]; `["all"]` for a plugin that predates them.
    pub fn classes(&mut self) -> Result<Vec<String>, String> {
        #[cfg(not(feature = "first-layout"))]
        if let Some(f) = self.vtable.classes() {
            // SAFETY: as above.
            let v = plain(unsafe { f(self.this) })?;
            return Ok(v.into_iter().map(RString::into_string).collect());
        }
        Ok(vec!["all".into()])
    }

    /// See [`CustomScheduler::class_selectors`]; empty for a plugin that
    /// predates it.
    pub fn class_selectors(&mut self) -> Result<Vec<String>, String> {
        #[cfg(not(feature = "first-layout"))]
        if let Some(f) = self.vtable.class_selectors() {
            // SAFETY: as above.
            let v = plain(unsafe { f(self.this) })?;
            return Ok(v.into_iter().map(RString::into_string).collect());
        }
        Ok(Vec::new())
    }

    /// See [`CustomScheduler::wakeup_preemption`]; none for a plugin that
    /// predates it.
    pub fn wakeup_preemption(&mut self) -> Result<WakeupPreemption, String> {
        #[cfg(not(feature = "first-layout"))]
        if let Some(f) = self.vtable.wakeup_preemption() {
            // SAFETY: as above.
            return plain(unsafe { f(self.this) });
        }
        Ok(WakeupPreemption::default())
    }

    /// See [`CustomScheduler::slice_renewal`]; none for a plugin that
    /// predates it.
    pub fn slice_renewal(&mut self) -> Result<SliceRenewal, String> {
        #[cfg(not(feature = "first-layout"))]
        if let Some(f) = self.vtable.slice_renewal() {
            // SAFETY: as above.
            return plain(unsafe { f(self.this) });
        }
        Ok(SliceRenewal::default())
    }

    /// The class of the task in the last decision
    /// ([`CustomScheduler::task_class`]); 0 for a plugin that predates classes.
    #[inline]
    pub fn last_class(&mut self) -> u32 {
        #[cfg(not(feature = "first-layout"))]
        if let Some(f) = self.vtable.last_class() {
            // SAFETY: as above.
            return unsafe { f(self.this) };
        }
        0
    }

    /// See [`CustomScheduler::counters`]; empty for a plugin that predates them.
    pub fn counters(&mut self) -> Result<Vec<(String, u64)>, String> {
        #[cfg(feature = "first-layout")]
        return Ok(Vec::new());
        #[cfg(not(feature = "first-layout"))]
        {
            let Some(f) = self.vtable.counters() else {
                return Ok(Vec::new());
            };
            // SAFETY: as above.
            let v = plain(unsafe { f(self.this) })?;
            Ok(v.into_iter()
                .map(|c| (c.name.into_string(), c.value))
                .collect())
        }
    }

    /// See [`CustomScheduler::reconfigure`]. The outer error is a failure of
    /// the plugin (it panicked); the inner one, settings it refused.
    pub fn reconfigure(&mut self, config: &str) -> Result<Result<(), String>, String> {
        // SAFETY: as above.
        let r = plain(unsafe { (self.vtable.reconfigure())(self.this, RStr::from_str(config)) })?;
        Ok(plain(r))
    }
}

impl Drop for SchedulerBox {
    fn drop(&mut self) {
        // SAFETY: `this` came from `Box::into_raw` in `new` and is dropped once.
        unsafe { (self.vtable.drop())(self.this) }
    }
}

fn plain<T>(r: Call<T>) -> Result<T, String> {
    r.into_result().map_err(RString::into_string)
}

struct Guarded<T> {
    inner: T,
    poisoned: bool,
    /// The class of the task in the last decision.
    last_class: u32,
}

/// Runs `f` on the plugin's scheduler, catching any panic so that it never
/// unwinds into the host; `stage` names the trait method `f` is in.
unsafe fn guarded<T: CustomScheduler, R>(
    this: *mut ErasedScheduler,
    stage: &Cell<&'static str>,
    f: impl FnOnce(&mut T) -> R,
) -> Call<R> {
    let g = &mut *this.cast::<Guarded<T>>();
    if g.poisoned {
        return RResult::RErr(RString::from(format!(
            "plugin {} is unusable after an earlier panic",
            T::NAME
        )));
    }
    match catch_unwind(AssertUnwindSafe(|| f(&mut g.inner))) {
        Ok(r) => RResult::ROk(r),
        Err(payload) => {
            g.poisoned = true;
            RResult::RErr(RString::from(format!(
                "plugin {} panicked in {}: {}",
                T::NAME,
                stage.get(),
                panic_message(&*payload)
            )))
        }
    }
}

pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "(non-text panic payload)"
    }
}

struct VTableFor<T>(PhantomData<T>);

impl<T: CustomScheduler> VTableFor<T> {
    const WM: &'static WithMetadata<SchedulerVTable> = &WithMetadata::new(SchedulerVTable {
        drain_queued_tasks: drain_queued_tasks::<T>,
        next_decision: next_decision::<T>,
        pool_count: pool_count::<T>,
        reconfigure: reconfigure::<T>,
        drop: drop_box::<T>,
        #[cfg(not(feature = "first-layout"))]
        counters: counters::<T>,
        #[cfg(not(feature = "first-layout"))]
        classes: classes::<T>,
        #[cfg(not(feature = "first-layout"))]
        last_class: last_class::<T>,
        #[cfg(not(feature = "first-layout"))]
        wakeup_preemption: wakeup_preemption::<T>,
        #[cfg(not(feature = "first-layout"))]
        class_selectors: class_selectors::<T>,
        #[cfg(not(feature = "first-layout"))]
        slice_renewal: slice_renewal::<T>,
    });
    const REF: SchedulerVTableRef = SchedulerVTableRef(Self::WM.static_as_prefix());
}

unsafe extern "C" fn drain_queued_tasks<T: CustomScheduler>(
    this: *mut ErasedScheduler,
    s: &mut Sched<'_>,
) -> Call<u64> {
    let stage = Cell::new("drain_queued_tasks");
    guarded::<T, _>(this, &stage, |p| {
        p.drain_queued_tasks(s);
        stage.set("pool_count");
        p.pool_count()
    })
}
unsafe extern "C" fn next_decision<T: CustomScheduler>(
    this: *mut ErasedScheduler,
    s: &mut Sched<'_>,
    busy: bool,
) -> Call<Next> {
    let stage = Cell::new("select_queued_task");
    let class = Cell::new(0);
    let next = guarded::<T, _>(this, &stage, |p| {
        let decision = decide(p, s, &stage, busy, &class).into();
        stage.set("pool_count");
        Next {
            decision,
            pool_count: p.pool_count(),
        }
    });
    (*this.cast::<Guarded<T>>()).last_class = class.get();
    next
}
unsafe extern "C" fn pool_count<T: CustomScheduler>(this: *mut ErasedScheduler) -> Call<u64> {
    guarded::<T, _>(this, &Cell::new("pool_count"), |p| p.pool_count())
}
unsafe extern "C" fn reconfigure<T: CustomScheduler>(
    this: *mut ErasedScheduler,
    config: RStr<'_>,
) -> Call<RResult<(), RString>> {
    guarded::<T, _>(this, &Cell::new("reconfigure"), |p| {
        p.reconfigure(config.as_str()).map_err(RString::from).into()
    })
}
#[cfg(not(feature = "first-layout"))]
unsafe extern "C" fn counters<T: CustomScheduler>(
    this: *mut ErasedScheduler,
) -> Call<RVec<NamedCounter>> {
    guarded::<T, _>(this, &Cell::new("counters"), |p| {
        p.counters()
            .into_iter()
            .map(|(name, value)| NamedCounter {
                name: name.into(),
                value,
            })
            .collect()
    })
}
#[cfg(not(feature = "first-layout"))]
unsafe extern "C" fn classes<T: CustomScheduler>(
    this: *mut ErasedScheduler,
) -> Call<RVec<RString>> {
    guarded::<T, _>(this, &Cell::new("classes"), |p| {
        p.classes().into_iter().map(RString::from).collect()
    })
}
#[cfg(not(feature = "first-layout"))]
unsafe extern "C" fn class_selectors<T: CustomScheduler>(
    this: *mut ErasedScheduler,
) -> Call<RVec<RString>> {
    guarded::<T, _>(this, &Cell::new("class_selectors"), |p| {
        p.class_selectors().into_iter().map(RString::from).collect()
    })
}
#[cfg(not(feature = "first-layout"))]
unsafe extern "C" fn last_class<T: CustomScheduler>(this: *mut ErasedScheduler) -> u32 {
    (*this.cast::<Guarded<T>>()).last_class
}
#[cfg(not(feature = "first-layout"))]
unsafe extern "C" fn wakeup_preemption<T: CustomScheduler>(
    this: *mut ErasedScheduler,
) -> Call<WakeupPreemption> {
    guarded::<T, _>(this, &Cell::new("wakeup_preemption"), |p| {
        p.wakeup_preemption()
    })
}
#[cfg(not(feature = "first-layout"))]
unsafe extern "C" fn slice_renewal<T: CustomScheduler>(
    this: *mut ErasedScheduler,
) -> Call<SliceRenewal> {
    guarded::<T, _>(this, &Cell::new("slice_renewal"), |p| p.slice_renewal())
}
unsafe extern "C" fn drop_box<T: CustomScheduler>(this: *mut ErasedScheduler) {
    // A panicking Drop must not unwind into the host either; leaking is the lesser harm.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        drop(Box::from_raw(this.cast::<Guarded<T>>()))
    }));
}
