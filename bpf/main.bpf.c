// SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause
/*
 * Rthulhu's BPF half: a sched_ext scheduler that asks the user-space host
 * which task runs next, and never lets a CPU idle for the host's sake.
 *
 * Who waits on user space. Ordinary tasks: enqueue sends a record to the
 * host ("queued" ring) and the task is *held* until the host's decision comes
 * back through the "dispatched" user ring, is drained by ops.dispatch and
 * inserted into a shared queue (ordered by the plugin's vtime) or a CPU's
 * local queue. There is a shared queue per last-level cache: a decided task
 * goes to its last CPU's, and a CPU serves its own first and takes from the
 * others only when its own is empty, or when the heartbeat saw another's
 * wait unserved for a heartbeat (its CPUs all taken by RT tasks): the
 * plugin's order holds within a cache. Never: the host's own threads (it cannot wait on itself),
 * kernel threads (memory reclaim, RCU, writeback and the sched_ext watchdog's
 * work item run in them, and the host's syscalls may wait on any of them),
 * tasks handed back from a CPU they could not run on at once (an RT/DL task
 * took it: local queues hold only a task that runs now, see .flags), and a
 * task preempted before its slice ran out: it already had its decision, so
 * it goes back into the shared queue at that decision's key for the rest of
 * its slice (resume_preempted; a yield looks the same to us and resumes too),
 * nor, when the plugin's renewal rule covers it, a task whose slice ran out
 * (renew_slice: a few times in a row, at its key as it stands now).
 *
 * Liveness. A CPU that finds nothing to run while tasks are held wakes the
 * host, and so does the heartbeat timer (every heartbeat_ns) while it holds
 * any. If a CPU has been idle for a whole heartbeat while tasks are held (one
 * idle since the attach, which ops.update_idle never reported, counts from
 * the first heartbeat that found it in the kernel's idle mask), the
 * held tasks that waited that long are *rescued*: moved into the fallback
 * queue, which CPUs serve in turn with the shared one. If the host has not finished a round
 * for two heartbeats while it holds tasks, it is late (stopped, stuck in a
 * plugin, too slow): all it holds is rescued, and new tasks *bypass* it until
 * it finishes a round again. A task held for a quarter of the watchdog's
 * timeout is rescued whatever the CPUs do (a plugin that hoards). The
 * heartbeat also kicks idle CPUs while any queue has work, so an idle CPU the
 * kernel's idle pick missed does not stay idle. A decision that arrives for a
 * task that was rescued, dequeued or queued again since its record carries an
 * old generation number and is dropped. The kernel watchdog stays a last
 * resort for a broken kernel side, not a mechanism. Under a backlog with
 * every CPU's next task queued, records reach the host without waking it
 * (a wake-up preempts a task, or cuts its slice: host_may_wait); the first
 * CPU to run that queue low wakes it, and a quiet record missed by a race
 * waits at most a heartbeat.
 *
 * Tolerated races: counters are updated with atomics but read without a
 * snapshot, so the host's view of occupancy may be off by a task or two for
 * a moment (it only sizes how many decisions a round hands over); an idle
 * CPU's timestamp may be a few microseconds stale (it only times rescues).
 */
#include "vmlinux.h"
#include "intf.h"

/* --- the few BPF definitions we use, declared here ------------------------ */

#define SEC(name) __attribute__((section(name), used))
#define __ksym __attribute__((section(".ksyms")))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __always_inline inline __attribute__((always_inline))

#define PF_KTHREAD 0x00200000
#define MAX_RT_PRIO 100 /* prio below this: an RT or deadline task */
#define CLOCK_MONOTONIC 1

/* Helpers, by their ids from the kernel's enum bpf_func_id (in vmlinux.h). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) = (void *)BPF_FUNC_map_update_elem;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_delete_elem;
static long (*bpf_for_each_map_elem)(void *map, void *callback_fn, void *ctx, __u64 flags) = (void *)BPF_FUNC_for_each_map_elem;
static long (*bpf_loop)(__u32 nr_loops, void *callback_fn, void *ctx, __u64 flags) = (void *)BPF_FUNC_loop;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static __u32 (*bpf_get_smp_processor_id)(void) = (void *)BPF_FUNC_get_smp_processor_id;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)BPF_FUNC_ringbuf_reserve;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)BPF_FUNC_ringbuf_submit;
static __u64 (*bpf_ringbuf_query)(void *ringbuf, __u64 flags) = (void *)BPF_FUNC_ringbuf_query;
static long (*bpf_user_ringbuf_drain)(void *map, void *callback_fn, void *ctx, __u64 flags) = (void *)BPF_FUNC_user_ringbuf_drain;
static long (*bpf_dynptr_read)(void *dst, __u32 len, const struct bpf_dynptr *src, __u32 offset, __u64 flags) = (void *)BPF_FUNC_dynptr_read;
static long (*bpf_timer_init)(struct bpf_timer *timer, void *map, __u64 flags) = (void *)BPF_FUNC_timer_init;
static long (*bpf_timer_set_callback)(struct bpf_timer *timer, void *callback_fn) = (void *)BPF_FUNC_timer_set_callback;
static long (*bpf_timer_start)(struct bpf_timer *timer, __u64 nsecs, __u64 flags) = (void *)BPF_FUNC_timer_start;
static long (*bpf_probe_read_kernel_str)(void *dst, __u32 size, const void *unsafe_ptr) = (void *)BPF_FUNC_probe_read_kernel_str;
static void *(*bpf_task_storage_get)(void *map, struct task_struct *task, void *value, __u64 flags) = (void *)BPF_FUNC_task_storage_get;

/* sched_ext and task kfuncs (kernel 7.x names). */
extern s32 scx_bpf_select_cpu_dfl(struct task_struct *p, s32 prev_cpu, u64 wake_flags, bool *is_idle) __ksym;
extern void scx_bpf_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym;
extern void scx_bpf_dsq_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime,
				     u64 enq_flags) __ksym;
extern bool scx_bpf_dsq_move_to_local(u64 dsq_id) __ksym;
extern s32 scx_bpf_create_dsq(u64 dsq_id, s32 node) __ksym;
extern void scx_bpf_kick_cpu(s32 cpu, u64 flags) __ksym;
extern u32 scx_bpf_dispatch_nr_slots(void) __ksym;
extern s32 scx_bpf_dsq_nr_queued(u64 dsq_id) __ksym;
extern s32 scx_bpf_pick_idle_cpu(const struct cpumask *cpus_allowed, u64 flags) __ksym;
extern s32 scx_bpf_pick_any_cpu(const struct cpumask *cpus_allowed, u64 flags) __ksym;
extern struct task_struct *scx_bpf_cpu_curr(s32 cpu) __ksym;
extern bool scx_bpf_test_and_clear_cpu_idle(s32 cpu) __ksym;
extern const struct cpumask *scx_bpf_get_idle_cpumask(void) __ksym;
extern void scx_bpf_put_idle_cpumask(const struct cpumask *cpumask) __ksym;
extern u32 scx_bpf_nr_cpu_ids(void) __ksym;
extern s32 scx_bpf_task_cpu(const struct task_struct *p) __ksym;
extern bool scx_bpf_task_set_dsq_vtime(struct task_struct *p, u64 vtime) __ksym;
extern bool scx_bpf_task_set_slice(struct task_struct *p, u64 slice) __ksym;
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;
extern bool bpf_cpumask_test_cpu(u32 cpu, const struct cpumask *cpumask) __ksym;
extern u32 bpf_cpumask_first(const struct cpumask *cpumask) __ksym;
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;

char _license[] SEC("license") = "Dual BSD/GPL";

/* --- settings, written by the host before load ---------------------------- */

const volatile s32 usersched_tgid;	/* the host's process: never queued to itself */
const volatile u64 slice_ns = 5000000;	/* slice for tasks BPF dispatches itself */
const volatile u64 heartbeat_ns = 10000000;
const volatile bool builtin_idle = true; /* use the kernel's idle-CPU pick */
/* A task the host holds this long is rescued even if no CPU idles (a plugin
 * that hoards must not get the scheduler ejected); the host sets it to a
 * quarter of the watchdog's timeout. */
const volatile u64 max_hold_ns = 1250000000;
/* Last-level caches (at least 1) and each CPU's, from sysfs. */
const volatile u32 nr_llcs = 1;
const volatile u32 cpu_llc[RTHULHU_MAX_CPUS];

/* --- written by the host --------------------------------------------------- */

/* When the host last finished a round (bpf_ktime_get_ns clock). */
volatile u64 host_progress_ns;
/* Decisions the host has written into the dispatched ring so far. */
volatile u64 host_submitted;
/* Tasks the plugin says it holds (stats only: BPF counts its own, nr_held). */
volatile u64 nr_scheduled;

/* --- counters, read by the host --------------------------------------------- */

