/* SPDX-License-Identifier: MIT */
/* Helpers shared by the reverse proxies (servers/proxy_naive.c, servers/proxy_splice.c,
 * bpf/proxy_sockmap.c): the upstream connection, abortive close, and the summary line, which is
 * the servers' summary (docs/programs.md) plus the proxy's own counters. Header-only (static
 * functions) so that the Makefile's one-file-per-program rule builds the proxies unchanged. */
#ifndef SPLICEBENCH_PROXY_H
#define SPLICEBENCH_PROXY_H

#include "net.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>
#ifndef TCP_NODELAY
/* glibc's netinet/tcp.h clashes with linux/tcp.h, which the SOCKMAP proxy includes first. */
#include <netinet/tcp.h>
#endif

/* Where every accepted connection is forwarded to (--upstream ADDR:PORT). */
struct proxy_upstream {
	struct sockaddr_storage addr;
	socklen_t len;
	const char *text; /* as given on the command line, for messages */
};

/* Parse --upstream: a numeric ADDR:PORT with a port other than 0; exits with a usage error. */
static inline void proxy_parse_upstream(const char *s, struct proxy_upstream *up)
{
	if (net_parse_addr(s, &up->addr, &up->len) < 0)
		net_usage_error("--upstream: expected ADDR:PORT with a numeric address, got '%s'",
				s);
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)&up->addr;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&up->addr;
	if ((up->addr.ss_family == AF_INET ? a4->sin_port : a6->sin6_port) == 0)
		net_usage_error("--upstream: port 0 is not a destination, got '%s'", s);
	up->text = s;
}

/* Say on stderr, the first time only, that a connection to the upstream failed; later failures
 * are only counted (upstream_errors in the summary). */
static inline void proxy_warn_upstream(const struct proxy_upstream *up, int err)
{
	static bool warned;
	if (warned)
		return;
	warned = true;
	fprintf(stderr,
		"%s: warning: cannot connect to upstream %s: %s (further failures are only "
		"counted in upstream_errors)\n",
		net_prog, up->text, strerror(err));
}

/* TCP_NODELAY on both legs, as NGINX (tcp_nodelay on) and HAProxy do: a forwarded tail must not
 * wait for an ACK of the previous segment, which would add a delayed-ACK timeout to ping-pong. */
static inline void proxy_nodelay(int fd)
{
	int one = 1;
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

/* Start a non-blocking connect to the upstream; prep (buffer sizes: they must be set before the
 * SYN fixes the window scale) runs on the socket first. Returns the socket, or -1 with errno set
 * when the connect failed at once (e.g. ECONNREFUSED, EADDRNOTAVAIL) or descriptors ran out.
 * *done tells whether the connection is already established (otherwise wait for EPOLLOUT and read
 * SO_ERROR). Exits when no socket can be created for another reason. */
static inline int proxy_connect(const struct proxy_upstream *up, void (*prep)(int fd), bool *done)
{
	int fd = socket(up->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			return -1;
		net_die("socket: %s", strerror(errno));
	}
	prep(fd);
	proxy_nodelay(fd);
	if (connect(fd, (const struct sockaddr *)&up->addr, up->len) == 0) {
		*done = true;
		return fd;
	}
	if (errno == EINPROGRESS) {
		*done = false;
		return fd;
	}
	int err = errno;
	close(fd);
	errno = err;
	return -1;
}

/* The pending error of a socket (SO_ERROR), 0 if none. */
static inline int proxy_sock_error(int fd)
{
	int err = 0;
	socklen_t len = sizeof(err);
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		return errno;
	return err;
}

/* Close fd so that its peer sees a reset (SO_LINGER 0) rather than an orderly EOF: used when the
 * other leg of a proxied connection failed, so that the failure is not mistaken for a clean end. */
static inline void proxy_abort(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* Print the summary line: the servers' fields (bytes_in = read from clients, bytes_out = written to
 * clients) plus upstream_errors (upstream connects that failed) and an optional JSON fragment
 * `extra` (",\"key\":value..." or ""). Flushes stdout. */
static inline void proxy_print_summary(const char *server, const struct net_stats *st,
				       uint64_t upstream_errors, const char *extra)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	printf("{\"event\":\"summary\",\"server\":\"%s\",\"connections\":%llu,\"active\":%llu,"
	       "\"bytes_in\":%llu,\"bytes_out\":%llu,\"errors\":%llu,\"upstream_errors\":%llu%s,"
	       "\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f}\n",
	       server, (unsigned long long)st->connections, (unsigned long long)st->active,
	       (unsigned long long)st->bytes_in, (unsigned long long)st->bytes_out,
	       (unsigned long long)st->errors, (unsigned long long)upstream_errors, extra,
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	fflush(stdout);
}

#endif
