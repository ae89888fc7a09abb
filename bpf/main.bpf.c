// SPDX-License-Identifier: GPL-2.0-only
/*
 * Rthulhu's BPF half: a sched_ext scheduler that hands scheduling decisions
 * to the user-space host.
 *
 * enqueue   → a record in the "queued" ring buffer (host threads and per-CPU
 *             kthreads are dispatched here directly: they must never wait on
 *             user space);
 * dispatch  → drain the host's decisions from the "dispatched" user ring
 *             buffer into the shared queue (ordered by the plugin's vtime) or
 *             a CPU's local queue, then pull work from the shared queue.
 * A heartbeat timer wakes the host while it holds tasks, so it never starves.
 */
#include "vmlinux.h"
#include "intf.h"

/* --- the few BPF definitions we use, declared here ------------------------ */

#define SEC(name) __attribute__((section(name), used))
#define __ksym __attribute__((section(".ksyms")))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __always_inline inline __attribute__((always_inline))
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)

#define PF_KTHREAD 0x00200000
#define CLOCK_MONOTONIC 1

/* Helpers, by their ids from the kernel's enum bpf_func_id (in vmlinux.h). */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
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
extern s32 scx_bpf_select_cpu_and(struct task_struct *p, s32 prev_cpu, u64 wake_flags,
				  const struct cpumask *cpus_allowed, u64 flags) __ksym;
extern void scx_bpf_dsq_insert(struct task_struct *p, u64 dsq_id, u64 slice, u64 enq_flags) __ksym;
extern void scx_bpf_dsq_insert_vtime(struct task_struct *p, u64 dsq_id, u64 slice, u64 vtime,
				     u64 enq_flags) __ksym;
extern bool scx_bpf_dsq_move_to_local(u64 dsq_id) __ksym;
extern s32 scx_bpf_create_dsq(u64 dsq_id, s32 node) __ksym;
extern void scx_bpf_kick_cpu(s32 cpu, u64 flags) __ksym;
extern u32 scx_bpf_dispatch_nr_slots(void) __ksym;
extern s32 scx_bpf_dsq_nr_queued(u64 dsq_id) __ksym;
extern s32 scx_bpf_pick_idle_cpu(const struct cpumask *cpus_allowed, u64 flags) __ksym;
extern u32 scx_bpf_nr_cpu_ids(void) __ksym;
extern s32 scx_bpf_task_cpu(const struct task_struct *p) __ksym;
extern struct task_struct *bpf_task_from_pid(s32 pid) __ksym;
extern void bpf_task_release(struct task_struct *p) __ksym;
extern bool bpf_cpumask_test_cpu(u32 cpu, const struct cpumask *cpumask) __ksym;
extern void bpf_rcu_read_lock(void) __ksym;
extern void bpf_rcu_read_unlock(void) __ksym;

char _license[] SEC("license") = "GPL";

/* --- settings, written by the host before load ---------------------------- */

const volatile s32 usersched_tgid;	/* the host's process: never queued to itself */
const volatile u64 slice_ns = 5000000;	/* slice for tasks BPF dispatches itself */
const volatile u64 heartbeat_ns = 10000000;
const volatile bool builtin_idle = true; /* use the kernel's idle-CPU pick */

/* --- counters, read (and nr_scheduled written) by the host ---------------- */

volatile u64 nr_queued, nr_scheduled, nr_running, nr_online_cpus;
volatile u64 nr_user_dispatches, nr_kernel_dispatches, nr_bounce_dispatches;
volatile u64 nr_failed_dispatches, nr_sched_congested, nr_shared_queued;

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

/* When each task last started and stopped running. */
struct task_times {
	u64 start_ts;
	u64 stop_ts;
	/* Counted in nr_running (tasks already running at attach time are not). */
	bool counted;
};

struct {
	__uint(type, BPF_MAP_TYPE_TASK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, struct task_times);
} task_times SEC(".maps");

/* --- helpers --------------------------------------------------------------- */

static __always_inline bool is_host_thread(const struct task_struct *p)
{
	return p->tgid == usersched_tgid;
}

/* Tasks that must never wait on user space. */
static __always_inline bool dispatch_in_kernel(const struct task_struct *p)
{
	return is_host_thread(p) || ((p->flags & PF_KTHREAD) && p->nr_cpus_allowed == 1);
}

static __always_inline u64 pending_records(void)
{
	return bpf_ringbuf_query(&queued, BPF_RB_AVAIL_DATA) / sizeof(struct rthulhu_queued);
}