volatile u64 nr_held;		/* records out to the host, not yet decided on */
volatile u64 nr_inflight;	/* inserted on the host's word, not yet running */
volatile u64 nr_running;	/* tasks running, the host's own threads aside */
volatile u64 nr_drained;	/* decisions read from the dispatched ring */
volatile u64 nr_idle_cpus;	/* CPUs idle now */
volatile u64 nr_user_dispatches, nr_kernel_dispatches, nr_direct_dispatches;
volatile u64 nr_bounce_dispatches, nr_failed_dispatches, nr_stale_dispatches;
volatile u64 nr_sched_congested, nr_keep_running, nr_reenqueued;
volatile u64 nr_rescues, nr_rescued, nr_bypassed, nr_idle_kicks, nr_host_wakeups;
volatile u64 nr_shared_queued, nr_fallback_queued, nr_queued;
volatile u64 nr_quiet_records;	/* records sent without waking the host */
volatile u64 nr_resumed;	/* preempted tasks put back with their key, no round trip */
volatile u64 nr_host_waits;	/* host wake-ups that waited for a switch, not preempting */

/* Records were sent without waking the host: the next wake-up must be forced. */
volatile u32 host_unnotified;
/* 1 + the CPU whose local queue the host waits in (host_may_wait); 0: none. */
volatile u32 host_wait_cpu;

/* Set by the heartbeat, taken by the first CPU through ops.dispatch. */
volatile u32 rescue_pending;
/* How long a held task must have waited to be rescued this time. */
volatile u64 rescue_min_wait;
/* While set, new tasks skip the host (it was late for a whole heartbeat). */
volatile u32 bypass;
/* When a CPU last took from (or found empty) each cache's shared queue, and
 * the queues the heartbeat found waiting unserved for a heartbeat (a bit
 * each): any CPU serves those first. */
u64 llc_served_ns[RTHULHU_MAX_LLCS];
volatile u64 llc_starved;
/* Which of the fallback and shared queues a CPU looks at first (they alternate). */
u64 dispatch_turn;
/* When the heartbeat last looked for a task held past max_hold_ns. */
u64 last_hold_scan;
/* The last heartbeat that found the host with nothing to do (see heartbeat_fn). */
u64 host_idle_ns;

/*
 * Wake-up latency per class (ops.runnable to ops.running), the sum and the
 * longest wait, and preemptions suffered (stopped while runnable with slice
 * left). Every task counts, those that never pass through user space too;
 * a task's class is the one the host gave its last decision (0 before any).
 * The max is updated without a lock: two CPUs racing may keep the smaller
 * of two new maxima, which a later longer wait corrects.
 */
u64 lat_hist[RTHULHU_MAX_CLASSES][RTHULHU_LAT_BUCKETS];
u64 lat_sum_ns[RTHULHU_MAX_CLASSES];
u64 lat_max_ns[RTHULHU_MAX_CLASSES];
u64 nr_preempted[RTHULHU_MAX_CLASSES];

/*
 * The same histograms per cgroup, for at most RTHULHU_MAX_CGROUPS cgroups at
 * once: a cgroup's slot is found by a short linear probe from a hash of its
 * id and claimed with a compare-and-swap; a wake-up that finds no slot is
 * counted in nr_cgroups_untracked. The host frees the slots of cgroups that
 * stayed quiet (zeroes the counts, then the id). Tolerated race: a wake-up
 * recorded while its slot is freed may be lost or counted for the next
 * owner (these are statistics).
 */
#define CGROUP_PROBES 8
u64 cg_ids[RTHULHU_MAX_CGROUPS];
u64 cg_hist[RTHULHU_MAX_CGROUPS][RTHULHU_LAT_BUCKETS];
u64 cg_max_ns[RTHULHU_MAX_CGROUPS];
volatile u64 nr_cgroups_untracked;

/*
 * The plugin's wake-up preemption rule (written by the host): a task of a
 * class whose bit is set in urgent_classes, waking after a last run of at
 * most urgent_burst_ns, preempts at once without asking the host.
 */
volatile u64 urgent_classes;
volatile u64 urgent_burst_ns;
/*
 * The plugin's slice renewal rule (written by the host): a task of a class
 * whose bit is set in renew_classes may be given a new slice at most
 * renew_max times in a row without the host (renew_slice).
 */
volatile u64 renew_classes;
volatile u64 renew_max;
volatile u64 nr_renewed;
volatile u64 nr_urgent_wakeups;
/* Wake-ups of covered tasks that went to the host instead, by the guard that
 * sent them: last run too long, sleep too short, backlog, no CPU to take. */
volatile u64 nr_urgent_missed_burst, nr_urgent_missed_sleep;
volatile u64 nr_urgent_missed_backlog, nr_urgent_missed_cpu, nr_urgent_missed_key;

/* When each CPU went idle (0: busy). */
u64 idle_since[RTHULHU_MAX_CPUS];
/* When the heartbeat first found a CPU idle in the kernel's mask that
 * idle_since does not know is idle (0: not so); only the heartbeat writes
 * it. */
u64 idle_unnoticed_since[RTHULHU_MAX_CPUS];
/* Per CPU, the task this CPU's latest wake-up woke with SCX_WAKE_SYNC (its
 * waker is about to sleep), from ops.select_cpu to that wake-up's
 * ops.enqueue, which runs on the same CPU (0: none). */
s32 sync_wakee[RTHULHU_MAX_CPUS];

struct rthulhu_exit exit_info;
/* The kernel's debug dump at exit (ops.exit_dump_len bytes, set by the host). */
char exit_dump[RTHULHU_EXIT_DUMP_LEN];

/* --- maps ------------------------------------------------------------------ */

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, RTHULHU_RING_RECORDS * 128);
} queued SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, RTHULHU_RING_RECORDS * 64);
} dispatched SEC(".maps");

struct heartbeat {
	struct bpf_timer timer;
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct heartbeat);
} heartbeat SEC(".maps");

/* Per-task state. */
struct task_ctx {
	u64 start_ts;	/* when it last started running */
	u64 stop_ts;	/* when it last stopped */
	u64 gen;	/* bumped for every record sent to the host */
	u32 held;	/* a record is out and nothing has dispatched the task yet */
	u32 inflight;	/* inserted on the host's word, not yet running */
	u32 counted;	/* in nr_running */
	u32 class;	/* the plugin's class for it (< RTHULHU_MAX_CLASSES) */
	u64 runnable_at; /* when it became runnable, 0 once it ran */
	u64 slice_at_start; /* its slice when it last started running */
	u32 slept;	/* woke from sleep since its last record (RTHULHU_ENQ_SLEPT) */
	u32 decided;	/* the host has decided on it at least once: dsq_vtime is its key */
	u64 resume_ns;	/* slice left when it was last preempted (0: it was not) */
	u64 key_ran;	/* ran since its key was given, up to its last stop */
	u64 key;	/* its last host decision's key: what its record reports */
	u64 key_slice;	/* that decision's slice */
	u32 renewals;	/* slices renewed since the host's last decision (RENEW_NEVER: no more) */
};

/* Renewals value that sends the next record to the host whatever the rule. */
#define RENEW_NEVER 0xffffffffU

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_ctx);
} task_ctxs SEC(".maps");

/* The tasks the host holds, so that a rescue can find them. */
struct held_task {
	u64 gen;
	u64 since;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, RTHULHU_MAX_HELD);
	__type(key, s32);
	__type(value, struct held_task);
} held_tasks SEC(".maps");

/* --- helpers --------------------------------------------------------------- */

static __always_inline bool is_host_thread(const struct task_struct *p)
{
	return p->tgid == usersched_tgid;
}

/* Tasks that never wait on user space (see the header). */
static __always_inline bool dispatch_in_kernel(const struct task_struct *p)
{
	return is_host_thread(p) || (p->flags & PF_KTHREAD);
}

static __always_inline u64 pending_records(void)
{
	return bpf_ringbuf_query(&queued, BPF_RB_AVAIL_DATA) / sizeof(struct rthulhu_queued);
}

/* The shared queue of cpu's last-level cache. */
static __always_inline u64 shared_dsq(s32 cpu)
{
	u32 llc = cpu >= 0 && cpu < RTHULHU_MAX_CPUS ? cpu_llc[cpu] : 0;

	return RTHULHU_SHARED_DSQ + (llc < nr_llcs && llc < RTHULHU_MAX_LLCS ? llc : 0);
}

/* Tasks in all the shared queues. */
static u64 shared_queued(void)
{
	u64 n = 0;
	u32 i;

	for (i = 0; i < RTHULHU_MAX_LLCS && i < nr_llcs; i++)
		n += scx_bpf_dsq_nr_queued(RTHULHU_SHARED_DSQ + i);
	return n;
}

/* The shared queue p goes to: its last CPU's, or, when it may no longer run
 * there (its affinity changed), that of a CPU it may use, so that the CPUs
 * of that queue's cache can run it. */
