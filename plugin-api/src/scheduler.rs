//! `CustomScheduler`, the trait a policy implements, and its FFI-safe box.

use std::any::Any;
use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};

use abi_stable::{
    prefix_type::WithMetadata,
    std_types::{ROption, RResult, RStr, RString},
    StableAbi,
};

use crate::sched::Sched;
use crate::task::{CpuTarget, QueuedTask};

/// A scheduling policy.
///
/// The host calls, on every wake-up: [`drain_queued_tasks`](Self::drain_queued_tasks)
/// once, then for each task [`select_queued_task`](Self::select_queued_task) →
/// [`time_slice`](Self::time_slice) → [`select_cpu`](Self::select_cpu), until
/// `select_queued_task` returns `None`; then it reports
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

    /// How many tasks the plugin holds.
    fn pool_count(&self) -> u64;

    /// Applies a new `[plugin]` table at run time. The default refuses, and
    /// the host keeps the current settings.
    fn reconfigure(&mut self, _config: &str) -> Result<(), String> {
        Err(format!(
            "plugin {} cannot be reconfigured at run time",
            Self::NAME
        ))
    }
}

/// Opaque stand-in for a plugin's scheduler behind a [`SchedulerBox`].
#[repr(C)]
#[derive(StableAbi)]
pub struct ErasedScheduler {
    _private: [u8; 0],
}

type Call<T> = RResult<T, RString>;

/// Function table behind [`SchedulerBox`]. New entries are only ever appended.
#[doc(hidden)]
#[repr(C)]
#[derive(StableAbi)]
#[sabi(kind(Prefix(prefix_ref = SchedulerVTableRef)))]
#[sabi(missing_field(panic))]
pub struct SchedulerVTable {
    drain_queued_tasks: unsafe extern "C" fn(*mut ErasedScheduler, &mut Sched<'_>) -> Call<()>,
    select_queued_task:
        unsafe extern "C" fn(*mut ErasedScheduler, &mut Sched<'_>) -> Call<ROption<QueuedTask>>,
    select_cpu:
        unsafe extern "C" fn(*mut ErasedScheduler, &mut Sched<'_>, &QueuedTask) -> Call<CpuTarget>,
    time_slice:
        unsafe extern "C" fn(*mut ErasedScheduler, &mut Sched<'_>, &QueuedTask) -> Call<u64>,
    pool_count: unsafe extern "C" fn(*mut ErasedScheduler) -> Call<u64>,
    reconfigure: unsafe extern "C" fn(*mut ErasedScheduler, RStr<'_>) -> Call<()>,
    #[sabi(last_prefix_field)]
    drop: unsafe extern "C" fn(*mut ErasedScheduler),
}

/// A plugin's scheduler as the host holds it: owned, FFI-safe, and with every
/// panic of the plugin turned into an `Err` carrying the panic message.
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
        });
        SchedulerBox {
            this: Box::into_raw(cell).cast(),
            vtable: VTableFor::<T>::REF,
        }
    }

    /// See [`CustomScheduler::drain_queued_tasks`].
    #[inline]
    pub fn drain_queued_tasks(&mut self, sched: &mut Sched<'_>) -> Result<(), String> {
        // SAFETY: `this` matches `vtable` (both from `new`) and is live until drop.
        plain(unsafe { (self.vtable.drain_queued_tasks())(self.this, sched) })
    }

    /// See [`CustomScheduler::select_queued_task`].
    #[inline]
    pub fn select_queued_task(
        &mut self,
        sched: &mut Sched<'_>,
    ) -> Result<Option<QueuedTask>, String> {
        // SAFETY: as above.
        plain(unsafe { (self.vtable.select_queued_task())(self.this, sched) })
            .map(ROption::into_option)
    }

    /// See [`CustomScheduler::select_cpu`].
    #[inline]
    pub fn select_cpu(
        &mut self,
        sched: &mut Sched<'_>,
        task: &QueuedTask,
    ) -> Result<CpuTarget, String> {
        // SAFETY: as above.
        plain(unsafe { (self.vtable.select_cpu())(self.this, sched, task) })
    }

    /// See [`CustomScheduler::time_slice`].
    #[inline]
    pub fn time_slice(&mut self, sched: &mut Sched<'_>, task: &QueuedTask) -> Result<u64, String> {
        // SAFETY: as above.
        plain(unsafe { (self.vtable.time_slice())(self.this, sched, task) })
    }

    /// See [`CustomScheduler::pool_count`].
    #[inline]
    pub fn pool_count(&mut self) -> Result<u64, String> {
        // SAFETY: as above.
        plain(unsafe { (self.vtable.pool_count())(self.this) })
    }

    /// See [`CustomScheduler::reconfigure`].
    pub fn reconfigure(&mut self, config: &str) -> Result<(), String> {
        // SAFETY: as above.
        plain(unsafe { (self.vtable.reconfigure())(self.this, RStr::from_str(config)) })
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
}

/// Runs `f` on the plugin's scheduler, catching any panic so that it never
/// unwinds into the host.
unsafe fn guarded<T: CustomScheduler, R>(
    this: *mut ErasedScheduler,
    what: &str,
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
                "plugin {} panicked in {what}: {}",
                T::NAME,
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
        select_queued_task: select_queued_task::<T>,
        select_cpu: select_cpu::<T>,
        time_slice: time_slice::<T>,
        pool_count: pool_count::<T>,
        reconfigure: reconfigure::<T>,
        drop: drop_box::<T>,
    });
    const REF: SchedulerVTableRef = SchedulerVTableRef(Self::WM.static_as_prefix());
}