/* Wakes the host with an empty record, unless records already wait for it. */
static void wake_host(void)
{
	struct rthulhu_queued *r;

	if (bpf_ringbuf_query(&queued, BPF_RB_AVAIL_DATA))
		return;
	r = bpf_ringbuf_reserve(&queued, sizeof(*r), 0);
	if (!r)
		return;
	__builtin_memset(r, 0, sizeof(*r));
	bpf_ringbuf_submit(r, BPF_RB_FORCE_WAKEUP);
}

/* Wakes an idle CPU that may run p; false if none is idle. */
static bool kick_idle_cpu(const struct task_struct *p)
{
	s32 cpu = scx_bpf_pick_idle_cpu(p->cpus_ptr, 0);

	if (cpu < 0)
		return false;
	scx_bpf_kick_cpu(cpu, SCX_KICK_IDLE);
	return true;
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
	bool is_idle = false;
	s32 cpu;

	if (!builtin_idle)
		return prev_cpu;
	cpu = scx_bpf_select_cpu_dfl(p, prev_cpu, wake_flags, &is_idle);
	/*
	 * An idle CPU waits for nobody: run there now, no round trip to the
	 * host. But only while nothing else waits, or direct wake-ups would
	 * keep CPUs busy and starve the tasks the host already ordered.
	 */
	if (is_idle && !nr_scheduled && !scx_bpf_dsq_nr_queued(RTHULHU_SHARED_DSQ) &&
	    !bpf_ringbuf_query(&queued, BPF_RB_AVAIL_DATA)) {
		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, 0);
		__sync_fetch_and_add(&nr_kernel_dispatches, 1);
	}
	return cpu;
}

