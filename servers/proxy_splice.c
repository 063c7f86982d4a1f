// SPDX-License-Identifier: MIT
/* sb-proxy-splice: TCP reverse proxy that moves bytes socket -> pipe -> socket with splice(), so
 * the payload never enters user space (docs/programs.md, "Proxies").
 *
 * Every accepted client connection gets its own upstream connection (--upstream) and one pipe per
 * direction (--pipe-size, default 1 MiB via F_SETPIPE_SZ, capped to /proc/sys/fs/pipe-max-size).
 * One thread and one level-triggered epoll loop, for the same reasons as sb-echo-splice: the
 * process-CPU figure stays comparable (one core at most) and epoll serves thousands of
 * connections. A direction fills its pipe while there is room and drains it into the other leg
 * while it holds bytes, so reading and writing overlap and a slow receiver slows its sender (TCP
 * flow control). The client is not read before the upstream connect completed; whatever it sent
 * early waits in its socket. A FIN is forwarded (shutdown SHUT_WR) once the pipe is empty; the
 * connection closes when both directions ended. When one leg fails (upstream refuses, a reset,
 * EPIPE) the other is closed with a reset so that its peer cannot mistake the failure for a clean
 * end. */
#define _GNU_SOURCE
#include "net.h"
#include "proxy.h"

#include <errno.h>
#include <fcntl.h>
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
/* Pipe fills per direction before the loop turns to other connections. */
#define ROUNDS 16
/* SPLICE_F_MOVE is only a hint (a no-op since Linux 2.6.21); kept as the classic idiom. */
#define SPLICE_FLAGS (SPLICE_F_NONBLOCK | SPLICE_F_MOVE)

struct conn;

/* One socket of a proxied connection; its address is the epoll tag. */
struct leg {
	struct conn *c;
	int fd;
	uint32_t events; /* current epoll interest; 0 = not registered */
};

/* One direction: bytes spliced from one leg into the pipe and not yet out to the other. */
struct flow {
	int pipe[2];   /* read end, write end */
	size_t cap;    /* pipe capacity in bytes */
	size_t inpipe; /* bytes in the pipe */
	bool full;     /* the last socket -> pipe splice found no free pipe slot */
	bool eof;      /* the source leg sent FIN */
	bool shut;     /* FIN forwarded to the destination leg */
};

struct conn {
	struct leg leg[2];   /* CLIENT, UPSTREAM */
	struct flow flow[2]; /* flow[s]: from leg s to leg !s */
	bool connecting;     /* upstream connect in progress */
	bool dead;	     /* closed; freed after the current batch of events */
	struct conn *next_dead;
};

static struct net_stats st;
static struct proxy_upstream up;
static struct net_server srv;
static struct net_opts opts = {.listen = "127.0.0.1:0"};
static size_t pipe_size = 1048576;
static uint64_t pipes_default; /* pipes that kept the default size: F_SETPIPE_SZ refused */
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
		close(c->flow[s].pipe[0]);
		close(c->flow[s].pipe[1]);
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

/* Move bytes from leg s through its pipe to leg !s until neither side makes progress, EOF is
 * forwarded, or ROUNDS pipe fills went through. Returns false if the connection failed (it is then
 * ended). */
static bool pump(struct conn *c, int s)
{
	struct flow *f = &c->flow[s];
	int in = c->leg[s].fd, out = c->leg[!s].fd;
	for (int round = 0; round < ROUNDS; round++) {
		bool progress = false;
		if (!f->eof && !f->full && f->inpipe < f->cap) {
			ssize_t n =
			    splice(in, NULL, f->pipe[1], NULL, f->cap - f->inpipe, SPLICE_FLAGS);
			if (n > 0) {
				f->inpipe += (size_t)n;
				if (s == CLIENT)
					st.bytes_in += (uint64_t)n;
				progress = true;
			} else if (n == 0) {
				f->eof = true;
			} else if (errno == EAGAIN) {
				/* Either the socket is empty or the pipe has no free slot (skb
				 * fragments can fill its slots before its byte capacity). With
				 * bytes in the pipe, assume the latter and wait for it to drain
				 * rather than spin on a level-triggered EPOLLIN; draining clears
				 * the flag. */
				if (f->inpipe > 0)
					f->full = true;
			} else if (errno != EINTR) {
				conn_fail(c, s);
				return false;
			}
		}
		if (f->inpipe > 0) {
			ssize_t n = splice(f->pipe[0], NULL, out, NULL, f->inpipe, SPLICE_FLAGS);
			if (n > 0) {
				f->inpipe -= (size_t)n;
				if (s == UPSTREAM)
					st.bytes_out += (uint64_t)n;
				f->full = false;
				progress = true;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				conn_fail(c, !s);
				return false;
			}
		}
		if (f->eof && f->inpipe == 0) {
			if (!f->shut) {
				/* Everything read before the FIN was written: forward the FIN. */
				(void)shutdown(out, SHUT_WR);
				f->shut = true;
			}
			return true;
		}
		if (!progress)
			break;
	}
	return true;
}

