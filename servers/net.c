// SPDX-License-Identifier: MIT
#define _GNU_SOURCE
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <sys/time.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

const char *net_prog = "splicebench";

/*
 * Dying with the orchestrator. When SPLICEBENCH_PARENT_PID holds the orchestrator's pid, the
 * program asks for SIGKILL at its parent's death, then exits 70 at once if its parent is not
 * (or no longer) that process: an orchestrator killed between its fork and this prctl() would
 * otherwise leave the program running. This runs before main() in every program (net.c is linked
 * into each), so the orchestrator starts them directly, without `setpriv --pdeathsig` and a shell
 * to check the parent (src/splicebench/hosts/local.py). Without the variable nothing happens.
 */
__attribute__((constructor)) static void net_parent_guard(void)
{
	const char *s = getenv("SPLICEBENCH_PARENT_PID");
	if (s == NULL)
		return;
	char *end;
	errno = 0;
	long want = strtol(s, &end, 10);
	if (errno != 0 || end == s || *end != '\0' || want <= 0)
		_exit(70);
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || (long)getppid() != want)
		_exit(70);
	unsetenv("SPLICEBENCH_PARENT_PID");
}

static void vmsg(const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", net_prog);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
}

void net_die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	exit(1);
}

void net_usage_error(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	vmsg(fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: usage: see %s --help\n", net_prog, net_prog);
	exit(2);
}

int net_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len)
{
	char host[INET6_ADDRSTRLEN + 2];
	const char *colon = strrchr(s, ':');
	if (!colon || colon == s)
		return -1;
	size_t hl = (size_t)(colon - s);
	if (hl >= sizeof(host))
		return -1;
	memcpy(host, s, hl);
	host[hl] = '\0';
	char *end;
	errno = 0;
	long port = strtol(colon + 1, &end, 10);
	if (errno || *end || end == colon + 1 || port < 0 || port > 65535)
		return -1;
	memset(ss, 0, sizeof(*ss));
	if (host[0] == '[') {
		if (hl < 3 || host[hl - 1] != ']')
			return -1;
		host[hl - 1] = '\0';
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)ss;
		if (inet_pton(AF_INET6, host + 1, &a6->sin6_addr) != 1)
			return -1;
		a6->sin6_family = AF_INET6;
		a6->sin6_port = htons((uint16_t)port);
		*len = sizeof(*a6);
		return 0;
	}
	struct sockaddr_in *a4 = (struct sockaddr_in *)ss;
	if (inet_pton(AF_INET, host, &a4->sin_addr) != 1)
		return -1;
	a4->sin_family = AF_INET;
	a4->sin_port = htons((uint16_t)port);
	*len = sizeof(*a4);
	return 0;
}

uint64_t net_parse_u64(const char *opt, const char *s, uint64_t max)
{
	char *end;
	errno = 0;
	if (!s || !*s || *s == '-')
		net_usage_error("%s: expected a non-negative integer, got '%s'", opt, s ? s : "");
	unsigned long long v = strtoull(s, &end, 10);
	if (errno || *end)
		net_usage_error("%s: expected a non-negative integer, got '%s'", opt, s);
	if (v > max)
		net_usage_error("%s: %llu is larger than the maximum %llu", opt, v,
				(unsigned long long)max);
	return v;
}

void net_set_nonblock(int fd)
{
	int fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
		net_die("fcntl(O_NONBLOCK): %s", strerror(errno));
	if (fcntl(fd, F_SETFD, FD_CLOEXEC) < 0)
		net_die("fcntl(FD_CLOEXEC): %s", strerror(errno));
}

void net_set_bufs(int fd, int sndbuf, int rcvbuf)
{
	if (sndbuf > 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf));
	if (rcvbuf > 0)
		(void)setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
}

int net_listen(const char *addr)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (net_parse_addr(addr, &ss, &len) < 0)
		net_usage_error("--listen: expected ADDR:PORT with a numeric address, got '%s'",
				addr);
	int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		net_die("socket: %s", strerror(errno));
	int one = 1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0)
		net_die("setsockopt(SO_REUSEADDR): %s", strerror(errno));
	if (bind(fd, (struct sockaddr *)&ss, len) < 0)
		net_die("cannot listen on %s: bind: %s", addr, strerror(errno));
	/* The kernel caps the backlog at net.core.somaxconn (4096 by default since 5.4). A large
	 * backlog matters: the client opens all of its connections at once. */
	if (listen(fd, 65535) < 0)
		net_die("cannot listen on %s: listen: %s", addr, strerror(errno));
	return fd;
}

