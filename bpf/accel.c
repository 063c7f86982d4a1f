// SPDX-License-Identifier: MIT
/* sb-accel: SOCKMAP acceleration (bpf/accel.bpf.c) for the programs of one cgroup v2.
 *
 * Creates a cgroup named sb-accel-<pid>-<random> under the cgroup2 mount (found in
 * /proc/self/mountinfo), attaches the sockops program to it with a BPF link and the sk_msg
 * program to accel_hash, prints a ready JSON line naming the cgroup, and waits. Programs that
 * should be accelerated move themselves into the cgroup before they exec (cgroup.procs). On
 * SIGTERM or SIGINT it detaches both programs, kills whatever is still in the cgroup, removes
 * it and prints a summary JSON line with the counters. Nothing is pinned: killed with SIGKILL,
 * the kernel detaches the link and frees the maps with the last descriptor, and only the empty
 * cgroup directory stays for `invoke clean` (its name starts with sb-accel-).
 *
 * --probe checks the same things without keeping anything: cgroup2 mount, the sockops and sk_msg
 * program types, and prints one JSON line ({"event":"probe","ok":...,"missing":...}).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "accel.h"
#include "accel.skel.h"
#include "counters.h"
#include "net.h"
#include "sockmap_common.h"

#define TOOL "sb-accel"
#define CGROUP_PREFIX "sb-accel-"
#define DEFAULT_MAX_CONNS 65536u

static struct {
	struct accel_bpf *skel;
	struct bpf_link *sockops_link;
	int hash_fd;
	bool msg_attached;
	char cgroup[4096]; /* the cgroup directory this process created, "" if none */
} g = {.hash_fd = -1};

/* Names of the counters in the summary line, in enum accel_counter order. */
static const char *const COUNTER_NAMES[ACCEL_CNT_MAX] = {
    "sockets", "insert_failed", "dirs_redirected", "dirs_tcp_early", "dirs_tcp_remote",
    "msgs_redirected", "bytes_redirected", "redirect_failed", "no_storage",
};

static void usage(FILE *f)
{
	fprintf(f,
		"usage: sb-accel [options]\n"
		"  --max-conns N   sockets accel_hash holds (default %u)\n"
		"  --probe         check cgroup2, sockops and sk_msg support, print one JSON line\n"
		"  --help\n"
		"Prints a ready JSON line with the cgroup to run programs in, and a summary JSON line\n"
		"on SIGTERM/SIGINT. Needs CAP_BPF, CAP_NET_ADMIN and write access to cgroup2 (root).\n",
		DEFAULT_MAX_CONNS);
}

/* Decode mountinfo's octal escapes (\040 for a space) in place. */
static void unescape(char *s)
{
	char *o = s;
	for (char *p = s; *p; p++) {
		if (p[0] == '\\' && p[1] >= '0' && p[1] <= '3' && p[2] >= '0' && p[2] <= '7' &&
		    p[3] >= '0' && p[3] <= '7') {
			*o++ = (char)((p[1] - '0') * 64 + (p[2] - '0') * 8 + (p[3] - '0'));
			p += 3;
		} else {
			*o++ = *p;
		}
	}
	*o = 0;
}

/* The mount point of the first cgroup2 file system in /proc/self/mountinfo into out (size n).
 * Returns 0, or -1 when there is none. */
static int find_cgroup2(char *out, size_t n)
{
	FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return -1;
	char line[8192];
	int found = -1;
	while (found < 0 && fgets(line, sizeof(line), f)) {
		/* id parent major:minor root mountpoint options [optional...] - fstype source sb */
		char *sep = strstr(line, " - ");
		if (!sep)
			continue;
		char fstype[64] = "";
		if (sscanf(sep + 3, "%63s", fstype) != 1 || strcmp(fstype, "cgroup2"))
			continue;
		char mnt[4096];
		if (sscanf(line, "%*s %*s %*s %*s %4095s", mnt) != 1)
			continue;
		unescape(mnt);
		if (strlen(mnt) < n) {
			strcpy(out, mnt);
			found = 0;
		}
	}
	fclose(f);
	return found;
}

/* Whether programs of type t load here; on failure, why in err (size n). */
static bool probe_prog(enum bpf_prog_type t, char *err, size_t n)
{
	int r = libbpf_probe_bpf_prog_type(t, NULL);
	if (r == 1)
		return true;
	snprintf(err, n, "%s", r == 0 ? "not supported by this kernel" : strerror(-r));
	return false;
}

