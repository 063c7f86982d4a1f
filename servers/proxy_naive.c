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

struct conn {
	struct leg leg[2];	   /* CLIENT, UPSTREAM */
	struct proxy_flow flow[2]; /* flow[s]: from leg s to leg !s */
	bool connecting;	   /* upstream connect in progress */
	bool dead;		   /* closed; freed after the current batch of events */
	struct conn *next_dead;
};

static struct net_stats st;
static struct proxy_upstream up;
static struct net_server srv;
static struct net_opts opts = {.listen = "127.0.0.1:0"};
static size_t bufsize = 131072;
static struct conn *dead_list;

/* Set a leg's epoll interest: registered while there is something to wait for, removed when not. */
static void set_events(struct leg *l, uint32_t ev)
{
	net_epoll_set(srv.ep, l->fd, l, &l->events, ev);
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
	net_accept_resume(&srv); /* descriptors are free again */
}

/* Leg s failed: close it, reset the other leg so that its peer sees the failure. */
static void conn_fail(struct conn *c, int s) { conn_end(c, s != CLIENT, s != UPSTREAM, true); }

/* Copy from leg s to leg !s until one of them would block, EOF is forwarded, or ROUNDS buffers
 * went through. Returns false if the connection failed (it is then ended). */
static bool pump(struct conn *c, int s)
{
	enum proxy_copy_result r =
	    proxy_copy(&c->flow[s], c->leg[s].fd, c->leg[!s].fd, bufsize, ROUNDS,
		       s == CLIENT ? &st.bytes_in : NULL, s == UPSTREAM ? &st.bytes_out : NULL);
	if (r == PROXY_COPY_OK)
		return true;
	conn_fail(c, r == PROXY_COPY_IN_FAILED ? s : !s);
	return false;
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
static void on_leg(void *tag, uint32_t ev)
{
	struct leg *l = tag;
	struct conn *c = l->c;
	if (c->dead)
		return; /* ended earlier in this batch */
	if (c->connecting) {
		int done = proxy_connected(&up, l->fd, ev, EPOLLERR | EPOLLHUP);
		if (done < 0)
			conn_fail(c, UPSTREAM);
		if (done <= 0)
			return;
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
static void set_bufs(int fd) { net_set_bufs(fd, opts.sndbuf, opts.rcvbuf); }

/* Accept every pending connection and start its upstream connect. */
static void on_listen(void)
{
	int fd, ufd;
	bool done;
	while ((fd = proxy_accept(&srv, &up, &st, set_bufs, &ufd, &done)) >= 0) {
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

static const char *upstream;

/* --upstream and --buf; the common options are net_parse_opts's. */
static void own_opt(int val, const char *arg)
{
	if (val == 'u')
		upstream = arg;
	else
		bufsize = net_parse_u64("--buf", arg, 1u << 30);
}

/* Free the connections that ended in this batch of events. */
static void free_dead(void)
{
	while (dead_list) {
		struct conn *c = dead_list;
		dead_list = c->next_dead;
		free(c->flow[0].buf);
		free(c->flow[1].buf);
		free(c);
	}
}

int main(int argc, char **argv)
{
	static const struct option own[] = {
	    {"upstream", required_argument, 0, 'u'},
	    {"buf", required_argument, 0, 'b'},
	    {0, 0, 0, 0},
	};
	net_prog = "sb-proxy-naive";
	net_parse_opts(argc, argv, own, own_opt, usage, INT_MAX, &opts);
	proxy_require_upstream(upstream, &up);
	if (bufsize == 0)
		net_usage_error("--buf must be at least 1");

	net_server_open(&srv, opts.listen, "proxy-naive");
	net_server_run(&srv, on_listen, on_leg, free_dead);
	proxy_print_summary("proxy-naive", &st, &up, "");
	return 0;
}