unsafe extern "C" fn drain_queued_tasks<T: CustomScheduler>(
    this: *mut ErasedScheduler,
    s: &mut Sched<'_>,
) -> Call<()> {
    guarded::<T, _>(this, "drain_queued_tasks", |p| p.drain_queued_tasks(s))
}
unsafe extern "C" fn select_queued_task<T: CustomScheduler>(
    this: *mut ErasedScheduler,
    s: &mut Sched<'_>,
) -> Call<ROption<QueuedTask>> {
    guarded::<T, _>(this, "select_queued_task", |p| {
        p.select_queued_task(s).into()
    })
}
unsafe extern "C" fn select_cpu<T: CustomScheduler>(
    this: *mut ErasedScheduler,
    s: &mut Sched<'_>,
    t: &QueuedTask,
) -> Call<CpuTarget> {
    guarded::<T, _>(this, "select_cpu", |p| p.select_cpu(s, t))
}
unsafe extern "C" fn time_slice<T: CustomScheduler>(
    this: *mut ErasedScheduler,
    s: &mut Sched<'_>,
    t: &QueuedTask,
) -> Call<u64> {
    guarded::<T, _>(this, "time_slice", |p| p.time_slice(s, t))
}
unsafe extern "C" fn pool_count<T: CustomScheduler>(this: *mut ErasedScheduler) -> Call<u64> {
    guarded::<T, _>(this, "pool_count", |p| p.pool_count())
}
unsafe extern "C" fn reconfigure<T: CustomScheduler>(
    this: *mut ErasedScheduler,
    config: RStr<'_>,
) -> Call<()> {
    match guarded::<T, _>(this, "reconfigure", |p| p.reconfigure(config.as_str())) {
        RResult::ROk(Ok(())) => RResult::ROk(()),
        RResult::ROk(Err(e)) => RResult::RErr(e.into()),
        RResult::RErr(e) => RResult::RErr(e),
    }
}
unsafe extern "C" fn drop_box<T: CustomScheduler>(this: *mut ErasedScheduler) {
    // A panicking Drop must not unwind into the host either; leaking is the lesser harm.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        drop(Box::from_raw(this.cast::<Guarded<T>>()))
    }));
}
