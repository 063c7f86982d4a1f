// SPDX-License-Identifier: MIT
#define _GNU_SOURCE
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

const char *net_prog = "splicebench";

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
		net_usage_error("--listen: expected ADDR:PORT with a numeric address, got '%s'", addr);
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
	if (listen(fd, 4096) < 0)
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
	/* A peer that resets while we write must not kill the process: EPIPE is handled per call. */
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
	printf("{\"event\":\"ready\",\"server\":\"%s\",\"addr\":\"%s\",\"port\":%d,\"pid\":%d}\n", server,
	       host, port, (int)getpid());
	fflush(stdout);
}

void net_print_summary(const char *server, const struct net_stats *st)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"event\":\"summary\",\"server\":\"%s\",\"connections\":%llu,\"active\":%llu,"
	       "\"bytes_in\":%llu,\"bytes_out\":%llu,\"errors\":%llu,\"cpu_user_s\":%.6f,"
	       "\"cpu_sys_s\":%.6f}\n",
	       server, (unsigned long long)st->connections, (unsigned long long)st->active,
	       (unsigned long long)st->bytes_in, (unsigned long long)st->bytes_out,
	       (unsigned long long)st->errors, ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	fflush(stdout);
}

uint64_t net_now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
