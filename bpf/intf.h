/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Records shared by the BPF program (main.bpf.c) and the Rust host
 * (host/src/bpf/). Both sides check sizes and offsets at build time.
 */
#ifndef RTHULHU_INTF_H
#define RTHULHU_INTF_H

#define RTHULHU_COMM_LEN 16

/* Dispatch target meaning "any CPU" (the shared queue). */
#define RTHULHU_CPU_ANY (-1)

/* Id of the shared dispatch queue created in init. */
#define RTHULHU_SHARED_DSQ 0ULL

/* Records in the kernel→host ring. */
#define RTHULHU_RING_RECORDS 8192

/*
 * A queued task, kernel → host (BPF_MAP_TYPE_RINGBUF "queued").
 * Same layout as plugin_api::QueuedTask. A record with pid 0 carries no
 * task: it only wakes the host.
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
};

/* Dispatch flag: run now, preempting a running task if no CPU is idle. */
#define RTHULHU_DSP_PREEMPT (1ULL << 63)

/* A decision, host → kernel (BPF_MAP_TYPE_USER_RINGBUF "dispatched"). */
struct rthulhu_dispatched {
	int pid;
	int cpu; /* a CPU, or RTHULHU_CPU_ANY */
	unsigned long long slice_ns;
	unsigned long long vtime;
	unsigned long long flags;
};

/* Argument of the "default_select_cpu" syscall program (BPF_PROG_TEST_RUN). */
struct rthulhu_select_cpu {
	int pid;
	int prev_cpu;
	int cpu; /* out: chosen CPU, or negative */
	int pad;
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
_Static_assert(sizeof(struct rthulhu_queued) == 88, "queued record layout");
_Static_assert(__builtin_offsetof(struct rthulhu_queued, comm) == 72, "queued comm offset");
_Static_assert(sizeof(struct rthulhu_dispatched) == 32, "dispatched record layout");
_Static_assert(sizeof(struct rthulhu_select_cpu) == 16, "select_cpu layout");
#endif

#endif /* RTHULHU_INTF_H */
