// SPDX-License-Identifier: MIT
/* sb-cpustat: CPU counters of this host and of some processes, read at a fixed short interval,
 * each reading stamped with CLOCK_REALTIME (docs/programs.md, "CPU sampler").
 *
 * The orchestrator starts it beside the servers right before the clients and stops it with SIGTERM
 * right after them; the clients report their transfer's start and end on the same clock, and the
 * readings that bracket those marks give the CPU spent over exactly the transfer (results/cpu.py).
 *
 * Per reading: every per-CPU line of /proc/stat (clock ticks), and per --pid (with the descendants
 * it has when the sampler starts, e.g. NGINX's workers) the process CPU clock in ns
 * (clock_getcpuclockid: all threads, also exited ones, up to date for a running thread; the first
 * field of /proc/PID/task/TID/schedstat is not: it moves in scheduler ticks, 4 ms steps at HZ=250,
 * while a thread runs) plus utime and stime from /proc/PID/stat (ticks, for the user/system split).
 *
 * Per reading also, where the kernel allows it (perf_event_open(2), counting only, no sampling): system
 * calls (the raw_syscalls:sys_enter tracepoint), context switches and CPU migrations (software events)
 * host-wide (one event group per CPU, pid -1), of every --pid group (one event per thread the group has
 * when the sampler starts, with inherit: threads and processes they create later count in them, e.g.
 * io_uring's iou-wrk workers, NGINX's workers; each event read on its own: before Linux 4.3 a
 * PERF_FORMAT_GROUP read of an inherited group left out the children's counts) and of the sampler itself (subtracted from the host's counts
 * by results/cpu.py). The tracepoint's id is read from tracefs at /sys/kernel/tracing or
 * /sys/kernel/debug/tracing; where neither has it (a fresh sysfs, as `ip netns exec` mounts), tracefs
 * is mounted in a private mount namespace the sampler enters to read the id and leaves at once, so
 * the mount ends there and the sampler runs in the mount namespace it was started in. An event the
 * kernel refuses (kernel.perf_event_paranoid without CAP_PERFMON, a container, no tracefs) is left out
 * and the summary says why in perf_notes; the CPU readings go on.
 *
 * Memory is bounded whatever the duration: the first readings up to --keep-s seconds (head) and a
 * ring of the last --keep-s seconds (tail) are kept, both capped by a memory budget; readings in
 * between are counted, not kept, and the output names that gap. */
#define _GNU_SOURCE
#include "net.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/perf_event.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define NFIELDS 8	   /* user nice system idle iowait irq softirq steal, as /proc/stat orders them */
#define MAX_GROUP_PIDS 64  /* a --pid and its descendants */
#define MAX_GROUPS 8
#define BUDGET (16u << 20) /* bytes for kept readings (head + ring) */
#define STAT_BUF (1u << 20)
#define NPERF 3		   /* perf events counted: system calls, context switches, CPU migrations */
#define MAX_CPUS 4096
#define MAX_NOTES 8

static const char *const field_names[NFIELDS] = {"user", "nice",   "system",  "idle",
						 "iowait", "irq", "softirq", "steal"};
static const char *const perf_fields[NPERF] = {"syscalls", "ctxsw", "migrations"};
static const char *const perf_events[NPERF] = {"raw_syscalls:sys_enter", "context-switches",
					       "cpu-migrations"};

/* Counters of one scope: fds[i * NPERF + e] for event e of the scope's i-th thread (or CPU), -1
 * where not open; counted[e] when every one of them is open. */
struct counters {
	int n; /* threads or CPUs */
	int *fds;
	bool counted[NPERF];
	uint64_t last[NPERF]; /* counts never go back (a thread's event stays readable after it exits) */
};

struct group {
	int npids;
	pid_t pids[MAX_GROUP_PIDS];
	clockid_t clocks[MAX_GROUP_PIDS];
	uint64_t last_ns[MAX_GROUP_PIDS]; /* kept when a process has exited: counters never go back */
	uint64_t last_ut[MAX_GROUP_PIDS], last_st[MAX_GROUP_PIDS];
	struct counters perf;
};