void net_raise_nofile(void)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max;
		(void)setrlimit(RLIMIT_NOFILE, &rl);
	}
}

int net_signalfd(void)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
		net_die("sigprocmask: %s", strerror(errno));
	/* A peer that resets while we write must not kill the process: EPIPE is handled per call.
	 */
	signal(SIGPIPE, SIG_IGN);
	int fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		net_die("signalfd: %s", strerror(errno));
	return fd;
}

void net_print_ready(const char *server, int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	char host[INET6_ADDRSTRLEN] = "?";
	int port = 0;
	if (getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
		net_die("getsockname: %s", strerror(errno));
	if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &a6->sin6_addr, host, sizeof(host));
		port = ntohs(a6->sin6_port);
	} else {
		struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &a4->sin_addr, host, sizeof(host));
		port = ntohs(a4->sin_port);
	}
	printf("{\"event\":\"ready\",\"server\":\"%s\",\"addr\":\"%s\",\"port\":%d,\"pid\":%d}\n",
	       server, host, port, (int)getpid());
	fflush(stdout);
}

void net_print_summary(const char *server, const struct net_stats *st)
{
	net_print_summary_extra(server, st, "");
}

void net_print_summary_extra(const char *server, const struct net_stats *st, const char *extra)
{
	/* Worker processes (reaped by now) count with the process that started them. */
	struct rusage ru, ch;
	getrusage(RUSAGE_SELF, &ru);
	getrusage(RUSAGE_CHILDREN, &ch);
	timeradd(&ru.ru_utime, &ch.ru_utime, &ru.ru_utime);
	timeradd(&ru.ru_stime, &ch.ru_stime, &ru.ru_stime);
	printf("{\"event\":\"summary\",\"server\":\"%s\",\"connections\":%llu,\"active\":%llu,"
	       "\"bytes_in\":%llu,\"bytes_out\":%llu,\"errors\":%llu%s,\"cpu_user_s\":%.6f,"
	       "\"cpu_sys_s\":%.6f}\n",
	       server, (unsigned long long)st->connections, (unsigned long long)st->active,
	       (unsigned long long)st->bytes_in, (unsigned long long)st->bytes_out,
	       (unsigned long long)st->errors, extra,
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	fflush(stdout);
}

uint64_t net_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

void net_warn(const char *fmt, ...)
{
	/* One write, as the lines it replaces: stderr is unbuffered. */
	char msg[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s: warning: %s\n", net_prog, msg);
}

int net_getopt(int argc, char **argv, const struct option *lo)
{
	opterr = 0;
	/* The leading ':' makes a missing value ':' rather than '?'. */
	int c = getopt_long(argc, argv, ":", lo, NULL);
	if (c == ':')
		net_usage_error("%s needs a value", argv[optind - 1]);
	if (c == '?')
		net_usage_error("unknown option '%s'", argv[optind - 1]);
	if (c == -1 && optind < argc)
		net_usage_error("unexpected argument '%s'", argv[optind]);
	return c;
}

enum { OPT_LISTEN = 256, OPT_SNDBUF, OPT_RCVBUF, OPT_HELP };

void net_parse_opts(int argc, char **argv, const struct option *own,
		    void (*own_opt)(int val, const char *arg), void (*usage)(FILE *f), int buf_max,
		    struct net_opts *o)
{
	static const struct option common[] = {
	    {"listen", required_argument, 0, OPT_LISTEN},
	    {"sndbuf", required_argument, 0, OPT_SNDBUF},
	    {"rcvbuf", required_argument, 0, OPT_RCVBUF},
	    {"help", no_argument, 0, OPT_HELP},
	};
	struct option lo[4 + 16 + 1];
	size_t n = 0;
	for (; n < 4; n++)
		lo[n] = common[n];
	for (; own && own[n - 4].name; n++) {
		if (n >= 4 + 16)
			net_die("net_parse_opts: too many options");
		lo[n] = own[n - 4];
	}
	lo[n] = (struct option){0, 0, 0, 0};
	int c;
	while ((c = net_getopt(argc, argv, lo)) != -1) {
		switch (c) {
		case OPT_LISTEN:
			o->listen = optarg;
			break;
		case OPT_SNDBUF:
			o->sndbuf = (int)net_parse_u64("--sndbuf", optarg, (uint64_t)buf_max);
			break;
		case OPT_RCVBUF:
			o->rcvbuf = (int)net_parse_u64("--rcvbuf", optarg, (uint64_t)buf_max);
			break;
		case OPT_HELP:
			usage(stdout);
			exit(0);
		default:
			own_opt(c, optarg);
		}
	}
}

void net_set_nodelay(int fd)
{
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int net_sock_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

size_t net_pipe_max_size(void)
{
	FILE *f = fopen("/proc/sys/fs/pipe-max-size", "r");
	unsigned long v = 0;
	if (f) {
		if (fscanf(f, "%lu", &v) != 1)
			v = 0;
		fclose(f);
	}
	return v;
}

size_t net_pipe_size(size_t requested)
{
	if (requested == 0)
		net_usage_error("--pipe-size must be at least 1");
	size_t max = net_pipe_max_size();
	return max && requested > max ? max : requested;
}

size_t net_pipe(int fds[2], size_t size, uint64_t *refused)
{
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0)
		return 0;
	int got = fcntl(fds[1], F_SETPIPE_SZ, (int)size);
	if (got < 0) {
		/* The pipe still works at its default size; count it and say so once now and once
		 * at exit (net_pipe_report). */
		if (__atomic_fetch_add(refused, 1, __ATOMIC_RELAXED) == 0)
			net_warn("F_SETPIPE_SZ %zu: %s; using the default size", size,
				 strerror(errno));
		got = fcntl(fds[1], F_GETPIPE_SZ);
		if (got <= 0)
			got = 4096;
	}
	return (size_t)got;
}

void net_pipe_report(uint64_t refused)
{
	if (refused)
		net_warn("%llu pipes kept the default size (F_SETPIPE_SZ refused)",
			 (unsigned long long)refused);
}

int net_epoll_create(void)
{
	int ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		net_die("epoll_create1: %s", strerror(errno));
	return ep;
}

void net_epoll_add(int ep, int fd, uint32_t events, void *tag)
{
	struct epoll_event e = {.events = events, .data.ptr = tag};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0)
		net_die("epoll_ctl(ADD): %s", strerror(errno));
}

void net_epoll_mod(int ep, int fd, void *tag, uint32_t *cur, uint32_t ev)
{
	if (*cur == ev)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = tag};
	if (epoll_ctl(ep, EPOLL_CTL_MOD, fd, &e) < 0)
		net_die("epoll_ctl(MOD): %s", strerror(errno));
	*cur = ev;
}

