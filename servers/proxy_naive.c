// SPDX-License-Identifier: MIT
/* sb-proxy-naive: TCP reverse proxy that copies through user space with recv()/send()
 * (docs/programs.md, "Proxies").
 *
 * Every accepted client connection gets its own upstream connection (--upstream); bytes are copied
 * client -> upstream and upstream -> client through one buffer per direction (--buf, default
 * 128 KiB like the naive echo server). One thread and one level-triggered epoll loop, for the same
 * reasons as sb-echo-naive: the process-CPU figure stays comparable (one core at most) and epoll
 * serves thousands of connections. A direction reads only while its buffer is empty and writes
 * while it holds bytes, so a slow receiver slows its sender (TCP flow control) instead of growing
 * memory. The client is not read before the upstream connect completed; whatever it sent early
 * waits in its socket. A FIN is forwarded (shutdown SHUT_WR) once everything read before it was
 * written; the connection closes when both directions ended. When one leg fails (upstream refuses,
 * a reset, EPIPE) the other is closed with a reset so that its peer cannot mistake the failure for
 * a clean end. */
#define _GNU_SOURCE
#include "net.h"
#include "proxy.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define CLIENT 0
#define UPSTREAM 1
/* Buffers copied per direction before the loop turns to other connections. */
#define ROUNDS 16

struct conn;

/* One socket of a proxied connection; its address is the epoll tag. */
struct leg {
	struct conn *c;
	int fd;
	uint32_t events; /* current epoll interest; 0 = not registered */
};

/* Bytes read from one leg and not yet written to the other. */
struct flow {
	uint8_t *buf;	 /* allocated at the first read */
	size_t off, len; /* buf[off..len) still to be written */
	bool eof;	 /* the source leg sent FIN */
	bool shut;	 /* FIN forwarded to the destination leg */
};

struct conn {
	struct leg leg[2];   /* CLIENT, UPSTREAM */
	struct flow flow[2]; /* flow[s]: from leg s to leg !s */
	bool connecting;     /* upstream connect in progress */
	bool dead;	     /* closed; freed after the current batch of events */
	struct conn *next_dead;
};

static struct net_stats st;
static uint64_t upstream_errors;
static struct proxy_upstream up;
static int ep, lfd;
static size_t bufsize = 131072;
static int sndbuf, rcvbuf;
static bool accept_warned, accept_paused;
static struct conn *dead_list;
static int listen_tag, signal_tag; /* epoll tags for the two non-connection descriptors */

/* Stop (no events) or resume accepting; used when descriptors run out. */
static void pause_accept(bool pause)
{
	struct epoll_event e = {.events = pause ? 0u : EPOLLIN, .data.ptr = &listen_tag};
	if (epoll_ctl(ep, EPOLL_CTL_MOD, lfd, &e) < 0)
		net_die("epoll_ctl(MOD): %s", strerror(errno));
	accept_paused = pause;
}

/* Set a leg's epoll interest: registered while there is something to wait for, removed when not
 * (a socket shut down both ways reports EPOLLHUP forever; it must not spin the loop). */
static void set_events(struct leg *l, uint32_t ev)
{
	if (l->events == ev)
		return;
	struct epoll_event e = {.events = ev, .data.ptr = l};
	int op = ev == 0 ? EPOLL_CTL_DEL : l->events == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
	if (epoll_ctl(ep, op, l->fd, &e) < 0)
		net_die("epoll_ctl: %s", strerror(errno));
	l->events = ev;
}

/* End a connection: close both legs (abortive ones with a reset), free it after this batch. */
static void conn_end(struct conn *c, bool abort_client, bool abort_upstream, bool failed)
{
	for (int s = 0; s < 2; s++) {
		if ((s == CLIENT && abort_client) || (s == UPSTREAM && abort_upstream))
			proxy_abort(c->leg[s].fd);
		else
			close(c->leg[s].fd);
	}
	c->dead = true;
	c->next_dead = dead_list;
	dead_list = c;
	st.active--;
	if (failed)
		st.errors++;
	if (accept_paused)
		pause_accept(false); /* descriptors are free again */
}

/* Leg s failed: close it, reset the other leg so that its peer sees the failure. */
static void conn_fail(struct conn *c, int s) { conn_end(c, s != CLIENT, s != UPSTREAM, true); }

/* Copy from leg s to leg !s until one of them would block, EOF is forwarded, or ROUNDS buffers
 * went through. Returns false if the connection failed (it is then ended). */
static bool pump(struct conn *c, int s)
{
	struct flow *f = &c->flow[s];
	int in = c->leg[s].fd, out = c->leg[!s].fd;
	for (int round = 0; round < ROUNDS;) {
		if (f->off < f->len) {
			ssize_t w = send(out, f->buf + f->off, f->len - f->off, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN)
					return true;
				conn_fail(c, !s);
				return false;
			}
			f->off += (size_t)w;
			if (s == UPSTREAM)
				st.bytes_out += (uint64_t)w;
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
			return true;
		}
		if (!f->buf && !(f->buf = malloc(bufsize)))
			net_die("out of memory for a %zu-byte connection buffer", bufsize);
		ssize_t r = recv(in, f->buf, bufsize, 0);
		if (r > 0) {
			f->len = (size_t)r;
			if (s == CLIENT)
				st.bytes_in += (uint64_t)r;
			round++;
		} else if (r == 0) {
			f->eof = true;
		} else if (errno == EAGAIN) {
			return true;
		} else if (errno != EINTR) {
			conn_fail(c, s);
			return false;
		}
	}
	return true;
}

