// SPDX-License-Identifier: MIT
/* sb-echo-splice: echo server that moves data socket -> pipe -> same socket with splice()
 * (docs/programs.md), so the payload never enters user space.
 *
 * One thread, one level-triggered epoll loop. One thread keeps the process-CPU figure comparable
 * between servers (one core at most, no lock contention) and epoll serves thousands of connections
 * without a thread each. Each connection owns a pipe of --pipe-size bytes (F_SETPIPE_SZ). Interest
 * follows the pipe: EPOLLIN while it has room and the client has not half-closed, EPOLLOUT while it
 * holds bytes, so reading and writing overlap and a slow reader slows its sender down through TCP
 * flow control. After the client's FIN the pipe is drained, then the connection closes. */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

/* SPLICE_F_MOVE is only a hint (a no-op since Linux 2.6.21); kept as the classic idiom. */
#define SPLICE_FLAGS (SPLICE_F_NONBLOCK | SPLICE_F_MOVE)

struct conn {
	int fd;
	int pr, pw;	 /* the connection's pipe: read end, write end */
	uint32_t events; /* current epoll interest */
	bool eof;	 /* client half-closed */
	bool pipe_full;	 /* the last socket -> pipe splice found no room */
	size_t cap;	 /* pipe capacity in bytes */
	size_t inpipe;	 /* bytes in the pipe */
};

static struct net_stats st;
static int ep, lfd;
static size_t pipe_size = 1048576;
static int sndbuf, rcvbuf;
static bool accept_warned, accept_paused;
static uint64_t pipes_default; /* pipes that kept the default size: F_SETPIPE_SZ refused */
/* epoll tags for the two non-connection descriptors */
static int listen_tag, signal_tag;

/* Stop (EPOLL_CTL_MOD to no events) or resume accepting. */
static void pause_accept(bool pause)
{
	struct epoll_event e = {.events = pause ? 0u : EPOLLIN, .data.ptr = &listen_tag};
	if (epoll_ctl(ep, EPOLL_CTL_MOD, lfd, &e) < 0)
		net_die("epoll_ctl(MOD): %s", strerror(errno));
	accept_paused = pause;
}

/* Close conn and its pipe; failed connections count as errors. */
static void conn_close(struct conn *c, bool failed)
{
	close(c->fd);
	close(c->pr);
	close(c->pw);
	free(c);
	if (accept_paused)
		pause_accept(false); /* descriptors are free again */
	st.active--;
	if (failed)
		st.errors++;
}

/* Set conn's epoll interest to ev (no system call when it is already that). */
static void set_events(struct conn *c, uint32_t ev)
{
	if (c->events == ev)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = c};
	if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &e) < 0)
		net_die("epoll_ctl(MOD): %s", strerror(errno));
	c->events = ev;
}

/* Handle the epoll events of one connection: fill the pipe from the socket, drain it into the
 * socket, then choose the interest that the pipe's state asks for. */
static void on_conn(struct conn *c, uint32_t ev)
{
	if ((ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) && !c->eof && !c->pipe_full &&
	    c->inpipe < c->cap) {
		ssize_t n = splice(c->fd, NULL, c->pw, NULL, c->cap - c->inpipe, SPLICE_FLAGS);
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
		ssize_t n = splice(c->pr, NULL, c->fd, NULL, c->inpipe, SPLICE_FLAGS);
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

/* Create conn's pipe and size it; returns false when no pipe could be made. */
static bool make_pipe(struct conn *c)
{
	int p[2];
	if (pipe2(p, O_NONBLOCK | O_CLOEXEC) < 0)
		return false;
	c->pr = p[0];
	c->pw = p[1];
	int got = fcntl(c->pw, F_SETPIPE_SZ, (int)pipe_size);
	if (got < 0) {
		/* Usually EPERM: this user's pipes exceed fs.pipe-user-pages-soft. The pipe still
		 * works at its default size; count it and say so once now and once at exit. */
		if (pipes_default++ == 0)
			fprintf(stderr,
				"%s: warning: F_SETPIPE_SZ %zu: %s; using the default size\n",
				net_prog, pipe_size, strerror(errno));
		got = fcntl(c->pw, F_GETPIPE_SZ);
		if (got <= 0)
			got = 4096;
	}
	c->cap = (size_t)got;
	return true;
}

/* Accept every pending connection, give it a pipe and register it for reading. */
static void on_listen(void)
{
	for (;;) {
		int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd < 0) {
			if (errno == EAGAIN || errno == EINTR || errno == ECONNABORTED)
				return;
			if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
			    errno == ENOMEM) {
				/* Out of descriptors or memory: the connection waits in the backlog
				 * until one of ours closes (level-triggered, it would spin
				 * otherwise). */
				if (!accept_warned)
					fprintf(stderr, "%s: warning: accept: %s\n", net_prog,
						strerror(errno));
				accept_warned = true;
				if (st.active > 0)
					pause_accept(true);
				return;
			}
			net_die("accept: %s", strerror(errno));
		}
		struct conn *c = calloc(1, sizeof(*c));
		if (!c)
			net_die("out of memory");
		c->fd = fd;
		st.connections++;
		if (!make_pipe(c)) {
			if (!accept_warned)
				fprintf(stderr, "%s: warning: pipe2: %s\n", net_prog,
					strerror(errno));
			accept_warned = true;
			close(fd);
			free(c);
			st.errors++;
			continue;
		}
		net_set_bufs(fd, sndbuf, rcvbuf);
		/* Echoed tails go out at once instead of waiting for an ACK (Nagle). */
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		c->events = EPOLLIN;
		struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0)
			net_die("epoll_ctl(ADD): %s", strerror(errno));
		st.active++;
	}
}

