// SPDX-License-Identifier: MIT
/* sb-echo-naive: read/write echo server (docs/programs.md).
 *
 * One thread by default, one level-triggered epoll loop. One thread keeps the process-CPU figure
 * comparable between servers (one core at most, no lock contention) and epoll serves thousands of
 * connections without a thread each; --workers N runs N such loops in N threads, each with its own
 * SO_REUSEPORT listener and connections (net_workers_run), or with --processes in N processes
 * (each its own descriptor limit: how one host holds 100,000 connections). A connection reads into its own buffer (--buf, default 128 KiB as in
 * Cloudflare's 2019 reference), writes it back, and reads again only when everything was written:
 * interest is EPOLLIN while the buffer is empty, EPOLLOUT while it holds unsent bytes, so a slow
 * reader slows its sender down (TCP flow control) instead of growing memory. After the client's
 * FIN the server finishes echoing what it read, then closes. */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

struct conn {
	int fd;
	uint32_t events; /* current epoll interest */
	bool eof;	 /* client half-closed */
	uint8_t *buf;	 /* allocated at the first read */
	size_t off, len; /* buf[off..len) still to be written */
};

/* Each worker thread's own server and counters. */
static __thread struct net_stats st;
static __thread struct net_server srv;
static struct net_opts opts = {.listen = "127.0.0.1:0"};
static size_t bufsize = 131072;
static unsigned workers = 1;
static bool processes; /* --processes: the workers are processes, not threads */

/* Close conn and forget it; failed connections count as errors. */
static void conn_close(struct conn *c, bool failed)
{
	close(c->fd);
	net_accept_resume(&srv); /* a descriptor is free again */
	free(c->buf);
	free(c);
	st.active--;
	if (failed)
		st.errors++;
}

/* Set conn's epoll interest to ev (no system call when it is already that). */
static void set_events(struct conn *c, uint32_t ev)
{
	net_epoll_mod(srv.ep, c->fd, c, &c->events, ev);
}

/* Write out buf[off..len). Returns false if the connection broke (reset, EPIPE, ...). */
static bool flush(struct conn *c)
{
	while (c->off < c->len) {
		ssize_t w = write(c->fd, c->buf + c->off, c->len - c->off);
		if (w < 0) {
			if (errno == EINTR)
				continue;
			if (errno == EAGAIN)
				return true;
			return false;
		}
		c->off += (size_t)w;
		st.bytes_out += (uint64_t)w;
	}
	c->off = c->len = 0;
	return true;
}

/* Handle the epoll events of one connection. */
static void on_conn(void *tag, uint32_t ev)
{
	struct conn *c = tag;
	if (c->off < c->len) {
		/* Unsent bytes: only EPOLLOUT (or an error) is of interest. */
		if (!flush(c)) {
			conn_close(c, true);
			return;
		}
	} else if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		if (!c->buf && !(c->buf = malloc(bufsize)))
			net_die("out of memory for a %zu-byte connection buffer", bufsize);
		ssize_t r = read(c->fd, c->buf, bufsize);
		if (r > 0) {
			st.bytes_in += (uint64_t)r;
			c->off = 0;
			c->len = (size_t)r;
			if (!flush(c)) {
				conn_close(c, true);
				return;
			}
		} else if (r == 0) {
			c->eof = true;
		} else if (errno != EAGAIN && errno != EINTR) {
			conn_close(c, true);
			return;
		}
	}
	if (c->off < c->len) {
		set_events(c, EPOLLOUT);
	} else if (c->eof) {
		conn_close(c, false); /* everything echoed after the client's FIN */
	} else {
		set_events(c, EPOLLIN);
	}
}

/* Accept every pending connection and register it for reading. */
static void on_listen(void)
{
	int fd;
	while ((fd = net_accept(&srv, st.active)) >= 0) {
		net_set_bufs(fd, opts.sndbuf, opts.rcvbuf);
		net_set_nodelay(fd);
		struct conn *c = calloc(1, sizeof(*c));
		if (!c)
			net_die("out of memory");
		c->fd = fd;
		c->events = EPOLLIN;
		net_epoll_add(srv.ep, fd, EPOLLIN, c);
		st.connections++;
		st.active++;
	}
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sb-echo-naive [--listen ADDR:PORT] [--buf BYTES] [--workers N] [--processes]\n"
	    "                     [--sndbuf BYTES] [--rcvbuf BYTES]\n"
	    "  --listen ADDR:PORT   default 127.0.0.1:0 (port 0 = kernel picks; IPv6 as [::1]:0)\n"
	    "  --buf BYTES          read/write buffer per connection (default 131072)\n"
	    "  --workers N          threads, each with its own SO_REUSEPORT listener (default 1)\n"
	    "  --processes          the workers are processes (each its own RLIMIT_NOFILE)\n"
	    "  --sndbuf BYTES       SO_SNDBUF on accepted sockets (0 = kernel default)\n"
	    "  --rcvbuf BYTES       SO_RCVBUF on accepted sockets (0 = kernel default)\n"
	    "Prints a ready line, then a summary line on SIGTERM/SIGINT (JSON, "
	    "docs/programs.md).\n");
}

/* --buf and --workers; the common options are net_parse_opts's. */
static void own_opt(int val, const char *arg)
{
	if (val == 'w')
		workers = net_parse_workers(arg);
	else if (val == 'P')
		processes = true;
	else
		bufsize = net_parse_u64("--buf", arg, 1u << 30);
}

/* One worker: serve its listener until the server stops. */
static void serve(struct net_worker *w) { net_worker_serve(w, &srv, &st, on_listen, on_conn, NULL); }

int main(int argc, char **argv)
{
	static const struct option own[] = {{"buf", required_argument, 0, 'b'},
					    {"workers", required_argument, 0, 'w'},
					    {"processes", no_argument, 0, 'P'},
					    {0, 0, 0, 0}};
	net_prog = "sb-echo-naive";
	net_parse_opts(argc, argv, own, own_opt, usage, INT_MAX, &opts);
	if (bufsize == 0)
		net_usage_error("--buf must be at least 1");

	net_workers_main(opts.listen, "naive", workers, processes, serve, NULL);
	return 0;
}