static u64 task_shared_dsq(const struct task_struct *p)
{
	s32 cpu = scx_bpf_task_cpu(p);

	if (nr_llcs <= 1)
		return RTHULHU_SHARED_DSQ;
	/* Not an idle pick: that would claim an idle CPU nobody kicks. */
	if (!bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
		cpu = bpf_cpumask_first(p->cpus_ptr);
	return shared_dsq(cpu);
}

/* Takes the next task this CPU may run from cache llc's shared queue. */
static bool move_from(u32 llc)
{
	u64 now = bpf_ktime_get_ns();

	if (llc >= RTHULHU_MAX_LLCS)
		return false;
	/* Written at most once a millisecond: every CPU's dispatch passes here. */
	if ((s64)(now - llc_served_ns[llc]) > 1000000)
		llc_served_ns[llc] = now;
	if (!scx_bpf_dsq_move_to_local(RTHULHU_SHARED_DSQ + llc))
		return false;
	if (llc_starved & (1ULL << llc))
		__sync_fetch_and_and(&llc_starved, ~(1ULL << llc));
	return true;
}

/*
 * Moves the next task of a shared queue to this CPU: first of a queue the
 * heartbeat found unserved (every CPU of its cache held by RT tasks, say),
 * then of this CPU's cache's, else of another cache's (bounded: one look at
 * each of at most RTHULHU_MAX_LLCS queues). Taking from others only when
 * the own queue is empty keeps tasks near their caches, while no CPU idles
 * for lack of a task queued elsewhere.
 */
static bool move_shared(s32 cpu)
{
	u32 own = shared_dsq(cpu) - RTHULHU_SHARED_DSQ, i;
	u64 starved = llc_starved;

	for (i = 0; starved && i < RTHULHU_MAX_LLCS && i < nr_llcs; i++)
		if ((starved & (1ULL << i)) && move_from(i))
			return true;
	if (move_from(own))
		return true;
	for (i = 1; i < RTHULHU_MAX_LLCS && i < nr_llcs; i++)
		if (move_from((own + i) % nr_llcs))
			return true;
	return false;
}

/* Marks the shared queues left unserved for a heartbeat while holding tasks. */
static void find_starved_llcs(u64 now)
{
	u64 starved = 0;
	u32 i;

	for (i = 0; i < RTHULHU_MAX_LLCS && i < nr_llcs; i++)
		if ((s64)(now - llc_served_ns[i]) > (s64)heartbeat_ns &&
		    scx_bpf_dsq_nr_queued(RTHULHU_SHARED_DSQ + i))
			starved |= 1ULL << i;
	llc_starved = starved;
}

/* Nothing waits for a CPU in our custody: a waking task may take an idle one. */
static __always_inline bool nothing_waits(void)
{
	return !nr_held && !scx_bpf_dsq_nr_queued(RTHULHU_FALLBACK_DSQ) && !shared_queued();
}

/*
 * Wakes the host with an empty record; `force`: even if records already wait
 * (waiting records woke it already, unless they were sent quietly).
 */
static void wake_host(bool force)
{
	struct rthulhu_queued *r;

	if (!force && !host_unnotified && bpf_ringbuf_query(&queued, BPF_RB_AVAIL_DATA))
		return;
	host_unnotified = 0;
	r = bpf_ringbuf_reserve(&queued, sizeof(*r), 0);
	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	bpf_ringbuf_submit(r, BPF_RB_FORCE_WAKEUP);
	__sync_fetch_and_add(&nr_host_wakeups, 1);
}

/*
 * Whether a new record may reach the host without waking it. A host
 * wake-up preempts a running task or cuts its slice (the host runs at once
 * or within HOST_WAIT_NS, see enqueue_host_thread), so under a
 * hackbench-like load, where every message wakes a task, waking it per
 * record costs a preemption per message. It
 * need not wake while there is a backlog (more than two tasks per CPU held:
 * the regime in which nothing preempts, see urgent_wakeup) and every CPU has
 * its next task queued (no idle CPU, a task per CPU in the shared queue):
 * the first CPU that takes the shared queue below that wakes it
 * (ops.dispatch), as does any CPU that finds nothing and the heartbeat.
 */
static __always_inline bool quiet_record(void)
{
	u64 nr = scx_bpf_nr_cpu_ids();

	return nr_held > 2 * nr && !nr_idle_cpus && shared_queued() >= nr;
}

/* Wakes an idle CPU that may run p, its last CPU first; false if none is idle. */
static bool kick_idle_cpu(const struct task_struct *p)
{
	s32 cpu = scx_bpf_task_cpu(p);

	if (!bpf_cpumask_test_cpu(cpu, p->cpus_ptr) || !scx_bpf_test_and_clear_cpu_idle(cpu))
		cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (cpu < 0)
		return false;
	scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
	return true;
}

/* An RT or deadline task holds the CPU: nothing in its local queue runs soon. */
static bool cpu_taken(s32 cpu)
{
	struct task_struct *curr;
	bool taken;

	bpf_rcu_read_lock();
	curr = scx_bpf_cpu_curr(cpu);
	taken = curr && curr->prio < MAX_RT_PRIO;
	bpf_rcu_read_unlock();
	return taken;
}

/*
 * A task's key as it stands now: the key of its last decision, advanced by
 * what it ran since, weighted as the kernel weights vtime. A key is the
 * plugin's rank at decision time; a task that ran since would rank later,
 * and a task that keeps preempting in BPF never gets a new one. Comparing
 * decision keys alone let a hog running since long before a sleeper's
 * last decision keep its CPU (a VM run counted 214 such misses of 216).
 */
static u64 current_key(const struct task_struct *p, bool running, u64 now)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, (struct task_struct *)p, 0, 0);
	u64 ran, weight = p->scx.weight ?: 1;

	if (!tctx)
		return p->scx.dsq_vtime;
	ran = tctx->key_ran;
	if (running && now > tctx->start_ts)
		ran += now - tctx->start_ts;
	return p->scx.dsq_vtime + ran * 100 / weight;
}

/* Whether a task whose key is now `key` may take cpu from whatever runs
 * there: not from an RT/DL task, nor from the host (that would delay every
 * decision), and, when keyed, only from a task the plugin would rank after
 * it now (current_key). Not while a task already waits in its local queue
 * to run next: with ALWAYS_ENQ_IMMED one of the two would be handed back to
 * the fallback queue (a waker that wakes several tasks finds its own CPU
 * first for each). The count may lag an insert from another CPU: then one
 * task goes to the fallback queue, as before. */
static bool preemptible(s32 cpu, u64 key, bool keyed, u64 now)
{
	struct task_struct *curr;
	bool ok;

	if (scx_bpf_dsq_nr_queued(SCX_DSQ_LOCAL_ON | cpu))
		return false;
	bpf_rcu_read_lock();
	curr = scx_bpf_cpu_curr(cpu);
	ok = curr && curr->prio >= MAX_RT_PRIO && curr->tgid != usersched_tgid &&
	     (!keyed || (s64)(current_key(curr, true, now) - key) > 0);
	bpf_rcu_read_unlock();
	return ok;
}

/* CPUs past the last one an urgent task looks at when that one is not
 * preemptible: a bounded scan, in the order of their numbers. */
#define PREEMPT_SCAN 8

/* A busy CPU p may use and preempt (by key, when keyed): the CPU this
 * wake-up runs on first, where preempting needs no IPI (under emulation an
 * IPI waits for the other vCPU's turn: a trace counted 58% of remote
 * preemptions over 2 ms, 2% of local ones), then its last CPU and the next
 * few. A sync wake-up (`sync`: a pipe writer about to read the answer, say)
 * takes the waker's CPU whatever the waker's key: the waker is about to
 * sleep, and going elsewhere preempted a second task through an IPI
 * (single-threaded TCG, a request/response pair beside hogs: such remote
 * preemptions waited 3.6 ms at the median, 6% of the pair's wake-ups). -1:
 * none. */
static s32 busy_target(const struct task_struct *p, bool keyed, bool sync)
{
	s32 prev = scx_bpf_task_cpu(p), here = bpf_get_smp_processor_id(), cpu;
	u32 nr = scx_bpf_nr_cpu_ids(), i;
	u64 now = bpf_ktime_get_ns(), key = keyed ? current_key(p, false, now) : 0;

	if ((here != prev || sync) && bpf_cpumask_test_cpu(here, p->cpus_ptr) &&
	    preemptible(here, key, keyed && !sync, now))
		return here;
	for (i = 0; i < PREEMPT_SCAN && i < nr; i++) {
		cpu = (prev + i) % nr;
		if (bpf_cpumask_test_cpu(cpu, p->cpus_ptr) && preemptible(cpu, key, keyed, now))
			return cpu;
	}
	return -1;
}