/* /proc/sys/fs/pipe-max-size, or 0 when it cannot be read. */
static size_t pipe_max_size(void)
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

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sb-echo-splice [--listen ADDR:PORT] [--pipe-size BYTES] [--sndbuf BYTES] "
	    "[--rcvbuf BYTES]\n"
	    "  --listen ADDR:PORT   default 127.0.0.1:0 (port 0 = kernel picks; IPv6 as [::1]:0)\n"
	    "  --pipe-size BYTES    pipe per connection (default 1048576, capped to\n"
	    "                       /proc/sys/fs/pipe-max-size)\n"
	    "  --sndbuf BYTES       SO_SNDBUF on accepted sockets (0 = kernel default)\n"
	    "  --rcvbuf BYTES       SO_RCVBUF on accepted sockets (0 = kernel default)\n"
	    "Prints a ready line, then a summary line on SIGTERM/SIGINT (JSON, "
	    "docs/programs.md).\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"listen", required_argument, 0, 'l'}, {"pipe-size", required_argument, 0, 'p'},
	    {"sndbuf", required_argument, 0, 's'}, {"rcvbuf", required_argument, 0, 'r'},
	    {"help", no_argument, 0, 'h'},	   {0, 0, 0, 0},
	};
	const char *listen_addr = "127.0.0.1:0";
	int c;
	net_prog = "sb-echo-splice";
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", lo, NULL)) != -1) {
		switch (c) {
		case 'l':
			listen_addr = optarg;
			break;
		case 'p':
			pipe_size = net_parse_u64("--pipe-size", optarg, 1u << 30);
			break;
		case 's':
			sndbuf = (int)net_parse_u64("--sndbuf", optarg, INT_MAX);
			break;
		case 'r':
			rcvbuf = (int)net_parse_u64("--rcvbuf", optarg, INT_MAX);
			break;
		case 'h':
			usage(stdout);
			return 0;
		case ':':
			net_usage_error("%s needs a value", argv[optind - 1]);
		default:
			net_usage_error("unknown option '%s'", argv[optind - 1]);
		}
	}
	if (optind < argc)
		net_usage_error("unexpected argument '%s'", argv[optind]);
	if (pipe_size == 0)
		net_usage_error("--pipe-size must be at least 1");
	size_t max = pipe_max_size();
	if (max && pipe_size > max)
		pipe_size = max;

	int sfd = net_signalfd();
	net_raise_nofile();
	lfd = net_listen(listen_addr);
	ep = epoll_create1(EPOLL_CLOEXEC);
	if (ep < 0)
		net_die("epoll_create1: %s", strerror(errno));
	struct epoll_event e = {.events = EPOLLIN, .data.ptr = &listen_tag};
	if (epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &e) < 0)
		net_die("epoll_ctl(ADD): %s", strerror(errno));
	e.data.ptr = &signal_tag;
	if (epoll_ctl(ep, EPOLL_CTL_ADD, sfd, &e) < 0)
		net_die("epoll_ctl(ADD): %s", strerror(errno));
	net_print_ready("splice", lfd);

	struct epoll_event evs[256];
	for (;;) {
		int n = epoll_wait(ep, evs, 256, -1);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			net_die("epoll_wait: %s", strerror(errno));
		}
		for (int i = 0; i < n; i++) {
			void *p = evs[i].data.ptr;
			if (p == &listen_tag) {
				on_listen();
			} else if (p == &signal_tag) {
				struct signalfd_siginfo si;
				if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si)) {
					if (pipes_default)
						fprintf(
						    stderr,
						    "%s: warning: %llu pipes kept the default size "
						    "(F_SETPIPE_SZ refused)\n",
						    net_prog, (unsigned long long)pipes_default);
					net_print_summary("splice", &st);
					return 0;
				}
			} else {
				on_conn(p, evs[i].events);
			}
		}
	}
}
