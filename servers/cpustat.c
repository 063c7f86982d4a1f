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
 * Memory is bounded whatever the duration: the first readings up to --keep-s seconds (head) and a
 * ring of the last --keep-s seconds (tail) are kept, both capped by a memory budget; readings in
 * between are counted, not kept, and the output names that gap. */
#define _GNU_SOURCE
#include "net.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define NFIELDS 8	   /* user nice system idle iowait irq softirq steal, as /proc/stat orders them */
#define MAX_GROUP_PIDS 64  /* a --pid and its descendants */
#define MAX_GROUPS 8
#define BUDGET (16u << 20) /* bytes for kept readings (head + ring) */
#define STAT_BUF (1u << 20)

static const char *const field_names[NFIELDS] = {"user", "nice",   "system",  "idle",
						 "iowait", "irq", "softirq", "steal"};

struct group {
	int npids;
	pid_t pids[MAX_GROUP_PIDS];
	clockid_t clocks[MAX_GROUP_PIDS];
	uint64_t last_ns[MAX_GROUP_PIDS]; /* kept when a process has exited: counters never go back */
	uint64_t last_ut[MAX_GROUP_PIDS], last_st[MAX_GROUP_PIDS];
};

static struct group groups[MAX_GROUPS];
static int ngroups;
static int ncpu;	/* per-CPU lines in /proc/stat */
static size_t width;	/* u64 per reading: t, self, ncpu * NFIELDS, ngroups * 3 */
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

static void print_summary(uint64_t interval_ns, double keep_s, uint64_t started_ns)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	double self_s = (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
			(double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	uint64_t kept = nhead + nring;
	printf("{\"event\":\"summary\",\"tool\":\"sb-cpustat\",\"format\":1,\"interval_ns\":%llu,"
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

static void usage(void)
{
	printf("usage: sb-cpustat [--pid PID]... [--interval-us US] [--keep-s S]\n"
	       "  --pid PID         a process (with its descendants at start) whose CPU time to read;\n"
	       "                    up to %d\n"
	       "  --interval-us US  time between readings (default 2000, 100..1000000)\n"
	       "  --keep-s S        seconds of readings kept at the start and at the end (default 5)\n"
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
					   {"help", no_argument, 0, 'h'},
					   {0, 0, 0, 0}};
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

	statbuf = malloc(STAT_BUF);
	if (!statbuf)
		net_die("out of memory");
	if (read_file("/proc/stat", statbuf, STAT_BUF) <= 0)
		net_die("read /proc/stat: %s", strerror(errno));
	for (char *line = statbuf; line && strncmp(line, "cpu", 3) == 0; line = strchr(line, '\n'),
		  line = line ? line + 1 : 0)
		if (line[3] != ' ')
			ncpu++;
	for (int i = 0; i < npids; i++)
		add_group(pids[i]);
	width = 2 + (size_t)ncpu * NFIELDS + (size_t)ngroups * 3;
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