/* Where an urgent task runs at once: an idle CPU it may use, its last CPU
 * first; else a busy one it may preempt (busy_target). -1: none. */
static s32 preempt_target(const struct task_struct *p, bool keyed, bool sync)
{
	s32 prev = scx_bpf_task_cpu(p), cpu;

	if (bpf_cpumask_test_cpu(prev, p->cpus_ptr) && scx_bpf_test_and_clear_cpu_idle(prev))
		return prev;
	cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (cpu >= 0)
		return cpu;
	return busy_target(p, keyed, sync);
}

/*
 * Tells the host that BPF took back the task it holds under record `gen`
 * (a record with pid -pid), so it skips the plugin's copy instead of
 * spending a CPU's turn on a decision that would be dropped. Best effort: a
 * lost notice only costs that turn.
 */
static void notify_taken_back(s32 pid, u64 gen)
{
	struct rthulhu_queued *r = bpf_ringbuf_reserve(&queued, sizeof(*r), 0);

	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	r->pid = -pid;
	r->gen = gen;
	bpf_ringbuf_submit(r, 0);
}

/* Clears p's held mark; true for the one caller that cleared it. */
static bool take_held(struct task_ctx *tctx, s32 pid)
{
	if (__sync_val_compare_and_swap(&tctx->held, 1, 0) != 1)
		return false;
	__sync_fetch_and_sub(&nr_held, 1);
	bpf_map_delete_elem(&held_tasks, &pid);
	return true;
}

static void take_inflight(struct task_ctx *tctx)
{
	if (__sync_val_compare_and_swap(&tctx->inflight, 1, 0) == 1)
		__sync_fetch_and_sub(&nr_inflight, 1);
}

/* Queues p in kernel order: no host round trip. */
static void insert_fallback(struct task_struct *p, u64 enq_flags)
{
	scx_bpf_dsq_insert(p, RTHULHU_FALLBACK_DSQ, slice_ns, enq_flags);
	__sync_fetch_and_add(&nr_kernel_dispatches, 1);
	kick_idle_cpu(p);
}

static u64 task_cgroup_id(struct task_struct *p)
{
	struct css_set *cgroups = p->cgroups;
	struct cgroup *cgrp;
	struct kernfs_node *kn;

	if (!cgroups)
		return 0;
	cgrp = cgroups->dfl_cgrp;
	if (!cgrp)
		return 0;
	kn = cgrp->kn;
	return kn ? kn->id : 0;
}

/* --- sched_ext operations -------------------------------------------------- */

SEC("struct_ops/rthulhu_select_cpu")
s32 rthulhu_select_cpu(unsigned long long *ctx)
{
	struct task_struct *p = (void *)ctx[0];
	s32 prev_cpu = ctx[1];
	u64 wake_flags = ctx[2];
	bool in_kernel = dispatch_in_kernel(p);
	u32 here = bpf_get_smp_processor_id();
	bool is_idle = false;
	s32 cpu;

	if (here < RTHULHU_MAX_CPUS)
		sync_wakee[here] = (wake_flags & SCX_WAKE_SYNC) ? p->pid : 0;
	if (!builtin_idle && !in_kernel)
		return prev_cpu;
	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	/*
	 * The host with no idle CPU to go to takes the CPU that woke it (the
	 * one that sent a record, or found nothing to run): it preempts
	 * whatever runs there anyway (enqueue_host_thread), and here that
	 * needs no IPI (single-threaded TCG: the host's wake-ups on its last
	 * CPU from the other one waited 1.5-3 ms for that vCPU's turn).
	 */
	if (!is_idle && in_kernel && p->pid == usersched_tgid && (s32)here != cpu &&
	    bpf_cpumask_test_cpu(here, p->cpus_ptr) && !cpu_taken(here))
		return here;
	/*
	 * An idle CPU waits for nobody: run there now, no round trip to the
	 * host. For ordinary tasks only while nothing else waits (or the host
	 * is bypassed), or direct wake-ups would overtake what the host ordered.
	 */
	if (is_idle && (in_kernel || bypass || nothing_waits())) {
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
		__sync_fetch_and_add(&nr_direct_dispatches, 1);
	}
	return cpu;
}

/* Longest the host waits for its CPU's running task when it need not preempt. */
#define HOST_WAIT_NS 1000000ULL

/*
 * Whether the host may wait for cpu's next switch rather than preempt the
 * task running there: no CPU is idle and all CPUs but one (at least one)
 * have their next task queued, so no CPU runs dry for want of a decision
 * meanwhile (the one that might runs the host). Under hackbench most host
 * wake-ups come then, and each preemption cost a context switch more (the
 * preempted task's return); the running task usually blocks first. Bounded:
 * the running task's slice is cut to HOST_WAIT_NS (it ends at the next tick
 * after that); stopping before its slice as set at its start ran out, it
 * counts as preempted and resumes at its key (resume_preempted), as if the
 * host had preempted it. A CPU that finds nothing to run meanwhile kicks the
 * host's CPU (ops.dispatch). Tolerated race: that kick may land just after
 * the host started; it is then preempted once and queued again at once.
 */
static bool host_may_wait(s32 cpu)
{
	struct task_struct *curr;
	u64 queued = shared_queued();
	bool ok = false;

	if (nr_idle_cpus || !queued || queued + 1 < scx_bpf_nr_cpu_ids())
		return false;
	bpf_rcu_read_lock();
	curr = scx_bpf_cpu_curr(cpu);
	/* Not a kernel thread (the idle task is one): slices we do not own. */
	if (curr && !(curr->flags & PF_KTHREAD)) {
		if (curr->scx.slice > HOST_WAIT_NS)
			scx_bpf_task_set_slice(curr, HOST_WAIT_NS);
		ok = true;
	}
	bpf_rcu_read_unlock();
	return ok;
}

/*
 * The host must get a CPU soon, or every decision waits behind a hog: its
 * own CPU, next if it may wait (host_may_wait), else preempting what runs
 * there, unless an RT/DL task holds that CPU; then an idle CPU, or another
 * one to preempt, or the head of the fallback queue.
 */
static void enqueue_host_thread(struct task_struct *p, u64 enq_flags)
{
	s32 cpu = scx_bpf_task_cpu(p);

	__sync_fetch_and_add(&nr_kernel_dispatches, 1);
	if (!cpu_taken(cpu)) {
		if (host_may_wait(cpu)) {
			scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, enq_flags | SCX_ENQ_HEAD);
			host_wait_cpu = cpu + 1;
			__sync_fetch_and_add(&nr_host_waits, 1);
			return;
		}
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, enq_flags | SCX_ENQ_PREEMPT);
		return;
	}
	cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);
	if (cpu < 0)
		cpu = scx_bpf_pick_any_cpu(p->cpus_ptr, 0);
	if (cpu >= 0 && !cpu_taken(cpu)) {
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, slice_ns, enq_flags | SCX_ENQ_PREEMPT);
		scx_bpf_kick_cpu(cpu, SCX_KICK_PREEMPT);
		return;
	}
	scx_bpf_dsq_insert(p, RTHULHU_FALLBACK_DSQ, slice_ns, enq_flags | SCX_ENQ_HEAD);
	kick_idle_cpu(p);
}

/* A task that never waits on the host. */
static void enqueue_in_kernel(struct task_struct *p, u64 enq_flags)
{
	/*
	 * Handed back from a CPU it could not run on at once: run anywhere else
	 * (a per-CPU kthread waits in the fallback queue for its CPU's next
	 * dispatch rather than bounce off the same local queue again).
	 */
	if (enq_flags & SCX_ENQ_REENQ) {
		insert_fallback(p, enq_flags);
		return;
	}
	/* The dispatch loop runs in the host's main thread (pid == tgid). */
	if (is_host_thread(p) && p->pid == usersched_tgid) {
		enqueue_host_thread(p, enq_flags);
		return;
	}
	/*
	 * The host's other threads (stats, metrics, its watchdog) never wait on
	 * it either, but they queue in kernel order: a client hammering the
	 * metrics port must not make them preempt anyone.
	 */
	if (is_host_thread(p)) {
		insert_fallback(p, enq_flags);
		return;
	}
	if (p->nr_cpus_allowed == 1) {
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, enq_flags);
		__sync_fetch_and_add(&nr_kernel_dispatches, 1);
		return;
	}
	insert_fallback(p, enq_flags);
}

/* Whether a plugin's rule for `classes` (a bit per class) covers the task. */
static __always_inline bool covers(u64 classes, const struct task_ctx *tctx)
{
	return tctx->class < 64 && (classes & (1ULL << tctx->class));
}

/*
 * The plugin's wake-up preemption rule, applied the moment the task wakes:
 * false leaves the task to the host. Guards against churn: the rule's burst
 * limit (a task whose last run was long, a hog, always asks the host); a
 * sleep at least twice its last run (so no task gets more than a third of a
 * CPU by preempting); no preemption while more than two tasks per CPU wait;
 * and only a task the plugin ranked after it is preempted (by vtime).
 */
