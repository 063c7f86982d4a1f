// SPDX-License-Identifier: MIT
/* sb-echo-splice: echo server that moves data socket -> pipe -> same socket with splice()
 * (docs/programs.md), so the payload never enters user space.
 *
 * One thread by default, one level-triggered epoll loop. One thread keeps the process-CPU figure
 * comparable between servers (one core at most, no lock contention) and epoll serves thousands of
 * connections without a thread each; --workers N runs N such loops in N threads, each with its own
 * SO_REUSEPORT listener and connections (net_workers_run), or with --processes in N processes
 * (each its own descriptor limit). Each connection owns a pipe of --pipe-size bytes (F_SETPIPE_SZ). Interest
 * follows the pipe: EPOLLIN while it has room and the client has not half-closed, EPOLLOUT while it
 * holds bytes, so reading and writing overlap and a slow reader slows its sender down through TCP
 * flow control. After the client's FIN the pipe is drained, then the connection closes. */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* SPLICE_F_MOVE is only a hint (a no-op since Linux 2.6.21); kept as the classic idiom. */
#define SPLICE_FLAGS (SPLICE_F_NONBLOCK | SPLICE_F_MOVE)

struct conn {
	int fd;
	int pipe[2];	 /* the connection's pipe: read end, write end */
	uint32_t events; /* current epoll interest */
	bool eof;	 /* client half-closed */
	bool pipe_full;	 /* the last socket -> pipe splice found no room */
	size_t cap;	 /* pipe capacity in bytes */
	size_t inpipe;	 /* bytes in the pipe */
};

/* Each worker thread's own server and counters. */
static __thread struct net_stats st;
static __thread struct net_server srv;
/* Pipes that kept the default size (F_SETPIPE_SZ refused), counted by every worker (in memory
 * that worker processes share). */
static uint64_t *pipes_default;
static struct net_opts opts = {.listen = "127.0.0.1:0"};
static size_t pipe_size = 1048576;
static unsigned workers = 1;
static bool processes; /* --processes: the workers are processes, not threads */

/* Close conn and its pipe; failed connections count as errors. */
static void conn_close(struct conn *c, bool failed)
{
	close(c->fd);
	close(c->pipe[0]);
	close(c->pipe[1]);
	free(c);
	net_accept_resume(&srv); /* descriptors are free again */
	st.active--;
	if (failed)
		st.errors++;
}

/* Set conn's epoll interest to ev (no system call when it is already that). */
static void set_events(struct conn *c, uint32_t ev)
{
	net_epoll_mod(srv.ep, c->fd, c, &c->events, ev);
}

/* Handle the epoll events of one connection: fill the pipe from the socket, drain it into the
 * socket, then choose the interest that the pipe's state asks for. */
static void on_conn(void *tag, uint32_t ev)
{
	struct conn *c = tag;
	if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->eof && !c->pipe_full &&
	    c->inpipe < c->cap) {
		ssize_t n = splice(c->fd, NULL, c->pipe[1], NULL, c->cap - c->inpipe, SPLICE_FLAGS);
		if (n > 0) {
			c->inpipe += (size_t)n;
			st.bytes_in += (uint64_t)n;
		} else if (n == 0) {
			c->eof = true;
		} else if (errno == EAGAIN) {
			/* The socket is readable (level-triggered EPOLLIN), so the pipe has no free
			 * slot: skb fragments can fill its slots before its byte capacity. Wait for
			 * the pipe to drain instead of spinning on EPOLLIN. */
			if (c->inpipe > 0)
				c->pipe_full = true;
		} else if (errno != EINTR) {
			conn_close(c, true);
			return;
		}
	}
	if (c->inpipe > 0) {
		ssize_t n = splice(c->pipe[0], NULL, c->fd, NULL, c->inpipe, SPLICE_FLAGS);
		if (n > 0) {
			c->inpipe -= (size_t)n;
			st.bytes_out += (uint64_t)n;
			c->pipe_full = false;
		} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
			conn_close(c, true);
			return;
		}
	}
	if (c->eof && c->inpipe == 0) {
		conn_close(c, false); /* everything echoed after the client's FIN */
		return;
	}
	set_events(c, (!c->eof && !c->pipe_full && c->inpipe < c->cap ? EPOLLIN : 0u) |
			  (c->inpipe > 0 ? EPOLLOUT : 0u));
}

/* Accept every pending connection, give it a pipe and register it for reading. */
static void on_listen(void)
{
	int fd;
	while ((fd = net_accept(&srv, st.active)) >= 0) {
		struct conn *c = calloc(1, sizeof(*c));
		if (!c)
			net_die("out of memory");
		c->fd = fd;
		st.connections++;
		c->cap = net_pipe(c->pipe, pipe_size, pipes_default);
		if (!c->cap) {
			if (!srv.accept_warned)
				net_warn("pipe2: %s", strerror(errno));
			srv.accept_warned = true;
			close(fd);
			free(c);
			st.errors++;
			continue;
		}
		net_set_bufs(fd, opts.sndbuf, opts.rcvbuf);
		net_set_nodelay(fd);
		c->events = EPOLLIN;
		net_epoll_add(srv.ep, fd, EPOLLIN, c);
		st.active++;
	}
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sb-echo-splice [--listen ADDR:PORT] [--pipe-size BYTES] [--workers N]\n"
	    "                      [--processes] [--sndbuf BYTES] [--rcvbuf BYTES]\n"
	    "  --listen ADDR:PORT   default 127.0.0.1:0 (port 0 = kernel picks; IPv6 as [::1]:0)\n"
	    "  --pipe-size BYTES    pipe per connection (default 1048576, capped to\n"
	    "                       /proc/sys/fs/pipe-max-size)\n"
	    "  --workers N          threads, each with its own SO_REUSEPORT listener (default 1)\n"
	    "  --processes          the workers are processes (each its own RLIMIT_NOFILE)\n"
	    "  --sndbuf BYTES       SO_SNDBUF on accepted sockets (0 = kernel default)\n"
	    "  --rcvbuf BYTES       SO_RCVBUF on accepted sockets (0 = kernel default)\n"
	    "Prints a ready line, then a summary line on SIGTERM/SIGINT (JSON, "
	    "docs/programs.md).\n");
}

/* --pipe-size and --workers; the common options are net_parse_opts's. */
static void own_opt(int val, const char *arg)
{
	if (val == 'w')
		workers = net_parse_workers(arg);
	else if (val == 'P')
		processes = true;
	else
		pipe_size = net_parse_u64("--pipe-size", arg, 1u << 30);
}

static void report_pipes(void) { net_pipe_report(*pipes_default); }

/* One worker: serve its listener until the server stops. */
static void serve(struct net_worker *w) { net_worker_serve(w, &srv, &st, on_listen, on_conn, NULL); }

int main(int argc, char **argv)
{
	static const struct option own[] = {{"pipe-size", required_argument, 0, 'p'},
					    {"workers", required_argument, 0, 'w'},
					    {"processes", no_argument, 0, 'P'},
					    {0, 0, 0, 0}};
	net_prog = "sb-echo-splice";
	net_parse_opts(argc, argv, own, own_opt, usage, INT_MAX, &opts);
	pipe_size = net_pipe_size(pipe_size);

	pipes_default = net_shared(sizeof(*pipes_default));
	net_workers_main(opts.listen, "splice", workers, processes, serve, report_pipes);
	return 0;
}