SEC("struct_ops/rthulhu_enqueue")
int rthulhu_enqueue(unsigned long long *ctx)
{
	struct task_struct *p = (void *)ctx[0];
	u64 enq_flags = ctx[1];
	struct rthulhu_queued *r;
	struct task_times *tt;

	if (dispatch_in_kernel(p)) {
		/* The host must get a CPU at once, or every decision waits behind a hog. */
		u64 flags = is_host_thread(p) ? enq_flags | SCX_ENQ_PREEMPT : enq_flags;

		scx_bpf_dsq_insert(p, SCX_DSQ_LOCAL, slice_ns, flags);
		__sync_fetch_and_add(&nr_kernel_dispatches, 1);
		return 0;
	}

	r = bpf_ringbuf_reserve(&queued, sizeof(*r), 0);
	if (!r) {
		/* Ring full: keep the task moving on the shared queue. */
		scx_bpf_dsq_insert_vtime(p, RTHULHU_SHARED_DSQ, slice_ns, p->scx.dsq_vtime, enq_flags);
		__sync_fetch_and_add(&nr_sched_congested, 1);
		__sync_fetch_and_add(&nr_kernel_dispatches, 1);
		kick_idle_cpu(p);
		return 0;
	}
	tt = bpf_task_storage_get(&task_times, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	r->pid = p->pid;
	r->tgid = p->tgid;
	r->cpu = scx_bpf_task_cpu(p);
	r->nr_cpus_allowed = p->nr_cpus_allowed;
	r->flags = enq_flags;
	r->start_ts = tt ? tt->start_ts : 0;
	r->stop_ts = tt ? tt->stop_ts : 0;
	r->exec_runtime = p->se.sum_exec_runtime;
	r->weight = p->scx.weight;
	r->vtime = p->scx.dsq_vtime;
	r->cgroup_id = task_cgroup_id(p);
	__builtin_memcpy(r->comm, p->comm, RTHULHU_COMM_LEN);
	bpf_ringbuf_submit(r, 0);
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
	u64 dsq = RTHULHU_SHARED_DSQ;
	bool preempt;
	s32 cpu;

	if (bpf_dynptr_read(&d, sizeof(d), dynptr, 0, 0))
		return 1;
	p = bpf_task_from_pid(d.pid);
	if (!p) {
		__sync_fetch_and_add(&nr_failed_dispatches, 1);
		return 0;
	}
	preempt = d.flags & RTHULHU_DSP_PREEMPT;
	d.flags &= ~RTHULHU_DSP_PREEMPT;
	cpu = d.cpu;
	if (cpu >= 0) {
		if (bpf_cpumask_test_cpu(cpu, p->cpus_ptr))
			dsq = SCX_DSQ_LOCAL_ON | cpu;
		else
			__sync_fetch_and_add(&nr_bounce_dispatches, 1);
	}
	/*
	 * The shared queue is ordered by the plugin's vtime, so a task the
	 * plugin ranks higher overtakes ones it handed over earlier.
	 */
	if (dsq == RTHULHU_SHARED_DSQ) {
		scx_bpf_dsq_insert_vtime(p, dsq, d.slice_ns, d.vtime, d.flags);
		/* No idle CPU for an urgent task: take its last CPU now, not at the next tick. */
		if (!kick_idle_cpu(p) && preempt)
			scx_bpf_kick_cpu(scx_bpf_task_cpu(p), SCX_KICK_PREEMPT);
	} else {
		p->scx.dsq_vtime = d.vtime;
		scx_bpf_dsq_insert(p, dsq, d.slice_ns, d.flags | (preempt ? SCX_ENQ_PREEMPT : 0));
		scx_bpf_kick_cpu(cpu, preempt ? SCX_KICK_PREEMPT : SCX_KICK_IDLE);
	}
	bpf_task_release(p);
	__sync_fetch_and_add(&nr_user_dispatches, 1);
	return --dc->slots == 0;
}

SEC("struct_ops/rthulhu_dispatch")
int rthulhu_dispatch(unsigned long long *ctx)
{
	struct drain_ctx dc = { .slots = scx_bpf_dispatch_nr_slots() };

	if (dc.slots)
		bpf_user_ringbuf_drain(&dispatched, dispatch_one, &dc, 0);
	if (scx_bpf_dsq_move_to_local(RTHULHU_SHARED_DSQ))
		return 0;
	/* This CPU has nothing to run: if the host holds tasks, it must decide now. */
	if (nr_scheduled)
		wake_host();
	return 0;
}

SEC("struct_ops/rthulhu_running")
int rthulhu_running(unsigned long long *ctx)
{
	struct task_struct *p = (void *)ctx[0];
	struct task_times *tt;

	tt = bpf_task_storage_get(&task_times, p, 0, BPF_LOCAL_STORAGE_GET_F_CREATE);
	if (!tt)
		return 0;
	tt->start_ts = bpf_ktime_get_ns();
	if (!is_host_thread(p)) {
		tt->counted = true;
		__sync_fetch_and_add(&nr_running, 1);
	}
	return 0;
}

SEC("struct_ops/rthulhu_stopping")
int rthulhu_stopping(unsigned long long *ctx)
{
	struct task_struct *p = (void *)ctx[0];
	struct task_times *tt;

	tt = bpf_task_storage_get(&task_times, p, 0, 0);
	if (!tt)
		return 0;
	tt->stop_ts = bpf_ktime_get_ns();
	if (tt->counted) {
		tt->counted = false;
		__sync_fetch_and_sub(&nr_running, 1);
	}
	return 0;
}

static int heartbeat_fn(void *map, int *key, struct heartbeat *hb)
{
	nr_queued = pending_records();
	nr_shared_queued = scx_bpf_dsq_nr_queued(RTHULHU_SHARED_DSQ);
	if (nr_scheduled || nr_queued)
		wake_host();
	bpf_timer_start(&hb->timer, heartbeat_ns, 0);
	return 0;
}

SEC("struct_ops.s/rthulhu_init")
s32 rthulhu_init(unsigned long long *ctx)
{
	u32 key = 0;
	struct heartbeat *hb;
	s32 err;

	nr_online_cpus = scx_bpf_nr_cpu_ids();
	err = scx_bpf_create_dsq(RTHULHU_SHARED_DSQ, -1);
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
	/* Written last: the host treats a non-zero kind as "the rest is valid". */
	exit_info.kind = ei->kind;
	wake_host();
	return 0;
}

/* default_select_cpu for plugins: the kernel's idle pick, run through BPF_PROG_TEST_RUN. */
SEC("syscall")
int default_select_cpu(struct rthulhu_select_cpu *arg)
{
	struct task_struct *p = bpf_task_from_pid(arg->pid);

	if (!p) {
		arg->cpu = -1;
		return 0;
	}
	/* cpus_ptr is only trusted inside an RCU read section here. */
	bpf_rcu_read_lock();
	arg->cpu = scx_bpf_select_cpu_and(p, arg->prev_cpu, 0, p->cpus_ptr, 0);
	bpf_rcu_read_unlock();
	bpf_task_release(p);
	return 0;
}

SEC(".struct_ops.link")
struct sched_ext_ops rthulhu_ops = {
	.select_cpu = (void *)rthulhu_select_cpu,
	.enqueue = (void *)rthulhu_enqueue,
	.dispatch = (void *)rthulhu_dispatch,
	.running = (void *)rthulhu_running,
	.stopping = (void *)rthulhu_stopping,
	.init = (void *)rthulhu_init,
	.exit = (void *)rthulhu_exit,
	.flags = SCX_OPS_ENQ_LAST,
	.timeout_ms = 5000,
	.name = "rthulhu",
};