void net_epoll_set(int ep, int fd, void *tag, uint32_t *cur, uint32_t ev)
{
	if (*cur == ev)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = tag};
	int op = ev == 0 ? EPOLL_CTL_DEL : *cur == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
	if (epoll_ctl(ep, op, fd, &e) < 0)
		net_die("epoll_ctl: %s", strerror(errno));
	*cur = ev;
}

void net_server_open(struct net_server *s, const char *addr, const char *server)
{
	s->sfd = net_signalfd();
	net_raise_nofile();
	s->lfd = net_listen(addr);
	s->ep = net_epoll_create();
	s->listen_tag = &s->lfd;
	s->signal_tag = &s->sfd;
	net_epoll_add(s->ep, s->lfd, EPOLLIN, s->listen_tag);
	net_epoll_add(s->ep, s->sfd, EPOLLIN, s->signal_tag);
	net_print_ready(server, s->lfd);
}

void net_server_run(struct net_server *s, void (*on_listen)(void),
		    void (*on_event)(void *tag, uint32_t events), void (*after_batch)(void))
{
	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(s->ep, evs, 256, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			net_die("epoll_wait: %s", strerror(errno));
		}
		/* The timer hook runs after the batch: it may end connections whose events come
		 * later in the same batch. */
		bool tick = false;
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == s->listen_tag) {
				on_listen();
			} else if (p == s->signal_tag) {
				/* A signal (signalfd) or a worker's stop (eventfd). */
				struct signalfd_siginfo si;
				if (read(s->sfd, &si, sizeof(si)) > 0)
					return;
			} else if (p == &s->tfd) {
				tick = true;
			} else {
				on_event(p, evs[i].events);
			}
		}
		if (tick) {
			uint64_t expirations;
			if (read(s->tfd, &expirations, sizeof(expirations)) < 0 && errno != EAGAIN)
				net_die("read(timerfd): %s", strerror(errno));
			s->on_timer();
		}
		if (after_batch)
			after_batch();
	}
}