/* Recompute both legs' interest after pumping: EPOLLIN while a leg's outgoing buffer is empty and
 * it has not sent FIN, EPOLLOUT while bytes for it wait. */
static void update_events(struct conn *c)
{
	for (int s = 0; s < 2; s++) {
		uint32_t ev = 0;
		if (!c->flow[s].eof && c->flow[s].off == c->flow[s].len)
			ev |= EPOLLIN;
		if (c->flow[!s].off < c->flow[!s].len)
			ev |= EPOLLOUT;
		set_events(&c->leg[s], ev);
	}
}

/* Handle the epoll events of one leg. */
static void on_leg(struct leg *l, uint32_t ev)
{
	struct conn *c = l->c;
	if (c->dead)
		return; /* ended earlier in this batch */
	if (c->connecting) {
		int err = proxy_sock_error(l->fd);
		if (err == 0 && !(ev & EPOLLOUT))
			return;
		if (err != 0 || (ev & (EPOLLERR | EPOLLHUP))) {
			proxy_warn_upstream(&up, err ? err : EIO);
			upstream_errors++;
			conn_fail(c, UPSTREAM);
			return;
		}
		c->connecting = false;
	}
	if (!pump(c, CLIENT) || !pump(c, UPSTREAM))
		return;
	if (c->flow[CLIENT].shut && c->flow[UPSTREAM].shut)
		conn_end(c, false, false, false); /* both FINs forwarded */
	else
		update_events(c);
}

/* --sndbuf/--rcvbuf on a leg. */
static void set_bufs(int fd) { net_set_bufs(fd, sndbuf, rcvbuf); }

/* Accept every pending connection and start its upstream connect. */
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
		set_bufs(fd);
		proxy_nodelay(fd);
		st.connections++;
		bool done = false;
		int ufd = proxy_connect(&up, set_bufs, &done);
		if (ufd < 0) {
			proxy_warn_upstream(&up, errno);
			upstream_errors++;
			st.errors++;
			proxy_abort(fd);
			continue;
		}
		struct conn *c = calloc(1, sizeof(*c));
		if (!c)
			net_die("out of memory");
		for (int s = 0; s < 2; s++)
			c->leg[s].c = c;
		c->leg[CLIENT].fd = fd;
		c->leg[UPSTREAM].fd = ufd;
		st.active++;
		if (done) {
			update_events(c);
		} else {
			c->connecting = true;
			set_events(&c->leg[UPSTREAM], EPOLLOUT);
		}
	}
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sb-proxy-naive --upstream ADDR:PORT [--listen ADDR:PORT] [--buf BYTES]\n"
	    "                      [--sndbuf BYTES] [--rcvbuf BYTES]\n"
	    "  --upstream ADDR:PORT where every accepted connection is forwarded (required)\n"
	    "  --listen ADDR:PORT   default 127.0.0.1:0 (port 0 = kernel picks; IPv6 as [::1]:0)\n"
	    "  --buf BYTES          buffer per direction and connection (default 131072)\n"
	    "  --sndbuf BYTES       SO_SNDBUF on both legs (0 = kernel default)\n"
	    "  --rcvbuf BYTES       SO_RCVBUF on both legs (0 = kernel default)\n"
	    "Prints a ready line, then a summary line on SIGTERM/SIGINT (JSON, "
	    "docs/programs.md).\n");
}

int main(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"listen", required_argument, 0, 'l'},
	    {"upstream", required_argument, 0, 'u'},
	    {"buf", required_argument, 0, 'b'},
	    {"sndbuf", required_argument, 0, 's'},
	    {"rcvbuf", required_argument, 0, 'r'},
	    {"help", no_argument, 0, 'h'},
	    {0, 0, 0, 0},
	};
	const char *listen_addr = "127.0.0.1:0", *upstream = NULL;
	int opt;
	net_prog = "sb-proxy-naive";
	opterr = 0;
	while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (opt) {
		case 'l':
			listen_addr = optarg;
			break;
		case 'u':
			upstream = optarg;
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
	if (!upstream)
		net_usage_error("--upstream ADDR:PORT is required");
	proxy_parse_upstream(upstream, &up);
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
	net_print_ready("proxy-naive", lfd);

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
					proxy_print_summary("proxy-naive", &st, upstream_errors,
							    "");
					return 0;
				}
			} else {
				on_leg(p, evs[i].events);
			}
		}
		while (dead_list) {
			struct conn *c = dead_list;
			dead_list = c->next_dead;
			free(c->flow[0].buf);
			free(c->flow[1].buf);
			free(c);
		}
	}
}
