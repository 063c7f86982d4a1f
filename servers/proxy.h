/* SPDX-License-Identifier: MIT */
/* Helpers shared by the reverse proxies (servers/proxy_naive.c, servers/proxy_splice.c,
 * bpf/proxy_sockmap.c): the upstream connection and its failures, accepting a client together
 * with its upstream leg, the user-space copy of one direction, abortive close, and the summary
 * line, which is the servers' summary (docs/programs.md) plus the proxy's own counters. Header-only
 * (static functions) so that the Makefile's one-file-per-program rule builds the proxies unchanged.
 */
#ifndef SPLICEBENCH_PROXY_H
#define SPLICEBENCH_PROXY_H

#include "net.h"

#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* Where every accepted connection is forwarded to (--upstream ADDR:PORT). */
struct proxy_upstream {
	struct sockaddr_storage addr;
	socklen_t len;
	const char *text; /* as given on the command line, for messages */
	uint64_t errors;  /* connects that failed (upstream_errors in the summary) */
	bool warned;	  /* the first failure was reported on stderr */
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

/* Check the proxy's required --upstream after parsing: a usage error when it is missing (s NULL),
 * else proxy_parse_upstream. */
static inline void proxy_require_upstream(const char *s, struct proxy_upstream *up)
{
	if (!s)
		net_usage_error("--upstream ADDR:PORT is required");
	proxy_parse_upstream(s, up);
}

/* A connection to the upstream failed with err: count it in up->errors and say so on stderr the
 * first time only; later failures are only counted (upstream_errors in the summary). */
static inline void proxy_upstream_failed(struct proxy_upstream *up, int err)
{
	up->errors++;
	if (up->warned)
		return;
	up->warned = true;
	net_warn("cannot connect to upstream %s: %s (further failures are only counted in "
		 "upstream_errors)",
		 up->text, strerror(err));
}

/* Start a non-blocking connect to the upstream; prep (buffer sizes: they must be set before the
 * SYN fixes the window scale) and TCP_NODELAY run on the socket first. Returns the socket, or -1
 * with errno set when the connect failed at once (e.g. ECONNREFUSED, EADDRNOTAVAIL) or
 * descriptors ran out. *done tells whether the connection is already established (otherwise wait
 * for EPOLLOUT, then proxy_connected). Exits when no socket can be created for another reason. */
static inline int proxy_connect(const struct proxy_upstream *up, void (*prep)(int fd), bool *done)
{
	int fd = socket(up->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			return -1;
		net_die("socket: %s", strerror(errno));
	}
	prep(fd);
	/* TCP_NODELAY on both legs, as NGINX (tcp_nodelay on) and HAProxy do: a forwarded tail
	 * must not wait for an ACK of the previous segment, which would add a delayed-ACK timeout
	 * to ping-pong. */
	net_set_nodelay(fd);
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

/* Events ev arrived on the upstream socket fd while its connect is in progress. Returns 1 when the
 * connect completed, 0 while it is still in progress, -1 when it failed (then counted and
 * reported with proxy_upstream_failed): a pending socket error or any of fail_events in ev. */
static inline int proxy_connected(struct proxy_upstream *up, int fd, uint32_t ev,
				  uint32_t fail_events)
{
	int err = net_sock_error(fd);
	if (err == 0 && !(ev & EPOLLOUT))
		return 0;
	if (err != 0 || (ev & fail_events)) {
		proxy_upstream_failed(up, err ? err : EIO);
		return -1;
	}
	return 1;
}

/* Close fd so that its peer sees a reset (SO_LINGER 0) rather than an orderly EOF: used when the
 * other leg of a proxied connection failed, so that the failure is not mistaken for a clean end. */
static inline void proxy_abort(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/* One direction of a proxied connection copied through user space. */
struct proxy_flow {
	uint8_t *buf;	 /* allocated at the first read */
	size_t off, len; /* buf[off..len) still to be written */
	bool eof;	 /* the source leg sent FIN */
	bool shut;	 /* FIN forwarded to the destination leg */
};

/* What proxy_copy found: both sockets fine, or which one failed (reset, EPIPE, ...). */
enum proxy_copy_result { PROXY_COPY_OK, PROXY_COPY_IN_FAILED, PROXY_COPY_OUT_FAILED };

/* Copy from socket in to socket out through f (a buffer of bufsize bytes, allocated at the first
 * read) until one of them would block, the FIN is forwarded (shutdown(out, SHUT_WR) once
 * everything read before it was written) or `rounds` buffers went through. Adds the bytes read to
 * *nread and the bytes written to *nwritten, each when not NULL. A slow receiver slows its sender:
 * nothing is read while the buffer holds bytes. */
static inline enum proxy_copy_result proxy_copy(struct proxy_flow *f, int in, int out,
						size_t bufsize, int rounds, uint64_t *nread,
						uint64_t *nwritten)
{
	for (int round = 0; round < rounds;) {
		if (f->off < f->len) {
			ssize_t w = send(out, f->buf + f->off, f->len - f->off, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN)
					return PROXY_COPY_OK;
				return PROXY_COPY_OUT_FAILED;
			}
			f->off += (size_t)w;
			if (nwritten)
				*nwritten += (uint64_t)w;
			if (f->off < f->len)
				continue; /* partial write: the next one says EAGAIN or goes on */
			f->off = f->len = 0;
		}
		if (f->eof) {
			if (!f->shut) {
				/* Everything read before the FIN was written: forward the FIN. */
				(void)shutdown(out, SHUT_WR);
				f->shut = true;
			}
			return PROXY_COPY_OK;
		}
		if (!f->buf && !(f->buf = malloc(bufsize)))
			net_die("out of memory for a %zu-byte connection buffer", bufsize);
		ssize_t r = recv(in, f->buf, bufsize, 0);
		if (r > 0) {
			f->len = (size_t)r;
			if (nread)
				*nread += (uint64_t)r;
			round++;
		} else if (r == 0) {
			f->eof = true;
		} else if (errno == EAGAIN) {
			return PROXY_COPY_OK;
		} else if (errno != EINTR) {
			return PROXY_COPY_IN_FAILED;
		}
	}
	return PROXY_COPY_OK;
}

/* Accept the next client (net_accept) and start its upstream connect (proxy_connect); prep and
 * TCP_NODELAY run on both legs. Returns the client socket, with the upstream socket in *ufd and
 * whether its connect already completed in *done, and counts the connection in st. A client whose
 * upstream connect failed at once is reset and counted (st->errors, up->errors), and the next one
 * is tried. Returns -1 when no client is left to accept now. */
static inline int proxy_accept(struct net_server *s, struct proxy_upstream *up,
			       struct net_stats *st, void (*prep)(int fd), int *ufd, bool *done)
{
	int fd;
	while ((fd = net_accept(s, st->active)) >= 0) {
		prep(fd);
		net_set_nodelay(fd);
		st->connections++;
		*ufd = proxy_connect(up, prep, done);
		if (*ufd >= 0)
			return fd;
		proxy_upstream_failed(up, errno);
		st->errors++;
		proxy_abort(fd);
	}
	return -1;
}

/* Print the summary line: the servers' fields (bytes_in = read from clients, bytes_out = written to
 * clients) plus upstream_errors (upstream connects that failed) and an optional JSON fragment
 * `extra` (",\"key\":value..." or ""). Flushes stdout. */
static inline void proxy_print_summary(const char *server, const struct net_stats *st,
				       const struct proxy_upstream *up, const char *extra)
{
	char fields[256];
	snprintf(fields, sizeof(fields), ",\"upstream_errors\":%llu%s",
		 (unsigned long long)up->errors, extra);
	net_print_summary_extra(server, st, fields);
}

#endif