static bool urgent_wakeup(struct task_struct *p, struct task_ctx *tctx, u64 enq_flags)
{
	u32 here = bpf_get_smp_processor_id();
	bool sync = false;
	s32 cpu;

	if (here < RTHULHU_MAX_CPUS && sync_wakee[here] == p->pid) {
		sync = true;
		sync_wakee[here] = 0;
	}
	/* Not before the plugin's first decision on it: until then dsq_vtime
	 * is not its key (0 for a fork), and the key check below would let it
	 * preempt anything, a task of a higher level too. */
	if (!(enq_flags & SCX_ENQ_WAKEUP) || !tctx->decided || !covers(urgent_classes, tctx))
		return false;
	if (tctx->stop_ts - tctx->start_ts > urgent_burst_ns) {
		__sync_fetch_and_add(&nr_urgent_missed_burst, 1);
		return false;
	}
	if (bpf_ktime_get_ns() - tctx->stop_ts < 2 * (tctx->stop_ts - tctx->start_ts)) {
		__sync_fetch_and_add(&nr_urgent_missed_sleep, 1);
		return false;
	}
	/* With a backlog (hackbench-like loads: every task short) preempting
	 * only churns, and the woken task would wait behind the others anyway. */
	if (nr_held + shared_queued() > 2 * (u64)scx_bpf_nr_cpu_ids()) {
		__sync_fetch_and_add(&nr_urgent_missed_backlog, 1);
		return false;
	}
	cpu = preempt_target(p, true, sync);
	if (cpu < 0) {
		__sync_fetch_and_add(&nr_urgent_missed_cpu, 1);
		/* Only the key kept it out: what the stale-key limit counts. */
		if (busy_target(p, false, false) >= 0)
			__sync_fetch_and_add(&nr_urgent_missed_key, 1);
		return false;
	}
	/* SCX_ENQ_PREEMPT zeroes the slice of what runs there and kicks the
	 * CPU itself. No SCX_KICK_PREEMPT besides: it lands later, and if
	 * this task runs by then, it preempts this task (a VM run counted
	 * 40% of a matched probe's runs preempted so, each one a trip back
	 * through the host behind the hogs). */
	scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, slice_ns, enq_flags | SCX_ENQ_PREEMPT);
	__sync_fetch_and_add(&nr_urgent_wakeups, 1);
	return true;
}

/*
 * A task preempted before its slice ran out (by an urgent wake-up, the host
 * thread, a preempting decision) finishes that slice at the key the plugin
 * last gave it, in the shared queue, without a host round trip: the
 * decision it was running under is not over. Without this, every
 * preemption cost a record, a host wake-up (which itself preempts) and an
 * idle CPU meanwhile. Bounded: it resumes only what is left of the slice,
 * and then goes through the host as usual.
 */
static bool resume_preempted(struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	u64 slice;

	if (!tctx || !tctx->decided || (enq_flags & SCX_ENQ_WAKEUP) || !tctx->resume_ns)
		return false;
	slice = tctx->resume_ns;
	tctx->resume_ns = 0;
	/* The plugin chose it: it counts in the look-ahead window until it runs. */
	if (__sync_val_compare_and_swap(&tctx->inflight, 0, 1) == 0)
		__sync_fetch_and_add(&nr_inflight, 1);
	scx_bpf_dsq_insert_vtime(p, task_shared_dsq(p), slice, p->scx.dsq_vtime, enq_flags);
	__sync_fetch_and_add(&nr_resumed, 1);
	kick_idle_cpu(p);
	return true;
}

/*
 * The plugin's slice renewal rule: a task of a covered class whose slice ran
 * out goes back into its shared queue at its key as it stands now
 * (current_key, the key the plugin's vtime rule would give it) for another
 * slice, without a host round trip. Without this, a hog's slice end while
 * another task waited (a task the host's own wake-up preempted, say) cost a
 * record, a host wake-up, which preempts again, and an idle turn. Bounded:
 * renew_max times in a row, then its record goes to the host, which charges
 * every run since (records carry cumulative runtime and the last decision's
 * key). Only while the host holds no task: one it holds may rank first,
 * and the renewed task would take the CPU before the host could say so.
 * Never after a sleep the plugin has not seen (its credit is the plugin's
 * to bound), nor between a record and the host's decision on it (a task
 * rescued meanwhile has its old key), nor after a change of its weight,
 * CPUs or, while queued, cgroup (set_weight, set_cpumask, dequeue). Tolerated race:
 * a record sent from another CPU meanwhile finds a task renewed; the host
 * orders it by key in the shared queue, a slice late at most.
 */
static bool may_renew(const struct task_ctx *tctx)
{
	return tctx && tctx->decided && !tctx->slept && tctx->renewals < renew_max &&
	       covers(renew_classes, tctx) && !nr_held;
}

/* Counts a renewal of the task's last decision; the slice it renews. */
static u64 count_renewal(struct task_ctx *tctx)
{
	tctx->renewals++;
	tctx->key_ran = 0;
	__sync_fetch_and_add(&nr_renewed, 1);
	return tctx->key_slice ?: slice_ns;
}

static bool renew_slice(struct task_struct *p, u64 enq_flags)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	u64 key, slice;

	if ((enq_flags & SCX_ENQ_WAKEUP) || !may_renew(tctx))
		return false;
	key = current_key(p, false, 0);
	slice = count_renewal(tctx);
	/* Not inflight: the host's window counts its own decisions only, or
	 * renewed tasks queued would keep its next pick out of the kernel. */
	if (enq_flags & SCX_ENQ_LAST) {
		/* Its CPU found nothing it may run and is going idle (what waits
		 * is for other CPUs): it keeps the task. In the shared queue the
		 * task would wait beside it, the CPU not yet marked idle for a
		 * kick, until the heartbeat. */
		scx_bpf_task_set_dsq_vtime(p, key);
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice, enq_flags);
		return true;
	}
	scx_bpf_dsq_insert_vtime(p, task_shared_dsq(p), slice, key, enq_flags);
	kick_idle_cpu(p);
	return true;
}

/*
 * Called by ops.dispatch when it found nothing for this CPU and `prev`, still
 * runnable, used up its slice: prev keeps the CPU, with a new slice set here
 * (the kernel keeps running a runnable prev that ops.dispatch gave a slice).
 * When nothing waits at all (nor is in flight: another CPU's drain stops
 * holding a task before its insert shows in a queue), a plain new slice,
 * kernel threads too; else, if the renewal rule allows, a renewal at its key
 * as it stands now (not for a task that never waits on the host: it has no
 * key). The host's own thread always keeps its CPU (it would run at once
 * anyway, see enqueue_host_thread). Done here, not in
 * ops.enqueue(SCX_ENQ_LAST): the kernel picks the next task before it puts
 * prev back, so by then the idle task has the CPU, and each slice end cost
 * two context switches and an idle turn (a VM trace of two hogs on two
 * CPUs: 237 a second). Not if this call inserted anything (buffered: the
 * kernel would keep prev before it looked at those).
 */
static bool keep_prev(struct task_struct *prev, u32 slots_before)
{
	struct task_ctx *tctx;
	u64 now, slice;

	if (!(prev->scx.flags & SCX_TASK_QUEUED) || scx_bpf_dispatch_nr_slots() != slots_before ||
	    scx_bpf_dsq_nr_queued(SCX_DSQ_LOCAL))
		return false;
	tctx = bpf_task_storage_get(&task_ctxs, prev, 0, 0);
	now = bpf_ktime_get_ns();
	if (is_host_thread(prev) && prev->pid == usersched_tgid) {
		slice = slice_ns;
	} else if (nothing_waits() && !nr_inflight) {
		slice = slice_ns;
		__sync_fetch_and_add(&nr_keep_running, 1);
	} else if (!dispatch_in_kernel(prev) && may_renew(tctx)) {
		scx_bpf_task_set_dsq_vtime(prev, current_key(prev, true, now));
		/* Its run so far is in the new key: nothing left to add below. */
		tctx->start_ts = now;
		slice = count_renewal(tctx);
	} else {
		return false;
	}
	scx_bpf_task_set_slice(prev, slice);
	/* As if it stopped and started again now: what ops.stopping and
	 * ops.running would have recorded (a preemption during the new slice
	 * must show as one, see rthulhu_stopping). */
	if (tctx) {
		if (now > tctx->start_ts)
			tctx->key_ran += now - tctx->start_ts;
		tctx->start_ts = now;
		tctx->stop_ts = now;
		tctx->slice_at_start = slice;
	}
	return true;
}

