/* SPDX-License-Identifier: GPL-2.0-only OR BSD-2-Clause */
/*
 * Records shared by the BPF program (main.bpf.c) and the Rust host
 * (host/src/bpf/). Both sides check sizes and offsets at build time.
 */
#ifndef RTHULHU_INTF_H
#define RTHULHU_INTF_H

#define RTHULHU_COMM_LEN 16

/* Dispatch target meaning "any CPU" (the shared queue). */
#define RTHULHU_CPU_ANY (-1)

/*
 * Queues the host's decisions for "any CPU" go to, one per last-level cache
 * (RTHULHU_SHARED_DSQ + its index; the host reads from sysfs which CPUs
 * share one), each ordered by the plugin's vtime.
 */
#define RTHULHU_SHARED_DSQ 2ULL
/* Last-level caches with a queue of their own; more share them round-robin. */
#define RTHULHU_MAX_LLCS 64
/*
 * Queue of tasks that do not wait for the host: kernel threads, tasks handed
 * back from a CPU a higher class took, and tasks rescued from a late host.
 * FIFO; CPUs serve it and the shared queue in turn.
 */
#define RTHULHU_FALLBACK_DSQ 1ULL

/* Records in the kernel→host ring. */
#define RTHULHU_RING_RECORDS 8192

/* Tasks the host may hold at once; past this, tasks take the fallback queue. */
#define RTHULHU_MAX_HELD 65536

/* CPUs the heartbeat looks after (larger ids are served, but never rescued). */
#define RTHULHU_MAX_CPUS 1024

/*
 * A queued task, kernel → host (BPF_MAP_TYPE_RINGBUF "queued").
 * The first 88 bytes have the layout of plugin_api::QueuedTask; `gen` is the
 * host's: it comes back with the decision so that BPF can drop a decision
 * made for an older record of the same task. A record with pid 0 carries no
 * task: it only wakes the host; one with pid -P says BPF took task P back
 * (rescued or dequeued) from the host's record `gen`.
 */
struct rthulhu_queued {
	int pid;
	int tgid;
	int cpu;
	unsigned int nr_cpus_allowed;
	unsigned long long flags;
	unsigned long long start_ts;
	unsigned long long stop_ts;
	unsigned long long exec_runtime;
	unsigned long long weight;
	unsigned long long vtime;
	unsigned long long cgroup_id;
	char comm[RTHULHU_COMM_LEN];
	unsigned long long gen;
};

/* Record flag: the task woke from sleep since its previous record. Its
 * wake-up may never have reached the host (wake-ups placed straight onto a
 * CPU and preempting wake-ups do not), so without it a plugin would count
 * the runs on both sides of a sleep as one burst. Bit 55: below the kernel's
 * internal enqueue flags, unused by the public ones (cleared from them). */
#define RTHULHU_ENQ_SLEPT (1ULL << 55)

/* Dispatch flag: run now, preempting a running task if no CPU is idle. */
#define RTHULHU_DSP_PREEMPT (1ULL << 63)
/* Bits 48..55 of the dispatched flags: the task's class (see below). */
#define RTHULHU_DSP_CLASS_SHIFT 48
#define RTHULHU_DSP_CLASS_MASK (0xffULL << RTHULHU_DSP_CLASS_SHIFT)

/* Cgroups whose wake-up latency is tracked at once (the host serves the
 * top ones by p99). */
#define RTHULHU_MAX_CGROUPS 64

/* Wake-up latency per task class: classes told apart, and log2 buckets of
 * the wait (bucket i: [2^i, 2^(i+1)) ns; the last, every longer wait). */
#define RTHULHU_MAX_CLASSES 16
#define RTHULHU_LAT_BUCKETS 40

/* A decision, host → kernel (BPF_MAP_TYPE_USER_RINGBUF "dispatched"). */
struct rthulhu_dispatched {
	int pid;
	int cpu; /* a CPU, or RTHULHU_CPU_ANY */
	unsigned long long slice_ns;
	unsigned long long vtime;
	unsigned long long flags;
	unsigned long long gen; /* the record's, see struct rthulhu_queued */
};

#define RTHULHU_EXIT_DUMP_LEN 16384
#define RTHULHU_EXIT_REASON_LEN 128
#define RTHULHU_EXIT_MSG_LEN 1024

/* What ops.exit recorded about why the scheduler stopped. */
struct rthulhu_exit {
	int kind;
	int pad;
	long long code;
	char reason[RTHULHU_EXIT_REASON_LEN];
	char msg[RTHULHU_EXIT_MSG_LEN];
};

#ifdef __BPF__
_Static_assert(sizeof(struct rthulhu_queued) == 96, "queued record layout");
_Static_assert(__builtin_offsetof(struct rthulhu_queued, comm) == 72, "queued comm offset");
_Static_assert(__builtin_offsetof(struct rthulhu_queued, gen) == 88, "queued gen offset");
_Static_assert(sizeof(struct rthulhu_dispatched) == 40, "dispatched record layout");
#endif

#endif /* RTHULHU_INTF_H */