static struct group groups[MAX_GROUPS];
static int ngroups;
static int ncpu;	/* per-CPU lines in /proc/stat */
static int cpu_ids[MAX_CPUS]; /* their CPU numbers */
/* u64 per reading: t, self, ncpu * NFIELDS, ngroups * 3, then perf counts: NPERF of the sampler,
 * NPERF host-wide, NPERF per group */
static size_t width;
static struct counters self_perf, host_perf;
/* Per CPU, the leaders of the host-wide groups: [0] the tracepoint, [1] the software events; per
 * group, its events in the order a group read returns them. */
static int host_leader[MAX_CPUS][2];
static int host_order[2][NPERF];
static int host_nopen[2];
static char *notes[MAX_NOTES];
static int nnotes;
static uint64_t *head, *ring, *cur;
static size_t cap, nhead, nring, ring_pos;
static uint64_t taken;
static char *statbuf;
static volatile sig_atomic_t stop;

static void on_term(int sig)
{
	(void)sig;
	stop = 1;
}

static uint64_t realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t clock_ns(clockid_t clk, bool *ok)
{
	struct timespec ts;
	*ok = clock_gettime(clk, &ts) == 0;
	return *ok ? (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec : 0;
}

/* Read a whole small /proc file into buf (NUL-terminated); its length, or -1. */
static ssize_t read_file(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t len = 0;
	for (;;) {
		ssize_t n = read(fd, buf + len, size - 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
		if (len == size - 1)
			break;
	}
	close(fd);
	buf[len] = 0;
	return (ssize_t)len;
}

/* utime and stime (fields 14 and 15) of /proc/PID/stat; false when the process is gone. */
static bool proc_ticks(pid_t pid, uint64_t *ut, uint64_t *st)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (read_file(path, buf, sizeof(buf)) <= 0)
		return false;
	char *p = strrchr(buf, ')'); /* the command name may hold spaces and parentheses */
	if (!p)
		return false;
	unsigned long long u, s;
	/* after ")": state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime */
	if (sscanf(p + 1, " %*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &u, &s) != 2)
		return false;
	*ut = u;
	*st = s;
	return true;
}

/* The parent of pid, or -1. */
static pid_t parent_of(pid_t pid)
{
	char path[64], buf[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	if (read_file(path, buf, sizeof(buf)) <= 0)
		return -1;
	char *p = strrchr(buf, ')');
	int ppid;
	return p && sscanf(p + 1, " %*c %d", &ppid) == 1 ? (pid_t)ppid : -1;
}

/* Add pid's descendants that exist now to g (one scan of /proc per generation). */
static void add_descendants(struct group *g)
{
	for (int from = 0; from < g->npids;) {
		int to = g->npids;
		DIR *d = opendir("/proc");
		if (!d)
			net_die("opendir /proc: %s", strerror(errno));
		struct dirent *e;
		while ((e = readdir(d)) && g->npids < MAX_GROUP_PIDS) {
			pid_t pid = (pid_t)atoi(e->d_name);
			if (pid <= 0)
				continue;
			pid_t pp = parent_of(pid);
			for (int i = from; i < to; i++)
				if (pp == g->pids[i]) {
					g->pids[g->npids++] = pid;
					break;
				}
		}
		closedir(d);
		from = to;
	}
}

static void add_group(pid_t pid)
{
	if (ngroups == MAX_GROUPS)
		net_usage_error("at most %d --pid options", MAX_GROUPS);
	struct group *g = &groups[ngroups++];
	g->pids[0] = pid;
	g->npids = 1;
	add_descendants(g);
	for (int i = 0; i < g->npids; i++) {
		int err = clock_getcpuclockid(g->pids[i], &g->clocks[i]);
		if (err)
			net_die("clock_getcpuclockid(%d): %s", (int)g->pids[i], strerror(err));
	}
}


/* A note for the summary's perf_notes (why an event is not counted). */
static void add_note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void add_note(const char *fmt, ...)
{
	if (nnotes == MAX_NOTES)
		return;
	va_list ap;
	va_start(ap, fmt);
	if (vasprintf(&notes[nnotes], fmt, ap) >= 0)
		nnotes++;
	va_end(ap);
}

static int paranoid_level(void)
{
	char buf[32];
	return read_file("/proc/sys/kernel/perf_event_paranoid", buf, sizeof(buf)) > 0 ? atoi(buf) : 99;
}

/* Why perf_event_open failed with err, for a note; host: a CPU-wide event. */
static void why_refused(char *out, size_t size, int err, bool host)
{
	int p = paranoid_level();
	if (err == EACCES || err == EPERM)
		snprintf(out, size,
			 "%s (kernel.perf_event_paranoid=%d: without CAP_PERFMON or root, counting %s "
			 "needs %s; a container's seccomp policy may refuse it too)",
			 strerror(err), p, host ? "every CPU" : "a process's kernel events",
			 host ? "a value of 0 or less" : "a value of 1 or less and the right to trace it");
	else if (err == ENOSYS)
		snprintf(out, size, "%s (a kernel without perf events, or a seccomp policy)", strerror(err));
	else if (err == ENOENT || err == EOPNOTSUPP || err == ENODEV)
		snprintf(out, size, "%s (this kernel does not provide the event)", strerror(err));
	else if (err == ESRCH)
		snprintf(out, size, "no thread of the process is left");
	else
		snprintf(out, size, "%s", strerror(err));
}

/* One note per error of the events refused in a scope (errs[e]: its errno, 0 if counted or not
 * tried): "<prefix><event>, <event><suffix> not counted: perf_event_open: <why>". */
static void note_refusals(const int errs[NPERF], const char *prefix, const char *suffix, bool host)
{
	bool done[NPERF] = {false};
	for (int e = 0; e < NPERF; e++) {
		if (!errs[e] || done[e])
			continue;
		char names[128] = "";
		for (int f = e; f < NPERF; f++)
			if (errs[f] == errs[e]) {
				done[f] = true;
				snprintf(names + strlen(names), sizeof(names) - strlen(names), "%s%s",
					 f == e ? "" : ", ", perf_events[f]);
			}
		char why[300];
		why_refused(why, sizeof(why), errs[e], host);
		add_note("%s%s%s not counted: perf_event_open: %s", prefix, names, suffix, why);
	}
}

static int sys_perf_event_open(struct perf_event_attr *a, pid_t pid, int cpu, int group)
{
	return (int)syscall(SYS_perf_event_open, a, pid, cpu, group, PERF_FLAG_FD_CLOEXEC);
}

static const char *const tracefs_ids[] = {"/sys/kernel/tracing/events/raw_syscalls/sys_enter/id",
					  "/sys/kernel/debug/tracing/events/raw_syscalls/sys_enter/id"};

/* The id of raw_syscalls:sys_enter, or -1 with a note. Where tracefs is mounted at neither place,
 * it is mounted at /sys/kernel/tracing in a mount namespace of this process only, for the read. */
static long long syscall_tracepoint(void)
{
	char buf[32];
	int errs[2];
	for (int i = 0; i < 2; i++) {
		if (read_file(tracefs_ids[i], buf, sizeof(buf)) > 0)
			return atoll(buf);
		errs[i] = errno;
	}
	if (errs[0] != ENOENT || errs[1] != ENOENT) {
		int err = errs[0] != ENOENT ? errs[0] : errs[1];
		add_note("system calls not counted: %s: %s%s", tracefs_ids[errs[0] != ENOENT ? 0 : 1],
			 strerror(err),
			 err == EACCES ? " (the tracepoint's id is in tracefs, which only root may read here)" : "");
		return -1;
	}
	/* Into a mount namespace of its own for the mount, and back (the orchestrator tells its
	 * programs by their mount namespace, hosts/ssh.py): the private one, and tracefs with it, is
	 * gone once left. */
	const char *why = NULL;
	long long id = -1;
	int home = open("/proc/self/ns/mnt", O_RDONLY | O_CLOEXEC);
	if (home < 0)
		why = "opening /proc/self/ns/mnt";
	else if (unshare(CLONE_NEWNS) != 0)
		why = "unshare(CLONE_NEWNS)";
	else {
		if (mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0)
			why = "making / private";
		else if (mount("nodev", "/sys/kernel/tracing", "tracefs", 0, NULL) != 0)
			why = "mount -t tracefs nodev /sys/kernel/tracing";
		else if (read_file(tracefs_ids[0], buf, sizeof(buf)) > 0)
			id = atoll(buf);
		else
			why = "reading the tracepoint's id";
		int err = errno;
		if (setns(home, CLONE_NEWNS) != 0)
			net_die("setns back into the mount namespace it started in: %s", strerror(errno));
		errno = err;
	}
	int err = errno;
	if (home >= 0)
		close(home);
	if (id >= 0)
		return id;
	add_note("system calls not counted: tracefs is mounted at neither /sys/kernel/tracing nor "
		 "/sys/kernel/debug/tracing, and %s failed: %s", why, strerror(err));
	return -1;
}

static void event_attr(struct perf_event_attr *a, int e, long long tp_id, bool inherit, bool group)
{
	memset(a, 0, sizeof(*a));
	a->size = sizeof(*a);
	if (e == 0) {
		a->type = PERF_TYPE_TRACEPOINT;
		a->config = (uint64_t)tp_id;
	} else {
		a->type = PERF_TYPE_SOFTWARE;
		a->config = e == 1 ? PERF_COUNT_SW_CONTEXT_SWITCHES : PERF_COUNT_SW_CPU_MIGRATIONS;
	}
	a->inherit = inherit;
	a->read_format = group ? PERF_FORMAT_GROUP : 0;
}

static int *alloc_fds(int n)
{
	int *fds = malloc((size_t)n * NPERF * sizeof(int));
	if (!fds)
		net_die("out of memory");
	for (int i = 0; i < n * NPERF; i++)
		fds[i] = -1;
	return fds;
}

static void close_event(struct counters *c, int e)
{
	for (int i = 0; i < c->n; i++)
		if (c->fds[i * NPERF + e] >= 0) {
			close(c->fds[i * NPERF + e]);
			c->fds[i * NPERF + e] = -1;
		}
}

/* Host-wide: on every CPU, the tracepoint alone and one group of the software events (a group
 * mixing the two counts only its leader's kind on a CPU-wide event, measured on 6.18). */
static int slot_of(int e)
{
	return e == 0 ? 0 : 1;
}

static void open_host(long long tp_id)
{
	host_perf.n = ncpu;
	host_perf.fds = alloc_fds(ncpu);
	for (int c = 0; c < ncpu; c++)
		host_leader[c][0] = host_leader[c][1] = -1;
	int errs[NPERF] = {0};
	for (int e = 0; e < NPERF; e++) {
		if (e == 0 && tp_id < 0)
			continue;
		struct perf_event_attr a;
		event_attr(&a, e, tp_id, false, true);
		int c, err = 0, slot = slot_of(e);
		for (c = 0; c < ncpu; c++) {
			int fd = sys_perf_event_open(&a, -1, cpu_ids[c], host_leader[c][slot]);
			if (fd < 0) {
				err = errno;
				break;
			}
			host_perf.fds[c * NPERF + e] = fd;
		}
		if (err) {
			close_event(&host_perf, e);
			errs[e] = err;
			continue;
		}
		for (c = 0; c < ncpu; c++)
			if (host_leader[c][slot] < 0)
				host_leader[c][slot] = host_perf.fds[c * NPERF + e];
		host_perf.counted[e] = true;
		host_order[slot][host_nopen[slot]++] = e;
	}
	note_refusals(errs, "host-wide ", "", true);
}

/* The threads of pid (its /proc/PID/task), appended to tids; their number. */
static int threads_of(pid_t pid, pid_t **tids, int *n, int *cap_)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
	DIR *d = opendir(path);
	if (!d)
		return 0;
	int found = 0;
	struct dirent *e;
	while ((e = readdir(d))) {
		pid_t tid = (pid_t)atoi(e->d_name);
		if (tid <= 0)
			continue;
		if (*n == *cap_) {
			*cap_ = *cap_ ? 2 * *cap_ : 64;
			*tids = realloc(*tids, (size_t)*cap_ * sizeof(pid_t));
			if (!*tids)
				net_die("out of memory");
		}
		(*tids)[(*n)++] = tid;
		found++;
	}
	closedir(d);
	return found;
}

/* Per thread of every process of g, with inherit (what they start later counts in them). */
static void open_group(struct group *g, long long tp_id)
{
	int errs[NPERF] = {0};
	pid_t *tids = NULL;
	int n = 0, cap_ = 0;
	for (int i = 0; i < g->npids; i++)
		threads_of(g->pids[i], &tids, &n, &cap_);
	struct counters *c = &g->perf;
	c->n = n;
	c->fds = alloc_fds(n > 0 ? n : 1);
	for (int e = 0; e < NPERF; e++) {
		if (e == 0 && tp_id < 0)
			continue;
		struct perf_event_attr a;
		event_attr(&a, e, tp_id, true, false);
		int err = 0, opened = 0;
		for (int i = 0; i < n && !err; i++) {
			int fd = sys_perf_event_open(&a, tids[i], -1, -1);
			if (fd >= 0) {
				c->fds[i * NPERF + e] = fd;
				opened++;
			} else if (errno != ESRCH) { /* ESRCH: the thread has exited meanwhile */
				err = errno;
			}
		}
		if (err || !opened) {
			close_event(c, e);
			errs[e] = err ? err : ESRCH; /* ESRCH: no thread of the group is left */
			continue;
		}
		c->counted[e] = true;
	}
	char suffix[64];
	snprintf(suffix, sizeof(suffix), " of --pid %d", (int)g->pids[0]);
	note_refusals(errs, "", suffix, false);
	free(tids);
}

static void open_self(long long tp_id)
{
	int errs[NPERF] = {0};
	self_perf.n = 1;
	self_perf.fds = alloc_fds(1);
	for (int e = 0; e < NPERF; e++) {
		if (e == 0 && tp_id < 0)
			continue;
		struct perf_event_attr a;
		event_attr(&a, e, tp_id, false, false);
		int fd = sys_perf_event_open(&a, 0, -1, -1);
		if (fd < 0) {
			if (host_perf.counted[e])
				errs[e] = errno;
			continue;
		}
		self_perf.fds[e] = fd;
		self_perf.counted[e] = true;
	}
	note_refusals(errs, "the sampler's own ", " (the host-wide counts include them)", false);
}

static void open_perf(void)
{
	long long tp_id = syscall_tracepoint();
	open_host(tp_id);
	for (int k = 0; k < ngroups; k++)
		open_group(&groups[k], tp_id);
	open_self(tp_id);
}

/* Sum of each counted event of c into out[NPERF] (0 for the others). */
static void read_counters(struct counters *c, uint64_t *out)
{
	for (int e = 0; e < NPERF; e++) {
		uint64_t sum = 0;
		if (c->counted[e])
			for (int i = 0; i < c->n; i++) {
				uint64_t v;
				int fd = c->fds[i * NPERF + e];
				if (fd >= 0 && read(fd, &v, sizeof(v)) == (ssize_t)sizeof(v))
					sum += v;
			}
		if (sum > c->last[e])
			c->last[e] = sum;
		out[e] = c->last[e];
	}
}

static void read_host(uint64_t *out)
{
	uint64_t sum[NPERF] = {0};
	for (int slot = 0; slot < 2; slot++) {
		int n = host_nopen[slot];
		if (!n)
			continue;
		for (int c = 0; c < ncpu; c++) {
			uint64_t buf[1 + NPERF];
			ssize_t want = (ssize_t)((1 + (size_t)n) * sizeof(uint64_t));
			if (read(host_leader[c][slot], buf, sizeof(buf)) != want || buf[0] != (uint64_t)n)
				net_die("reading the host-wide perf events of CPU %d: %s", cpu_ids[c],
					strerror(errno));
			for (int j = 0; j < n; j++)
				sum[host_order[slot][j]] += buf[1 + j];
		}
	}
	for (int e = 0; e < NPERF; e++) {
		if (sum[e] > host_perf.last[e])
			host_perf.last[e] = sum[e];
		out[e] = host_perf.last[e];
	}
}

/* Fill r with one reading; exits if /proc/stat cannot be read or changed its CPU count. */
static void take(uint64_t *r)
{
	bool ok;
	r[0] = realtime_ns();
	r[1] = clock_ns(CLOCK_PROCESS_CPUTIME_ID, &ok);
	if (read_file("/proc/stat", statbuf, STAT_BUF) <= 0)
		net_die("read /proc/stat: %s", strerror(errno));
	int n = 0;
	for (char *line = statbuf; line && *line; line = strchr(line, '\n'), line = line ? line + 1 : 0) {
		if (strncmp(line, "cpu", 3) != 0)
			break; /* the cpu lines come first */
		if (line[3] == ' ')
			continue; /* the aggregate line: the sum of the per-CPU ones */
		if (n >= ncpu)
			net_die("/proc/stat lists more CPUs than at start (%d)", ncpu);
		if (atoi(line + 3) != cpu_ids[n])
			net_die("/proc/stat lists CPU %d where it listed %d at start", atoi(line + 3), cpu_ids[n]);
		unsigned long long v[NFIELDS] = {0};
		sscanf(line + 3, "%*d %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
		       &v[3], &v[4], &v[5], &v[6], &v[7]);
		for (int f = 0; f < NFIELDS; f++)
			r[2 + (size_t)n * NFIELDS + f] = v[f];
		n++;
	}
	if (n != ncpu)
		net_die("/proc/stat lists %d CPUs, %d at start (CPU hot-plug during a sample)", n, ncpu);
	uint64_t *gr = r + 2 + (size_t)ncpu * NFIELDS;
	for (int k = 0; k < ngroups; k++) {
		struct group *g = &groups[k];
		uint64_t ns = 0, ut = 0, st = 0;
		for (int i = 0; i < g->npids; i++) {
			uint64_t v = clock_ns(g->clocks[i], &ok);
			if (ok && v >= g->last_ns[i])
				g->last_ns[i] = v;
			uint64_t u, s;
			if (proc_ticks(g->pids[i], &u, &s) && u >= g->last_ut[i] && s >= g->last_st[i]) {
				g->last_ut[i] = u;
				g->last_st[i] = s;
			}
			ns += g->last_ns[i];
			ut += g->last_ut[i];
			st += g->last_st[i];
		}
		gr[3 * k] = ns;
		gr[3 * k + 1] = ut;
		gr[3 * k + 2] = st;
	}
	uint64_t *pr = gr + 3 * (size_t)ngroups;
	read_counters(&self_perf, pr);
	read_host(pr + NPERF);
	for (int k = 0; k < ngroups; k++)
		read_counters(&groups[k].perf, pr + NPERF * (2 + (size_t)k));
}

/* Keep reading cur: in the head while it has room, else in the ring (overwriting the oldest). */
static void keep(void)
{
	if (nhead < cap) {
		memcpy(head + nhead++ * width, cur, width * sizeof(*cur));
		return;
	}
	memcpy(ring + ring_pos * width, cur, width * sizeof(*cur));
	ring_pos = (ring_pos + 1) % cap;
	if (nring < cap)
		nring++;
}

static void print_reading(const uint64_t *r, bool first)
{
	printf("%s[", first ? "" : ",");
	for (size_t i = 0; i < width; i++)
		printf("%s%llu", i ? "," : "", (unsigned long long)r[i]);
	putchar(']');
}

static void print_counted(const struct counters *c)
{
	printf("[%s,%s,%s]", c->counted[0] ? "true" : "false", c->counted[1] ? "true" : "false",
	       c->counted[2] ? "true" : "false");
}

static void print_json_string(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			printf("\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			printf("\\u%04x", *s);
		else
			putchar(*s);
	}
	putchar('"');
}

static void print_summary(uint64_t interval_ns, double keep_s, uint64_t started_ns)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double self_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
			(double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	uint64_t kept = nhead + nring;
	printf("{\"event\":\"summary\",\"tool\":\"sb-cpustat\",\"format\":2,\"interval_ns\":%llu,"
	       "\"keep_s\":%.3f,\"clk_tck\":%ld,\"ncpu\":%d,\"cpu_fields\":[",
	       (unsigned long long)interval_ns, keep_s, sysconf(_SC_CLK_TCK), ncpu);
	for (int f = 0; f < NFIELDS; f++)
		printf("%s\"%s\"", f ? "," : "", field_names[f]);
	printf("],\"groups\":[");
	for (int k = 0; k < ngroups; k++) {
		printf("%s[", k ? "," : "");
		for (int i = 0; i < groups[k].npids; i++)
			printf("%s%d", i ? "," : "", (int)groups[k].pids[i]);
		putchar(']');
	}
	printf("],\"perf_fields\":[");
	for (int e = 0; e < NPERF; e++)
		printf("%s\"%s\"", e ? "," : "", perf_fields[e]);
	printf("],\"perf_counted\":{\"self\":");
	print_counted(&self_perf);
	printf(",\"host\":");
	print_counted(&host_perf);
	printf(",\"groups\":[");
	for (int k = 0; k < ngroups; k++) {
		printf("%s", k ? "," : "");
		print_counted(&groups[k].perf);
	}
	printf("]},\"perf_notes\":[");
	for (int i = 0; i < nnotes; i++) {
		printf("%s", i ? "," : "");
		print_json_string(notes[i]);
	}
	printf("],\"group_fields\":[\"cpu_ns\",\"utime\",\"stime\"],\"taken\":%llu,\"kept\":%llu,"
	       "\"dropped\":%llu,\"self_cpu_s\":%.6f,\"wall_s\":%.6f,\"readings\":[",
	       (unsigned long long)taken, (unsigned long long)kept,
	       (unsigned long long)(taken - kept), self_s,
	       (double)(realtime_ns() - started_ns) / 1e9);
	for (size_t i = 0; i < nhead; i++)
		print_reading(head + i * width, i == 0);
	size_t oldest = nring < cap ? 0 : ring_pos;
	for (size_t i = 0; i < nring; i++)
		print_reading(ring + ((oldest + i) % cap) * width, nhead == 0 && i == 0);
	printf("]}\n");
	fflush(stdout);
}

/* --hold: keep the system-call tracepoint registered while samplers come and go. Releasing the last
 * perf event of a tracepoint unregisters its probe and waits for RCU grace periods: about 40-60 ms
 * here, which a sampler would otherwise spend in its exit after every sample (and registering it
 * again at the next start). One disabled event on this process is enough; nothing is read. */
static int hold(void)
{
	long long tp_id = syscall_tracepoint();
	int fd = -1;
	if (tp_id >= 0) {
		struct perf_event_attr a;
		event_attr(&a, 0, tp_id, false, false);
		a.disabled = 1;
		fd = sys_perf_event_open(&a, 0, -1, -1);
		if (fd < 0)
			add_note("the system-call tracepoint could not be held: %s", strerror(errno));
	}
	printf("{\"event\":\"ready\",\"tool\":\"sb-cpustat\",\"pid\":%d,\"holding\":%s,\"notes\":[",
	       (int)getpid(), fd >= 0 ? "true" : "false");
	for (int i = 0; i < nnotes; i++) {
		printf(i ? "," : "");
		print_json_string(notes[i]);
	}
	printf("]}\n");
	fflush(stdout);
	sigset_t term, none;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigaddset(&term, SIGINT);
	sigprocmask(SIG_BLOCK, &term, &none); /* no signal lost between the test and the wait */
	while (!stop)
		sigsuspend(&none);
	return 0;
}

static void usage(void)
{
	printf("usage: sb-cpustat [--pid PID]... [--interval-us US] [--keep-s S]\n"
	       "       sb-cpustat --hold\n"
	       "  --pid PID         a process (with its descendants at start) whose CPU time to read;\n"
	       "                    up to %d\n"
	       "  --interval-us US  time between readings (default 2000, 100..1000000)\n"
	       "  --keep-s S        seconds of readings kept at the start and at the end (default 5)\n"
	       "  --hold            take no readings: keep the system-call tracepoint registered\n"
	       "                    (samplers then start and exit faster) until SIGTERM or SIGINT\n"
	       "Prints a ready line once the first reading is taken, then on SIGTERM or SIGINT one\n"
	       "summary line with the kept readings (docs/programs.md).\n",
	       MAX_GROUPS);
}

int main(int argc, char **argv)
{
	net_prog = "sb-cpustat";
	uint64_t interval_us = 2000, keep_s = 5;
	static const struct option lo[] = {{"pid", required_argument, 0, 'p'},
					   {"interval-us", required_argument, 0, 'i'},
					   {"keep-s", required_argument, 0, 'k'},
					   {"hold", no_argument, 0, 'H'},
					   {"help", no_argument, 0, 'h'},
					   {0, 0, 0, 0}};
	bool holding = false;
	pid_t pids[MAX_GROUPS];
	int npids = 0;
	int c;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'p':
			if (npids == MAX_GROUPS)
				net_usage_error("at most %d --pid options", MAX_GROUPS);
			pids[npids++] = (pid_t)net_parse_u64("--pid", optarg, 1u << 22);
			break;
		case 'i':
			interval_us = net_parse_u64("--interval-us", optarg, 1000000);
			if (interval_us < 100)
				net_usage_error("--interval-us: %llu is smaller than the minimum 100",
						(unsigned long long)interval_us);
			break;
		case 'k':
			keep_s = net_parse_u64("--keep-s", optarg, 3600);
			break;
		case 'H':
			holding = true;
			break;
		case 'h':
			usage();
			return 0;
		default:
			net_usage_error("unknown option");
		}
	}
	if (optind < argc)
		net_usage_error("unexpected argument '%s'", argv[optind]);
	net_raise_nofile();

	struct sigaction sa = {.sa_handler = on_term}; /* no SA_RESTART: the sleep returns EINTR */
	sigaction(SIGTERM, &sa, NULL);
	sigaction(SIGINT, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
	if (holding) {
		if (npids)
			net_usage_error("--hold takes no --pid");
		return hold();
	}

	statbuf = malloc(STAT_BUF);
	if (!statbuf)
		net_die("out of memory");
	if (read_file("/proc/stat", statbuf, STAT_BUF) <= 0)
		net_die("read /proc/stat: %s", strerror(errno));
	for (char *line = statbuf; line && strncmp(line, "cpu", 3) == 0; line = strchr(line, '\n'),
		  line = line ? line + 1 : 0)
		if (line[3] != ' ') {
			if (ncpu == MAX_CPUS)
				net_die("more than %d CPUs", MAX_CPUS);
			cpu_ids[ncpu++] = atoi(line + 3);
		}
	for (int i = 0; i < npids; i++)
		add_group(pids[i]);
	open_perf();
	width = 2 + (size_t)ncpu * NFIELDS + (size_t)ngroups * 3 + NPERF * (2 + (size_t)ngroups);
	size_t want = (size_t)(keep_s * 1000000 / interval_us) + 1;
	size_t fit = BUDGET / (2 * width * sizeof(uint64_t));
	cap = want < fit ? want : fit;
	if (cap < 2)
		cap = 2;
	head = malloc(cap * width * sizeof(uint64_t));
	ring = malloc(cap * width * sizeof(uint64_t));
	cur = malloc(width * sizeof(uint64_t));
	if (!head || !ring || !cur)
		net_die("out of memory for %zu readings", 2 * cap);

	take(cur);
	taken++;
	keep();
	uint64_t started = cur[0];
	printf("{\"event\":\"ready\",\"tool\":\"sb-cpustat\",\"pid\":%d,\"t_ns\":%llu,\"ncpu\":%d}\n",
	       (int)getpid(), (unsigned long long)started, ncpu);
	fflush(stdout);

	/* Readings on a monotonic schedule (absolute deadlines: no drift from the reading's own cost). */
	uint64_t interval_ns = interval_us * 1000;
	struct timespec next;
	clock_gettime(CLOCK_MONOTONIC, &next);
	while (!stop) {
		next.tv_nsec += (long)interval_ns;
		while (next.tv_nsec >= 1000000000L) {
			next.tv_nsec -= 1000000000L;
			next.tv_sec++;
		}
		struct timespec now;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec > next.tv_sec || (now.tv_sec == next.tv_sec && now.tv_nsec > next.tv_nsec))
			next = now; /* fell behind (a busy host): no burst of catch-up readings */
		int err = clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &next, NULL);
		if (err && err != EINTR)
			net_die("clock_nanosleep: %s", strerror(err));
		take(cur); /* also after SIGTERM: the last reading is the one closest to the stop */
		taken++;
		keep();
	}
	print_summary(interval_ns, (double)keep_s, started);
	return 0;
}
