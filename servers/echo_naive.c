// SPDX-License-Identifier: MIT
/* sb-echo-naive: read/write echo server (docs/programs.md).
 *
 * One thread, one level-triggered epoll loop. One thread keeps the process-CPU figure comparable
 * between servers (one core at most, no lock contention) and epoll serves thousands of connections
 * without a thread each. A connection reads into its own buffer (--buf, default 128 KiB as in
 * Cloudflare's 2019 reference), writes it back, and reads again only when everything was written:
 * interest is EPOLLIN while the buffer is empty, EPOLLOUT while it holds unsent bytes, so a slow
 * reader slows its sender down (TCP flow control) instead of growing memory. After the client's
 * FIN the server finishes echoing what it read, then closes. */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
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

struct conn {
	int fd;
	uint32_t events; /* current epoll interest */
	bool eof;	 /* client half-closed */
	uint8_t *buf;	 /* allocated at the first read */
	size_t off, len; /* buf[off..len) still to be written */
};

static struct net_stats st;
static int ep;
static size_t bufsize = 131072;
static int sndbuf, rcvbuf;
static bool accept_warned;
static int lfd;
static bool accept_paused;
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

/* Close conn and forget it; failed connections count as errors. */
static void conn_close(struct conn *c, bool failed)
{
	close(c->fd);
	if (accept_paused)
		pause_accept(false); /* a descriptor is free again */
	free(c->buf);
	free(c);
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
static void on_conn(struct conn *c, uint32_t ev)
{
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
		net_set_bufs(fd, sndbuf, rcvbuf);
		/* Echoed tails go out at once instead of waiting for an ACK (Nagle). */
		int one = 1;
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		struct conn *c = calloc(1, sizeof(*c));
		if (!c)
			net_die("out of memory");
		c->fd = fd;
		c->events = EPOLLIN;
		struct epoll_event e = {.events = EPOLLIN, .data.ptr = c};
		if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &e) < 0)
			net_die("epoll_ctl(ADD): %s", strerror(errno));
		st.connections++;
		st.active++;
	}
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sb-echo-naive [--listen ADDR:PORT] [--buf BYTES] [--sndbuf BYTES] "
	    "[--rcvbuf BYTES]\n"
	    "  --listen ADDR:PORT   default 127.0.0.1:0 (port 0 = kernel picks; IPv6 as [::1]:0)\n"
	    "  --buf BYTES          read/write buffer per connection (default 131072)\n"
	    "  --sndbuf BYTES       SO_SNDBUF on accepted sockets (0 = kernel default)\n"
	    "  --rcvbuf BYTES       SO_RCVBUF on accepted sockets (0 = kernel default)\n"
	    "Prints a ready line, then a summary line on SIGTERM/SIGINT (JSON, "
	    "docs/programs.md).\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"listen", required_argument, 0, 'l'}, {"buf", required_argument, 0, 'b'},
	    {"sndbuf", required_argument, 0, 's'}, {"rcvbuf", required_argument, 0, 'r'},
	    {"help", no_argument, 0, 'h'},	   {0, 0, 0, 0},
	};
	const char *listen_addr = "127.0.0.1:0";
	int c;
	net_prog = "sb-echo-naive";
	opterr = 0;
	while ((c = getopt_long(argc, argv, ":", lo, NULL)) != -1) {
		switch (c) {
		case 'l':
			listen_addr = optarg;
			break;
		case 'b':
			bufsize = net_parse_u64("--buf", optarg, 1u << 30);
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
	if (bufsize == 0)
		net_usage_error("--buf must be at least 1");

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
	net_print_ready("naive", lfd);

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
					net_print_summary("naive", &st);
					return 0;
				}
			} else {
				on_conn(p, evs[i].events);
			}
		}
	}
}