/* Recompute both legs' interest after pumping: EPOLLIN while a leg's pipe has room and it has not
 * sent FIN, EPOLLOUT while bytes for it wait in the other pipe. */
static void update_events(struct conn *c)
{
	for (int s = 0; s < 2; s++) {
		uint32_t ev = 0;
		const struct flow *f = &c->flow[s];
		if (!f->eof && !f->full && f->inpipe < f->cap)
			ev |= EPOLLIN;
		if (c->flow[!s].inpipe > 0)
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

/* Accept every pending connection, give it two pipes and start its upstream connect. */
static void on_listen(void)
{
	int fd, ufd;
	bool done;
	while ((fd = proxy_accept(&srv, &up, &st, set_bufs, &ufd, &done)) >= 0) {
		struct conn *c = calloc(1, sizeof(*c));
		if (!c)
			net_die("out of memory");
		if (!(c->flow[0].cap = net_pipe(c->flow[0].pipe, pipe_size, &pipes_default)) ||
		    !(c->flow[1].cap = net_pipe(c->flow[1].pipe, pipe_size, &pipes_default))) {
			if (!srv.accept_warned)
				net_warn("pipe2: %s", strerror(errno));
			srv.accept_warned = true;
			for (int s = 0; s < 2; s++)
				if (c->flow[s].cap) {
					close(c->flow[s].pipe[0]);
					close(c->flow[s].pipe[1]);
				}
			free(c);
			st.errors++;
			proxy_abort(fd);
			close(ufd);
			continue;
		}
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
	    "usage: sb-proxy-splice --upstream ADDR:PORT [--listen ADDR:PORT] [--pipe-size BYTES]\n"
	    "                       [--sndbuf BYTES] [--rcvbuf BYTES]\n"
	    "  --upstream ADDR:PORT where every accepted connection is forwarded (required)\n"
	    "  --listen ADDR:PORT   default 127.0.0.1:0 (port 0 = kernel picks; IPv6 as [::1]:0)\n"
	    "  --pipe-size BYTES    pipe per direction and connection (default 1048576, capped\n"
	    "                       to /proc/sys/fs/pipe-max-size)\n"
	    "  --sndbuf BYTES       SO_SNDBUF on both legs (0 = kernel default)\n"
	    "  --rcvbuf BYTES       SO_RCVBUF on both legs (0 = kernel default)\n"
	    "Prints a ready line, then a summary line on SIGTERM/SIGINT (JSON, "
	    "docs/programs.md).\n");
}

static const char *upstream;

/* --upstream and --pipe-size; the common options are net_parse_opts's. */
static void own_opt(int val, const char *arg)
{
	if (val == 'u')
		upstream = arg;
	else
		pipe_size = net_parse_u64("--pipe-size", arg, 1u << 30);
}

/* Free the connections that ended in this batch of events. */
static void free_dead(void)
{
	while (dead_list) {
		struct conn *c = dead_list;
		dead_list = c->next_dead;
		free(c);
	}
}

int main(int argc, char **argv)
{
	static const struct option own[] = {
	    {"upstream", required_argument, 0, 'u'},
	    {"pipe-size", required_argument, 0, 'p'},
	    {0, 0, 0, 0},
	};
	net_prog = "sb-proxy-splice";
	net_parse_opts(argc, argv, own, own_opt, usage, INT_MAX, &opts);
	proxy_require_upstream(upstream, &up);
	pipe_size = net_pipe_size(pipe_size);

	net_server_open(&srv, opts.listen, "proxy-splice");
	net_server_run(&srv, on_listen, on_leg, free_dead);
	char extra[64];
	snprintf(extra, sizeof(extra), ",\"pipes_default\":%llu",
		 (unsigned long long)pipes_default);
	net_pipe_report(pipes_default);
	proxy_print_summary("proxy-splice", &st, &up, extra);
	return 0;
}