void net_server_timer(struct net_server *s, void (*on_timer)(void), long long interval_ns)
{
	s->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
	if (s->tfd < 0)
		net_die("timerfd_create: %s", strerror(errno));
	s->on_timer = on_timer;
	s->timer_ns = interval_ns;
	s->timer_armed = false;
	net_epoll_add(s->ep, s->tfd, EPOLLIN, &s->tfd);
}

void net_server_timer_arm(struct net_server *s, bool on)
{
	if (on == s->timer_armed)
		return;
	struct itimerspec its = {0};
	if (on) {
		its.it_interval.tv_sec = s->timer_ns / 1000000000;
		its.it_interval.tv_nsec = s->timer_ns % 1000000000;
		its.it_value = its.it_interval;
	}
	if (timerfd_settime(s->tfd, 0, &its, NULL) < 0)
		net_die("timerfd_settime: %s", strerror(errno));
	s->timer_armed = on;
}

int net_accept(struct net_server *s, uint64_t active)
{
	int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	if (fd >= 0)
		return fd;
	if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
		return -1;
	if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
		if (!s->accept_warned)
			net_warn("accept: %s", strerror(errno));
		s->accept_warned = true;
		if (active > 0)
			net_accept_pause(s, true);
		return -1;
	}
	net_die("accept: %s", strerror(errno));
}

void net_accept_pause(struct net_server *s, bool pause)
{
	struct epoll_event e = {.events = pause ? 0u : EPOLLIN, .data.ptr = s->listen_tag};
	if (epoll_ctl(s->ep, EPOLL_CTL_MOD, s->lfd, &e) < 0)
		net_die("epoll_ctl(MOD): %s", strerror(errno));
	s->accept_paused = pause;
}

void net_accept_resume(struct net_server *s)
{
	if (s->accept_paused)
		net_accept_pause(s, false);
}

unsigned net_parse_workers(const char *arg)
{
	unsigned n = (unsigned)net_parse_u64("--workers", arg, NET_WORKERS_MAX);
	if (n == 0)
		net_usage_error("--workers must be at least 1");
	return n;
}

/* Open n listening sockets on addr that share its port through SO_REUSEPORT (a port 0 is the one
 * the kernel gave the first). */