SEC("struct_ops/rthulhu_enqueue")
int rthulhu_enqueue(unsigned long long *ctx)
{
	struct task_struct *p = (void *)ctx[0];
	u64 enq_flags = ctx[1];
	struct rthulhu_queued *r;
	struct task_ctx *tctx;
	struct held_task h;
	s32 pid = p->pid;

	if (dispatch_in_kernel(p)) {
		enqueue_in_kernel(p, enq_flags);
		return 0;
	}
	if (enq_flags & SCX_ENQ_REENQ) {
		__sync_fetch_and_add(&nr_reenqueued, 1);
		insert_fallback(p, enq_flags);
		return 0;
	}
	/* The last task of a CPU whose slice ended keeps running if nothing
	 * waits. keep_prev does this in ops.dispatch, without the idle turn;
	 * here what changed in between is caught (the host's last held task
	 * decided meanwhile, say). */
	if ((enq_flags & SCX_ENQ_LAST) && nothing_waits()) {
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, enq_flags);
		__sync_fetch_and_add(&nr_keep_running, 1);
		return 0;
	}
	if (resume_preempted(p, enq_flags) || renew_slice(p, enq_flags))
		return 0;
	if (bypass) {
		__sync_fetch_and_add(&nr_bypassed, 1);
		insert_fallback(p, enq_flags);
		return 0;
	}
	tctx = bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tctx) {
		insert_fallback(p, enq_flags);
		return 0;
	}
	if (urgent_wakeup(p, tctx, enq_flags))
		return 0;
	h.gen = ++tctx->gen;
	h.since = bpf_ktime_get_ns();
	if (bpf_map_update_elem(&held_tasks, &pid, &h, BPF_ANY)) {
		__sync_fetch_and_add(&nr_sched_congested, 1);
		insert_fallback(p, enq_flags);
		return 0;
	}
	r = bpf_ringbuf_reserve(&queued, sizeof(*r), 0);
	if (!r) {
		/* Ring full: keep the task moving in kernel order. */
		bpf_map_delete_elem(&held_tasks, &pid);
		__sync_fetch_and_add(&nr_sched_congested, 1);
		insert_fallback(p, enq_flags);
		return 0;
	}
	/* Held before the host can see the record, so its decision finds it so. */
	tctx->held = 1;
	__sync_fetch_and_add(&nr_held, 1);
	r->pid = pid;
	r->tgid = p->tgid;
	r->cpu = scx_bpf_task_cpu(p);
	r->nr_cpus_allowed = p->nr_cpus_allowed;
	r->flags = (enq_flags & ~RTHULHU_ENQ_SLEPT) | (tctx->slept ? RTHULHU_ENQ_SLEPT : 0);
	tctx->slept = 0;
	r->start_ts = tctx->start_ts;
	r->stop_ts = tctx->stop_ts;
	r->exec_runtime = p->se.sum_exec_runtime;
	r->weight = p->scx.weight;
	/* The last decision's key, not dsq_vtime (renewals moved that): the
	 * plugin charges every run since its last record on top of it. */
	if (!tctx->decided)
		tctx->key = p->scx.dsq_vtime;
	r->vtime = tctx->key;
	/* Until the host decides again: a task rescued or taken back meanwhile
	 * still has its old key, and its sleep may not have been charged. */
	tctx->renewals = RENEW_NEVER;
	r->cgroup_id = task_cgroup_id(p);
	__builtin_memcpy(r->comm, p->comm, RTHULHU_COMM_LEN);
	r->gen = h.gen;
	if (quiet_record()) {
		bpf_ringbuf_submit(r, BPF_RB_NO_WAKEUP);
		/*
		 * Set after the record is in: a wake-up that clears the flag
		 * (wake_host clears it, then sends) comes after the record too.
		 */
		host_unnotified = 1;
		__sync_fetch_and_add(&nr_quiet_records, 1);
	} else if (host_unnotified) {
		/* Quiet records before this one: only a forced wake-up wakes now. */
		host_unnotified = 0;
		bpf_ringbuf_submit(r, BPF_RB_FORCE_WAKEUP);
	} else {
		bpf_ringbuf_submit(r, 0);
	}
	return 0;
}

SEC("struct_ops/rthulhu_dequeue")
int rthulhu_dequeue(unsigned long long *ctx)
{
	struct task_struct *p = (void *)ctx[0];
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);

	/* Affinity, nice, cgroup move...: the host's record is stale now,
	 * and the plugin must see the task before BPF renews its slice. */
	if (tctx) {
		if (ctx[1] & SCX_DEQ_SCHED_CHANGE)
			tctx->renewals = RENEW_NEVER;
		if (take_held(tctx, p->pid))
			notify_taken_back(p->pid, tctx->gen);
		take_inflight(tctx);
	}
	return 0;
}

struct drain_ctx {
	u32 slots;
};

/* One host decision: put the task where the host said, if it still can go there. */
static long dispatch_one(struct bpf_dynptr *dynptr, struct drain_ctx *dc)
{
	struct rthulhu_dispatched d;
	struct task_struct *p;
	struct task_ctx *tctx;
	bool preempt, shared = true;
	s32 cpu;

	if (bpf_dynptr_read(&d, sizeof(d), dynptr, 0, 0))
		return 1;
	__sync_fetch_and_add(&nr_drained, 1);
	p = bpf_task_from_pid(d.pid);
	if (!p) {
		__sync_fetch_and_add(&nr_failed_dispatches, 1);
		return 0;
	}
	tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	/* In flight before it stops being held: a CPU asking whether anything
	 * waits (keep_prev) must not find it neither held nor in flight. */
	__sync_fetch_and_add(&nr_inflight, 1);
	/* Rescued, dequeued or queued again since this record: drop it. */
	if (!tctx || tctx->gen != d.gen || !take_held(tctx, d.pid)) {
		__sync_fetch_and_sub(&nr_inflight, 1);
		__sync_fetch_and_add(&nr_stale_dispatches, 1);
		bpf_task_release(p);
		return 0;
	}
	preempt = d.flags & RTHULHU_DSP_PREEMPT;
	tctx->decided = 1;
	tctx->key_ran = 0;
	tctx->key = d.vtime;
	tctx->key_slice = d.slice_ns;
	tctx->renewals = 0;
	tctx->class = (d.flags & RTHULHU_DSP_CLASS_MASK) >> RTHULHU_DSP_CLASS_SHIFT;
	if (tctx->class >= RTHULHU_MAX_CLASSES)
		tctx->class = RTHULHU_MAX_CLASSES - 1;
	d.flags &= ~(RTHULHU_DSP_PREEMPT | RTHULHU_DSP_CLASS_MASK);
	cpu = d.cpu;
	/* An urgent task goes straight to a CPU's local queue, preempting:
	 * through the shared queue a kicked CPU might serve the fallback first. */
	/* The plugin asked for it: no key to check. */
	if (cpu < 0 && preempt)
		cpu = preempt_target(p, false, false);
	if (cpu >= 0) {
		/* Not there: the task may not run on it, or an RT/DL task holds it. */
		if (bpf_cpumask_test_cpu(cpu, p->cpus_ptr) && !cpu_taken(cpu))
			shared = false;
		else
			__sync_fetch_and_add(&nr_bounce_dispatches, 1);
	}
	tctx->inflight = 1;
	/*
	 * The shared queues are ordered by the plugin's vtime, so a task the
	 * plugin ranks higher overtakes ones it handed over earlier.
	 */
	if (shared) {
		scx_bpf_dsq_insert_vtime(p, task_shared_dsq(p), d.slice_ns, d.vtime, d.flags);
		/* No idle CPU for an urgent task: take its last CPU now, not at the next tick. */
		if (!kick_idle_cpu(p) && preempt)
			scx_bpf_kick_cpu(scx_bpf_task_cpu(p), SCX_KICK_PREEMPT);
	} else {
		scx_bpf_task_set_dsq_vtime(p, d.vtime);
		/* As for urgent wake-ups: SCX_ENQ_PREEMPT kicks the CPU itself. */
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL_ON | cpu, d.slice_ns,
				   d.flags | (preempt ? SCX_ENQ_PREEMPT : 0));
		if (!preempt)
			scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
	}
	bpf_task_release(p);
	__sync_fetch_and_add(&nr_user_dispatches, 1);
	return --dc->slots == 0;
}

struct rescue_ctx {
	u64 now;
	u64 min_wait;
	u32 slots;
};

/* Moves one held task that waited at least min_wait into the fallback queue. */
static long rescue_one(void *map, s32 *pid, struct held_task *h, struct rescue_ctx *rc)
{
	struct task_struct *p;
	struct task_ctx *tctx;

	/* Signed: a task queued on another CPU after rc->now was read is new. */
	if ((s64)(rc->now - h->since) < (s64)rc->min_wait)
		return 0;
	p = bpf_task_from_pid(*pid);
	if (!p) {
		bpf_map_delete_elem(map, pid);
		return 0;
	}
	tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	if (tctx && tctx->gen == h->gen && take_held(tctx, *pid)) {
		scx_bpf_dsq_insert(p, RTHULHU_FALLBACK_DSQ, slice_ns, 0);
		__sync_fetch_and_add(&nr_rescued, 1);
		notify_taken_back(*pid, tctx->gen);
		rc->slots--;
	}
	bpf_task_release(p);
	return rc->slots == 0;
}