/* --probe: one JSON line with what is there and what is missing; exit 0 when everything is. */
static int probe(void)
{
	char mnt[4096] = "", why_ops[128] = "", why_msg[128] = "";
	bool have_cg = find_cgroup2(mnt, sizeof(mnt)) == 0;
	int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, NULL, 4, 4, 1, NULL);
	bool bpf_ok = fd >= 0;
	int bpf_errno = errno;
	if (fd >= 0)
		close(fd);
	bool ops = bpf_ok && probe_prog(BPF_PROG_TYPE_SOCK_OPS, why_ops, sizeof(why_ops));
	bool msg = bpf_ok && probe_prog(BPF_PROG_TYPE_SK_MSG, why_msg, sizeof(why_msg));
	bool hash = bpf_ok && libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SOCKHASH, NULL) == 1;
	char missing[1024] = "";
	size_t o = 0;
#define MISSING(...)                                                                               \
	o += (size_t)snprintf(missing + o, sizeof(missing) - o, "%s", o ? "; " : ""),              \
	    o += (size_t)snprintf(missing + o, sizeof(missing) - o, __VA_ARGS__)
	if (!have_cg)
		MISSING("no cgroup2 mount in /proc/self/mountinfo (mount -t cgroup2 none DIR)");
	if (!bpf_ok)
		MISSING("bpf(): %s", strerror(bpf_errno));
	else {
		if (!ops)
			MISSING("sockops program load: %s (CONFIG_CGROUP_BPF)", why_ops);
		if (!msg)
			MISSING("sk_msg program load: %s (CONFIG_NET_SOCK_MSG)", why_msg);
		if (!hash)
			MISSING("SOCKHASH map: not supported (CONFIG_BPF_SYSCALL, CONFIG_NET_SOCK_MSG)");
	}