static void listen_reuseport(const char *addr, unsigned n, struct net_worker *w)
{
	struct sockaddr_storage ss;
	socklen_t len;
	if (net_parse_addr(addr, &ss, &len) < 0)
		net_usage_error("--listen: expected ADDR:PORT with a numeric address, got '%s'",
				addr);
	for (unsigned i = 0; i < n; i++) {
		int fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (fd < 0)
			net_die("socket: %s", strerror(errno));
		int one = 1;
		if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
			net_die("setsockopt(SO_REUSEPORT): %s", strerror(errno));
		if (bind(fd, (struct sockaddr *)&ss, len) < 0)
			net_die("cannot listen on %s: bind: %s", addr, strerror(errno));
		if (listen(fd, 65535) < 0)
			net_die("cannot listen on %s: listen: %s", addr, strerror(errno));
		if (i == 0 && getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
			net_die("getsockname: %s", strerror(errno));
		w[i].lfd = fd;
	}
}

/* A worker thread: serve, then take the thread's CPU time. */
static void *worker_main(void *arg)
{
	struct net_worker *w = arg;
	w->serve(w);
	struct rusage ru;
	if (getrusage(RUSAGE_THREAD, &ru) == 0) {
		w->cpu_user_s = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
		w->cpu_sys_s = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	}
	return NULL;
}

void *net_shared(size_t size)
{
	void *p = mmap(NULL, size ? size : 1, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1,
		       0);
	if (p == MAP_FAILED)
		net_die("mmap(MAP_SHARED, %zu bytes): %s", size, strerror(errno));
	return p;
}

/* How a worker process ended (status from waitpid), in words. */
static void describe_exit(int status, char *buf, size_t len)
{
	if (WIFEXITED(status))
		snprintf(buf, len, "exit %d", WEXITSTATUS(status));
	else if (WIFSIGNALED(status))
		snprintf(buf, len, "signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
	else
		snprintf(buf, len, "status %d", status);
}

/* Send sig to every worker process that was started and not yet reaped. */
static void kill_workers(const struct net_worker *w, unsigned n, int sig)
{
	for (unsigned i = 0; i < n; i++)
		if (w[i].pid > 0)
			(void)kill(w[i].pid, sig);
}

/* The worker process of w[i]: die with the main process, keep only its own listener, serve until
 * SIGTERM (its inherited signalfd), leave its counters and CPU time in shared memory. */
static void worker_process(struct net_worker *w, unsigned n, unsigned i, pid_t parent)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
		_exit(70); /* the main process is gone already */
	for (unsigned j = 0; j < n; j++)
		if (j != i)
			close(w[j].lfd);
	w[i].ep = net_epoll_create();
	worker_main(&w[i]);
	fflush(stdout);
	_exit(0);
}

/* Processes: fork the n workers, wait for SIGTERM/SIGINT (or a worker that ends early, which
 * ends the server), then stop and reap them all. */
static void run_worker_processes(struct net_worker *w, unsigned n, int sfd, const char *server)
{
	sigset_t chld;
	sigemptyset(&chld);
	sigaddset(&chld, SIGCHLD);
	if (sigprocmask(SIG_BLOCK, &chld, NULL) < 0)
		net_die("sigprocmask: %s", strerror(errno));
	int cfd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
	if (cfd < 0)
		net_die("signalfd: %s", strerror(errno));
	pid_t parent = getpid();
	fflush(stdout); /* nothing buffered may be written twice */
	for (unsigned i = 0; i < n; i++) {
		w[i].stopfd = sfd;
		pid_t pid = fork();
		if (pid < 0) {
			kill_workers(w, i, SIGKILL);
			net_die("fork: %s", strerror(errno));
		}
		if (pid == 0) {
			close(cfd);
			worker_process(w, n, i, parent);
		}
		w[i].pid = pid;
	}
	/* Every worker process exists before the ready line (connections wait in the listeners'
	 * backlogs until it serves), so whoever watches the server's descendants from then on sees
	 * them all. Then the listeners are the workers' alone. */
	net_print_ready(server, w[0].lfd);
	for (unsigned i = 0; i < n; i++)
		close(w[i].lfd);
	bool early = false;
	for (;;) {
		struct pollfd p[2] = {{.fd = sfd, .events = POLLIN}, {.fd = cfd, .events = POLLIN}};
		if (poll(p, 2, -1) < 0 && errno != EINTR)
			net_die("poll: %s", strerror(errno));
		struct signalfd_siginfo si;
		if (read(sfd, &si, sizeof(si)) > 0)
			break;
		if (read(cfd, &si, sizeof(si)) > 0) {
			early = true;
			break;
		}
	}
	kill_workers(w, n, SIGTERM);
	char first[160] = "";
	for (unsigned i = 0; i < n; i++) {
		int status;
		while (waitpid(w[i].pid, &status, 0) < 0)
			if (errno != EINTR)
				net_die("waitpid: %s", strerror(errno));
		w[i].pid = 0;
		if ((!WIFEXITED(status) || WEXITSTATUS(status) != 0) && !first[0]) {
			char how[96];
			describe_exit(status, how, sizeof(how));
			snprintf(first, sizeof(first), "worker process %u ended with %s", i, how);
		}
	}
	close(cfd);
	if (first[0] || early)
		net_die("%s", first[0] ? first : "a worker process ended before the server was stopped");
}

struct net_worker *net_workers_run(const char *addr, const char *server, unsigned n, bool procs,
				   void (*serve)(struct net_worker *w))
{
	struct net_worker *w = procs && n > 1 ? net_shared(n * sizeof(*w)) : calloc(n, sizeof(*w));
	if (!w)
		net_die("out of memory");
	/* Signals are blocked before any thread starts: the threads inherit the mask and only the
	 * signalfd sees SIGTERM/SIGINT. */
	int sfd = net_signalfd();
	net_raise_nofile();
	for (unsigned i = 0; i < n; i++) {
		w[i].index = i;
		w[i].serve = serve;
	}
	if (n == 1) {
		w[0].lfd = net_listen(addr);
		w[0].stopfd = sfd;
		w[0].ep = net_epoll_create();
		net_print_ready(server, w[0].lfd);
		worker_main(&w[0]);
		return w;
	}
	listen_reuseport(addr, n, w);
	if (procs) {
		run_worker_processes(w, n, sfd, server);
		return w;
	}
	for (unsigned i = 0; i < n; i++) {
		w[i].stopfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (w[i].stopfd < 0)
			net_die("eventfd: %s", strerror(errno));
		w[i].ep = net_epoll_create();
		pthread_t th;
		int err = pthread_create(&th, NULL, worker_main, &w[i]);
		if (err)
			net_die("pthread_create: %s", strerror(err));
		w[i].th = (unsigned long)th;
	}
	/* Every worker exists (connections wait in their listeners' backlogs until it serves). */
	net_print_ready(server, w[0].lfd);
	for (;;) {
		struct pollfd p = {.fd = sfd, .events = POLLIN};
		if (poll(&p, 1, -1) < 0 && errno != EINTR)
			net_die("poll: %s", strerror(errno));
		struct signalfd_siginfo si;
		if (read(sfd, &si, sizeof(si)) > 0)
			break;
	}
	for (unsigned i = 0; i < n; i++) {
		uint64_t one = 1;
		if (write(w[i].stopfd, &one, sizeof(one)) != (ssize_t)sizeof(one))
			net_die("write(eventfd): %s", strerror(errno));
	}
	for (unsigned i = 0; i < n; i++)
		pthread_join((pthread_t)w[i].th, NULL);
	return w;
}

void net_worker_serve(struct net_worker *w, struct net_server *s, const struct net_stats *st,
		      void (*on_listen)(void), void (*on_event)(void *tag, uint32_t events),
		      void (*after_batch)(void))
{
	net_server_attach(s, w);
	net_server_run(s, on_listen, on_event, after_batch);
	w->st = *st;
}

void net_workers_main(const char *addr, const char *server, unsigned n, bool procs,
		      void (*serve)(struct net_worker *w), void (*before_summary)(void))
{
	struct net_worker *w = net_workers_run(addr, server, n, procs, serve);
	struct net_stats total = net_workers_total(w, n);
	char extra[128 * NET_WORKERS_MAX];
	net_workers_json(w, n, extra, sizeof(extra));
	if (before_summary)
		before_summary();
	net_print_summary_extra(server, &total, extra);
}

void net_server_attach(struct net_server *s, const struct net_worker *w)
{
	s->sfd = w->stopfd;
	s->lfd = w->lfd;
	s->ep = w->ep;
	s->listen_tag = &s->lfd;
	s->signal_tag = &s->sfd;
	net_epoll_add(s->ep, s->lfd, EPOLLIN, s->listen_tag);
	net_epoll_add(s->ep, s->sfd, EPOLLIN, s->signal_tag);
}

struct net_stats net_workers_total(const struct net_worker *w, unsigned n)
{
	struct net_stats t = {0};
	for (unsigned i = 0; i < n; i++) {
		t.connections += w[i].st.connections;
		t.active += w[i].st.active;
		t.bytes_in += w[i].st.bytes_in;
		t.bytes_out += w[i].st.bytes_out;
		t.errors += w[i].st.errors;
	}
	return t;
}

void net_workers_json(const struct net_worker *w, unsigned n, char *buf, size_t len)
{
	size_t at = (size_t)snprintf(buf, len, ",\"workers\":[");
	for (unsigned i = 0; i < n && at < len; i++)
		at += (size_t)snprintf(buf + at, len - at,
				       "%s{\"connections\":%llu,\"bytes_in\":%llu,\"cpu_user_s\":%.6f,"
				       "\"cpu_sys_s\":%.6f}",
				       i ? "," : "", (unsigned long long)w[i].st.connections,
				       (unsigned long long)w[i].st.bytes_in, w[i].cpu_user_s,
				       w[i].cpu_sys_s);
	if (at < len)
		at += (size_t)snprintf(buf + at, len - at, "]");
	if (at >= len)
		net_die("net_workers_json: buffer too small");
}