SEC("struct_ops/rthulhu_dispatch")
int rthulhu_dispatch(unsigned long long *ctx)
{
	s32 cpu = ctx[0];
	struct task_struct *prev = (void *)ctx[1];
	u32 slots_before = scx_bpf_dispatch_nr_slots();
	struct drain_ctx dc = { .slots = slots_before };
	u32 waiting;

	/* One CPU at a time rescues what a late host left waiting. */
	if (rescue_pending && __sync_val_compare_and_swap(&rescue_pending, 1, 0) == 1) {
		struct rescue_ctx rc = {
			.now = bpf_ktime_get_ns(),
			.min_wait = bypass ? 0 : rescue_min_wait,
			.slots = dc.slots,
		};

		if (rc.slots)
			bpf_for_each_map_elem(&held_tasks, rescue_one, &rc, 0);
		if (!rc.slots)
			rescue_pending = 1; /* more to move: the next CPU goes on */
		dc.slots = rc.slots;
	}
	/* Only when the host has sent decisions not read yet: a drain of an
	 * empty ring still cost about a third of an idle dispatch. The host
	 * counts after it submits; a count read stale leaves the decision to
	 * the next dispatch (the host's own CPU passes through one as the
	 * host sleeps, and sees its own count). NO_WAKEUP: by default a drain
	 * that read anything queues an irq_work (a self-IPI) to wake writers
	 * waiting for room, and the host never waits for room (a full ring
	 * fails its write at once). */
	if (dc.slots && host_submitted != nr_drained)
		bpf_user_ringbuf_drain(&dispatched, dispatch_one, &dc, BPF_RB_NO_WAKEUP);
	/*
	 * The two queues take turns, so neither starves the other: a burst of
	 * rescued tasks must not hold back what the host orders next (a woken
	 * interactive task), nor the host's queue hold back what waited longest.
	 */
	if (__sync_fetch_and_add(&dispatch_turn, 1) & 1) {
		if (move_shared(cpu) || scx_bpf_dsq_move_to_local(RTHULHU_FALLBACK_DSQ))
			goto refill;
	} else if (scx_bpf_dsq_move_to_local(RTHULHU_FALLBACK_DSQ) || move_shared(cpu)) {
		goto refill;
	}
	if (prev && keep_prev(prev, slots_before))
		return 0;
	/* This CPU has nothing to run: if the host holds tasks, it must decide now. */
	if (nr_held)
		wake_host(false);
	/* And if it waits behind another CPU's running task, now, not at its slice's end. */
	waiting = host_wait_cpu;
	if (waiting && waiting - 1 != (u32)cpu)
		scx_bpf_kick_cpu(waiting - 1, SCX_KICK_PREEMPT);
	return 0;
refill:
	/* Quiet records wait: wake the host once the CPUs' next tasks run low. */
	if (host_unnotified && nr_held && shared_queued() < scx_bpf_nr_cpu_ids())
		wake_host(true);
	return 0;
}

SEC("struct_ops/rthulhu_update_idle")
int rthulhu_update_idle(unsigned long long *ctx)
{
	s32 cpu = ctx[0];
	bool idle = ctx[1];

	if (cpu < 0 || cpu >= RTHULHU_MAX_CPUS)
		return 0;
	/* Only this CPU calls this for itself: the test and the store do not race. */
	if (idle && !idle_since[cpu])
		__sync_fetch_and_add(&nr_idle_cpus, 1);
	else if (!idle && idle_since[cpu])
		__sync_fetch_and_sub(&nr_idle_cpus, 1);
	idle_since[cpu] = idle ? bpf_ktime_get_ns() : 0;
	return 0;
}

static __always_inline u32 log2_u64(u64 v)
{
	u32 r = 0;

	if (v >> 32) { v >>= 32; r += 32; }
	if (v >> 16) { v >>= 16; r += 16; }
	if (v >> 8) { v >>= 8; r += 8; }
	if (v >> 4) { v >>= 4; r += 4; }
	if (v >> 2) { v >>= 2; r += 2; }
	if (v >> 1) r += 1;
	return r;
}

/* One wake-up of a task of class c that waited wait ns, bucket b. */
static __always_inline void record_wakeup(u32 c, u32 b, u64 wait)
{
	if (c >= RTHULHU_MAX_CLASSES || b >= RTHULHU_LAT_BUCKETS)
		return;
	__sync_fetch_and_add(&lat_hist[c][b], 1);
	__sync_fetch_and_add(&lat_sum_ns[c], wait);
	if (wait > lat_max_ns[c])
		lat_max_ns[c] = wait;
}

/* The slot of cgroup id (claimed if free), -1 when none is left. */
static s32 cgroup_slot(u64 id)
{
	u32 h = (u32)((id * 0x9E3779B97F4A7C15ULL) >> 32), i, s;
	u64 cur;

	if (!id)
		return -1;
	for (i = 0; i < CGROUP_PROBES; i++) {
		s = (h + i) % RTHULHU_MAX_CGROUPS;
		cur = cg_ids[s];
		if (!cur)
			cur = __sync_val_compare_and_swap(&cg_ids[s], 0, id);
		if (!cur || cur == id)
			return s;
	}
	return -1;
}

/* One wake-up of a task of cgroup id that waited wait ns, bucket b. */
static __always_inline void record_cgroup_wakeup(u64 id, u32 b, u64 wait)
{
	s32 s = cgroup_slot(id);

	if (s < 0 || s >= RTHULHU_MAX_CGROUPS) {
		__sync_fetch_and_add(&nr_cgroups_untracked, 1);
		return;
	}
	__sync_fetch_and_add(&cg_hist[s][b], 1);
	if (wait > cg_max_ns[s])
		cg_max_ns[s] = wait;
}

SEC("struct_ops/rthulhu_runnable")
int rthulhu_runnable(unsigned long long *ctx)
{
	struct task_struct *p = (void *)ctx[0];
	struct task_ctx *tctx;

	tctx = bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (tctx) {
		tctx->runnable_at = bpf_ktime_get_ns();
		if (ctx[1] & SCX_ENQ_WAKEUP)
			tctx->slept = 1;
	}
	return 0;
}

SEC("struct_ops/rthulhu_running")
int rthulhu_running(unsigned long long *ctx)
{
	struct task_struct *p = (void *)ctx[0];
	struct task_ctx *tctx;
	u64 now = bpf_ktime_get_ns();

	tctx = bpf_task_storage_get(&task_ctxs, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tctx)
		return 0;
	if (tctx->runnable_at && now > tctx->runnable_at) {
		u64 wait = now - tctx->runnable_at;
		u32 b = log2_u64(wait);

		if (b >= RTHULHU_LAT_BUCKETS)
			b = RTHULHU_LAT_BUCKETS - 1;
		record_wakeup(tctx->class, b, wait);
		record_cgroup_wakeup(task_cgroup_id(p), b, wait);
	}
	tctx->runnable_at = 0;
	tctx->start_ts = now;
	tctx->slice_at_start = p->scx.slice;
	if (host_wait_cpu && p->pid == usersched_tgid)
		host_wait_cpu = 0;
	take_inflight(tctx);
	if (!is_host_thread(p) && !tctx->counted) {
		tctx->counted = 1;
		__sync_fetch_and_add(&nr_running, 1);
	}
	return 0;
}

SEC("struct_ops/rthulhu_stopping")
int rthulhu_stopping(unsigned long long *ctx)
{
	struct task_struct *p = (void *)ctx[0];
	struct task_ctx *tctx;
	bool runnable = ctx[1];
	u64 ran;

	tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);
	if (!tctx)
		return 0;
	tctx->stop_ts = bpf_ktime_get_ns();
	ran = tctx->stop_ts - tctx->start_ts;
	tctx->key_ran += ran;
	tctx->resume_ns = 0;
	/* Switched out while runnable before its slice ran out: preempted (a
	 * kick zeroes the slice, so the time it ran tells, not what is left). */
	if (runnable && ran < tctx->slice_at_start) {
		tctx->resume_ns = tctx->slice_at_start - ran;
		if (tctx->class < RTHULHU_MAX_CLASSES)
			__sync_fetch_and_add(&nr_preempted[tctx->class], 1);
	}
	if (tctx->counted) {
		tctx->counted = 0;
		__sync_fetch_and_sub(&nr_running, 1);
	}
	return 0;
}

struct cpu_scan {
	u64 now;
	u32 nr_cpus;
	u32 idle;
	u32 late;	/* idle for a whole heartbeat */
	bool kick;
};

