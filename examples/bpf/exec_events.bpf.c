// SPDX-License-Identifier: MIT OR GPL-2.0-only
//
// The BPF side of the integration examples (examples/aya, examples/libbpf-rs), as a user of
// either library would write it: plain C, built with `clang -target bpf -g -O2` (the build
// scripts do that; -g gives the BTF both loaders need for the maps and the drain callback).
//
// On every exec on the machine (tracepoint sched/sched_process_exec) it
//   1. drains the USER_RINGBUF `commands` with bpf_user_ringbuf_drain: each command sample
//      user space wrote comes back as an EVENT_COMMAND record in `events`, so user space
//      can see that the kernel drained it;
//   2. writes an EVENT_EXEC record into the RINGBUF `events`: pid, time, command name and
//      the path that was exec'd.
//
// Both records are `struct event` (exec_events.rs has the Rust twin; the layout needs no
// implicit padding, so it is the same on every target).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>

#define EVENT_EXEC 1
#define EVENT_COMMAND 2

struct event {
	__u32 kind;	      // EVENT_EXEC or EVENT_COMMAND
	__u32 pid;	      // the process that exec'd (for a command: whose exec drained it)
	__u64 value;	      // EVENT_EXEC: bpf_ktime_get_ns(); EVENT_COMMAND: the command's cookie
	char comm[16];	      // the command name after the exec
	char filename[64];    // the path passed to exec, NUL-terminated, cut at 63 bytes
};

struct command {
	__u64 cookie;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 256 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_USER_RINGBUF);
	__uint(max_entries, 16 * 1024);
} commands SEC(".maps");

// The tracepoint's record, as /sys/kernel/tracing/events/sched/sched_process_exec/format
// describes it.
struct sched_process_exec_args {
	__u64 common;		  // common_type, common_flags, common_preempt_count, common_pid
	__u32 filename_loc;	  // __data_loc char[] filename: offset in the low 16 bits
	__s32 pid;
	__s32 old_pid;
};

static long on_command(struct bpf_dynptr *sample, void *ctx)
{
	struct command command;
	struct event *event;

	// A sample of another size is skipped; the drain goes on with the next one.
	if (bpf_dynptr_read(&command, sizeof(command), sample, 0, 0))
		return 0;
	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event)
		return 1; // the ring is full: stop draining, the rest waits for the next exec
	event->kind = EVENT_COMMAND;
	event->pid = bpf_get_current_pid_tgid() >> 32;
	event->value = command.cookie;
	__builtin_memset(event->comm, 0, sizeof(event->comm));
	__builtin_memset(event->filename, 0, sizeof(event->filename));
	bpf_ringbuf_submit(event, 0);
	return 0;
}

SEC("tracepoint/sched/sched_process_exec")
int handle_exec(struct sched_process_exec_args *ctx)
{
	struct event *event;
	unsigned int filename = ctx->filename_loc & 0xffff;

	bpf_user_ringbuf_drain(&commands, on_command, NULL, 0);

	event = bpf_ringbuf_reserve(&events, sizeof(*event), 0);
	if (!event)
		return 0;
	event->kind = EVENT_EXEC;
	event->pid = bpf_get_current_pid_tgid() >> 32;
	event->value = bpf_ktime_get_ns();
	bpf_get_current_comm(event->comm, sizeof(event->comm));
	if (bpf_probe_read_kernel_str(event->filename, sizeof(event->filename),
				      (void *)ctx + filename) < 0)
		event->filename[0] = 0;
	bpf_ringbuf_submit(event, 0);
	return 0;
}

// The kernel lets only GPL-compatible programs call bpf_probe_read_kernel_str.
char LICENSE[] SEC("license") = "Dual MIT/GPL";