#undef MISSING
	bool ok = !o;
	printf("{\"event\":\"probe\",\"tool\":\"" TOOL "\",\"ok\":%s,\"cgroup2\":", ok ? "true" : "false");
	if (have_cg) {
		putchar('"');
		for (const char *p = mnt; *p; p++)
			printf(*p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
		putchar('"');
	} else {
		printf("null");
	}
	printf(",\"sock_ops\":%s,\"sk_msg\":%s,\"sockhash\":%s,\"missing\":\"", ops ? "true" : "false",
	       msg ? "true" : "false", hash ? "true" : "false");
	for (const char *p = missing; *p; p++)
		printf(*p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
	printf("\"}\n");
	fflush(stdout);
	return ok ? 0 : 1;
}

/* Remove the cgroup this process created: whatever still runs in it is killed first (only the
 * programs started into it for this run can be there), then rmdir is retried for up to 2 s while
 * they exit. Safe to call more than once; registered with atexit so that every exit path runs it.
 * Returns 0 when it is gone (or there was none). */
static int cgroup_remove(void)
{
	if (!g.cgroup[0])
		return 0;
	char path[4200];
	for (int i = 0; i < 200; i++) {
		if (rmdir(g.cgroup) == 0 || errno == ENOENT) {
			g.cgroup[0] = 0;
			return 0;
		}
		if (errno != EBUSY)
			break;
		if (i == 0) {
			/* cgroup.kill (Linux 5.14); older kernels: each pid in cgroup.procs. */
			snprintf(path, sizeof(path), "%s/cgroup.kill", g.cgroup);
			int fd = open(path, O_WRONLY | O_CLOEXEC);
			if (fd < 0 || write(fd, "1", 1) != 1) {
				snprintf(path, sizeof(path), "%s/cgroup.procs", g.cgroup);
				FILE *f = fopen(path, "re");
				int pid;
				while (f && fscanf(f, "%d", &pid) == 1)
					if (pid > 0 && pid != getpid())
						kill(pid, SIGKILL);
				if (f)
					fclose(f);
			}
			if (fd >= 0)
				close(fd);
		}
		struct timespec ts = {0, 10 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
	net_warn("remove cgroup %s: %s", g.cgroup, strerror(errno));
	return -1;
}

static void at_exit(void) { (void)cgroup_remove(); }

/* Detach both programs and free the BPF objects (the link's destroy detaches sockops). */
static void bpf_teardown(void)
{
	if (g.sockops_link) {
		bpf_link__destroy(g.sockops_link);
		g.sockops_link = NULL;
	}
	if (g.msg_attached) {
		(void)bpf_prog_detach2(bpf_program__fd(g.skel->progs.accel_msg), g.hash_fd,
				       BPF_SK_MSG_VERDICT);
		g.msg_attached = false;
	}
	if (g.skel) {
		accel_bpf__destroy(g.skel);
		g.skel = NULL;
	}
}

/* Create the cgroup, load the programs and attach them; exits with one line naming the step. */
static void setup(uint32_t max_conns)
{
	char mnt[4096];
	if (find_cgroup2(mnt, sizeof(mnt)) < 0)
		net_die("no cgroup2 mount in /proc/self/mountinfo (mount -t cgroup2 none DIR)");
	uint32_t rnd = 0;
	if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
		rnd = (uint32_t)time(NULL);
	char dir[4096 + 64];
	snprintf(dir, sizeof(dir), "%s/" CGROUP_PREFIX "%d-%08x", mnt, (int)getpid(), rnd);
	if (strlen(dir) >= sizeof(g.cgroup))
		net_die("cgroup path too long: %s", dir);
	if (mkdir(dir, 0755) < 0)
		net_die("create cgroup %s: %s", dir, strerror(errno));
	strcpy(g.cgroup, dir);
	atexit(at_exit);

	sockmap_quiet_libbpf();
	struct accel_bpf *s = accel_bpf__open();
	if (!s)
		net_die("open BPF object: %s", strerror(errno));
	g.skel = s;
	if (bpf_map__set_max_entries(s->maps.accel_hash, max_conns))
		net_die("configure BPF maps: %s", strerror(errno));
	int err = accel_bpf__load(s);
	if (err == -EINVAL || err == -EOPNOTSUPP)
		net_die("load BPF programs: %s (kernel without CONFIG_CGROUP_BPF or "
			"CONFIG_NET_SOCK_MSG?)",
			strerror(-err));
	sockmap_check_load(err);
	g.hash_fd = bpf_map__fd(s->maps.accel_hash);
	if (bpf_prog_attach(bpf_program__fd(s->progs.accel_msg), g.hash_fd, BPF_SK_MSG_VERDICT, 0) < 0)
		net_die("attach sk_msg to accel_hash: %s", strerror(errno));
	g.msg_attached = true;
	int cg = open(g.cgroup, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (cg < 0)
		net_die("open cgroup %s: %s", g.cgroup, strerror(errno));
	g.sockops_link = bpf_program__attach_cgroup(s->progs.accel_sockops, cg);
	close(cg);
	if (!g.sockops_link)
		net_die("attach sockops to cgroup %s: %s", g.cgroup, strerror(errno));
}

/* The summary line: the counters summed over CPUs, and whether the cgroup is gone. */
static void print_summary(const uint64_t *cnt, bool removed)
{
	printf("{\"event\":\"summary\",\"tool\":\"" TOOL "\",\"counters\":{");
	for (int i = 0; i < ACCEL_CNT_MAX; i++)
		printf("%s\"%s\":%llu", i ? "," : "", COUNTER_NAMES[i], (unsigned long long)cnt[i]);
	printf("},\"cgroup_removed\":%s}\n", removed ? "true" : "false");
	fflush(stdout);
}

int main(int argc, char **argv)
{
	net_prog = TOOL;
	static const struct option opts[] = {
	    {"max-conns", required_argument, 0, 'n'},
	    {"probe", no_argument, 0, 'p'},
	    {"help", no_argument, 0, 'h'},
	    {0, 0, 0, 0},
	};
	uint32_t max_conns = DEFAULT_MAX_CONNS;
	bool do_probe = false;
	int c;
	while ((c = net_getopt(argc, argv, opts)) != -1) {
		switch (c) {
		case 'n':
			max_conns = sockmap_parse_max_conns(optarg);
			break;
		case 'p':
			do_probe = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind < argc)
		net_usage_error("unexpected argument '%s'", argv[optind]);
	sockmap_quiet_libbpf();
	if (do_probe)
		return probe();

	sockmap_check_caps();
	/* Before anything needs cleaning up: signals then wait in the fd. */
	int sfd = net_signalfd();
	setup(max_conns);
	printf("{\"event\":\"ready\",\"tool\":\"" TOOL "\",\"pid\":%d,\"cgroup\":\"", (int)getpid());
	for (const char *p = g.cgroup; *p; p++)
		printf(*p == '"' || *p == '\\' ? "\\%c" : "%c", *p);
	printf("\",\"max_conns\":%u}\n", max_conns);
	fflush(stdout);

	struct pollfd pfd = {.fd = sfd, .events = POLLIN};
	for (;;) {
		int n = poll(&pfd, 1, -1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			net_die("poll: %s", strerror(errno));
		struct signalfd_siginfo si;
		if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			break;
	}
	/* Detach sockops first (no new sockets), read the counters, then the rest. */
	if (g.sockops_link) {
		bpf_link__destroy(g.sockops_link);
		g.sockops_link = NULL;
	}
	uint64_t cnt[ACCEL_CNT_MAX];
	int cfd = bpf_map__fd(g.skel->maps.counters);
	for (int i = 0; i < ACCEL_CNT_MAX; i++)
		cnt[i] = sockmap_read_counter(cfd, (uint32_t)i);
	bpf_teardown();
	bool removed = cgroup_remove() == 0;
	print_summary(cnt, removed);
	return removed ? 0 : 1;
}