/*
 * A CPU idle since the attach: the kernel marks every CPU idle at enable
 * without calling ops.update_idle, so idle_since never saw it go idle.
 * Found in the kernel's idle mask, it counts as idle from the first
 * heartbeat that saw it there. 0: not idle.
 */
static u64 idle_unnoticed(u32 i, u64 now)
{
	const struct cpumask *idle = scx_bpf_get_idle_cpumask();
	bool is_idle = bpf_cpumask_test_cpu(i, idle);

	scx_bpf_put_idle_cpumask(idle);
	if (i >= RTHULHU_MAX_CPUS)
		return 0;
	if (!is_idle)
		idle_unnoticed_since[i] = 0;
	else if (!idle_unnoticed_since[i])
		idle_unnoticed_since[i] = now;
	return idle_unnoticed_since[i];
}

static long scan_cpu(u32 i, struct cpu_scan *s)
{
	u64 since;

	if (i >= s->nr_cpus || i >= RTHULHU_MAX_CPUS)
		return 1;
	since = idle_since[i];
	/* The kick pass runs right after the counting pass: what that pass
	 * found in the idle mask still stands (only the heartbeat writes it). */
	if (!since)
		since = s->kick ? idle_unnoticed_since[i] : idle_unnoticed(i, s->now);
	else if (idle_unnoticed_since[i])
		idle_unnoticed_since[i] = 0; /* seen going idle: no stale start */
	if (!since)
		return 0;
	s->idle++;
	if (s->now - since >= heartbeat_ns)
		s->late++;
	if (s->kick) {
		scx_bpf_kick_cpu(i, SCX_KICK_IDLE);
		__sync_fetch_and_add(&nr_idle_kicks, 1);
	}
	return 0;
}

/* Finds whether any held task has waited at least *limit (then stops). */
static long held_too_long(void *map, s32 *pid, struct held_task *h, u64 *limit)
{
	if (bpf_ktime_get_ns() - h->since < *limit)
		return 0;
	*limit = 0;
	return 1;
}

static int heartbeat_fn(void *map, int *key, struct heartbeat *hb)
{
	struct cpu_scan s = { .now = bpf_ktime_get_ns(), .nr_cpus = scx_bpf_nr_cpu_ids() };
	bool host_late;

	nr_queued = pending_records();
	/*
	 * A live host holding tasks finishes a round at least every heartbeat:
	 * this timer wakes it every time (below). Two heartbeats without one
	 * means it is stopped, stuck or too slow to count on. Timed from its
	 * last round, or from the last heartbeat that found it with nothing to
	 * do if that came later: a host asleep for want of work (its last
	 * round long ago) is not late the moment work comes.
	 */
	if (!nr_held && !nr_queued)
		host_idle_ns = s.now;
	/* Signed: the host may store a round's end after s.now was read. */
	host_late = (s64)(s.now - host_progress_ns) > (s64)(2 * heartbeat_ns) &&
		    (s64)(s.now - host_idle_ns) > (s64)(2 * heartbeat_ns);
	if (bypass && !host_late)
		bypass = 0;
	nr_shared_queued = shared_queued();
	if (nr_llcs > 1)
		find_starved_llcs(s.now);
	nr_fallback_queued = scx_bpf_dsq_nr_queued(RTHULHU_FALLBACK_DSQ);
	bpf_loop(RTHULHU_MAX_CPUS, scan_cpu, &s, 0);
	if (nr_held && (host_late || s.late)) {
		/*
		 * The host is late, or a CPU idled a whole heartbeat while it held
		 * tasks: rescue them (all of them when it is late, and let new
		 * tasks bypass it until it is back).
		 */
		rescue_min_wait = heartbeat_ns;
		rescue_pending = 1;
		__sync_fetch_and_add(&nr_rescues, 1);
		if (host_late)
			bypass = 1;
	} else if (nr_held && s.now - last_hold_scan >= max_hold_ns / 4) {
		/*
		 * Every CPU busy, the host answering, and yet a task held too
		 * long? The walk visits every bucket of held_tasks (a VM profile
		 * of hackbench had it at 6% of all CPU time when it ran every
		 * heartbeat), so it runs every quarter of max_hold_ns: a hoarded
		 * task is rescued within 1.25 × max_hold_ns.
		 */
		u64 limit = max_hold_ns;

		last_hold_scan = s.now;

		bpf_for_each_map_elem(&held_tasks, held_too_long, &limit, 0);
		if (!limit) {
			rescue_min_wait = max_hold_ns;
			rescue_pending = 1;
			__sync_fetch_and_add(&nr_rescues, 1);
		}
	}
	if (s.idle && (rescue_pending || nr_shared_queued || nr_fallback_queued ||
		       host_submitted > nr_drained)) {
		s.kick = true;
		bpf_loop(RTHULHU_MAX_CPUS, scan_cpu, &s, 0);
	}
	/* Forced: a wake-up the host missed must not wait for the next record. */
	if (nr_held || nr_queued)
		wake_host(true);
	bpf_timer_start(&hb->timer, heartbeat_ns, 0);
	return 0;
}

SEC("struct_ops.s/rthulhu_init")
s32 rthulhu_init(unsigned long long *ctx)
{
	u32 key = 0;
	struct heartbeat *hb;
	s32 err;
	u32 i;

	for (i = 0; i < RTHULHU_MAX_LLCS && i < nr_llcs; i++) {
		err = scx_bpf_create_dsq(RTHULHU_SHARED_DSQ + i, -1);
		if (err)
			return err;
	}
	err = scx_bpf_create_dsq(RTHULHU_FALLBACK_DSQ, -1);
	if (err)
		return err;
	hb = bpf_map_lookup_elem(&heartbeat, &key);
	if (!hb)
		return -2; /* ENOENT */
	bpf_timer_init(&hb->timer, &heartbeat, CLOCK_MONOTONIC);
	bpf_timer_set_callback(&hb->timer, heartbeat_fn);
	return bpf_timer_start(&hb->timer, heartbeat_ns, 0);
}

SEC("struct_ops/rthulhu_exit")
int rthulhu_exit(unsigned long long *ctx)
{
	struct scx_exit_info *ei = (void *)ctx[0];

	exit_info.code = ei->exit_code;
	bpf_probe_read_kernel_str(exit_info.reason, sizeof(exit_info.reason), ei->reason);
	bpf_probe_read_kernel_str(exit_info.msg, sizeof(exit_info.msg), ei->msg);
	if (ei->dump)
		bpf_probe_read_kernel_str(exit_dump, sizeof(exit_dump), ei->dump);
	/*
	 * Written last, with a fully ordered exchange: the host treats a
	 * non-zero kind as "the rest is valid".
	 */
	__sync_lock_test_and_set(&exit_info.kind, ei->kind);
	wake_host(true);
	return 0;
}

/* A new weight or set of CPUs: the plugin sees the task before BPF renews
 * its slice again (its class, even its order, may follow them). */
static void stop_renewals(struct task_struct *p)
{
	struct task_ctx *tctx = bpf_task_storage_get(&task_ctxs, p, 0, 0);

	if (tctx)
		tctx->renewals = RENEW_NEVER;
}

SEC("struct_ops/rthulhu_set_weight")
int rthulhu_set_weight(unsigned long long *ctx)
{
	stop_renewals((void *)ctx[0]);
	return 0;
}

SEC("struct_ops/rthulhu_set_cpumask")
int rthulhu_set_cpumask(unsigned long long *ctx)
{
	stop_renewals((void *)ctx[0]);
	return 0;
}

SEC(".struct_ops.link")
struct sched_ext_ops rthulhu_ops = {
	.select_cpu = (void *)rthulhu_select_cpu,
	.enqueue = (void *)rthulhu_enqueue,
	.dequeue = (void *)rthulhu_dequeue,
	.dispatch = (void *)rthulhu_dispatch,
	.runnable = (void *)rthulhu_runnable,
	.running = (void *)rthulhu_running,
	.stopping = (void *)rthulhu_stopping,
	.update_idle = (void *)rthulhu_update_idle,
	.set_weight = (void *)rthulhu_set_weight,
	.set_cpumask = (void *)rthulhu_set_cpumask,
	.init = (void *)rthulhu_init,
	.exit = (void *)rthulhu_exit,
	/*
	 * ALWAYS_ENQ_IMMED: a local queue holds only a task its CPU runs now;
	 * one that cannot run at once (an RT/DL task took the CPU, or it was
	 * preempted) comes back through ops.enqueue with SCX_ENQ_REENQ instead
	 * of waiting behind it.
	 */
	.flags = SCX_OPS_ENQ_LAST | SCX_OPS_KEEP_BUILTIN_IDLE | SCX_OPS_ALWAYS_ENQ_IMMED,
	.timeout_ms = 5000,
	.name = "rthulhu",
};
