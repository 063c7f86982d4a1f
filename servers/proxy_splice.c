// SPDX-License-Identifier: MIT
/* sb-proxy-splice: TCP reverse proxy that moves bytes socket -> pipe -> socket with splice(), so
 * the payload never enters user space (docs/programs.md, "Proxies").
 *
 * Every accepted client connection gets its own upstream connection (--upstream) and one pipe per
 * direction (--pipe-size, default 1 MiB via F_SETPIPE_SZ, capped to /proc/sys/fs/pipe-max-size).
 * One thread (or --workers threads, each with its own SO_REUSEPORT listener and connections) and
 * one level-triggered epoll loop each, for the same reasons as sb-echo-splice: the
 * process-CPU figure stays comparable (one core at most) and epoll serves thousands of
 * connections. A direction fills its pipe while there is room and drains it into the other leg
 * while it holds bytes, so reading and writing overlap and a slow receiver slows its sender (TCP
 * flow control). The client is not read before the upstream connect completed; whatever it sent
 * early waits in its socket. A FIN is forwarded (shutdown SHUT_WR) once the pipe is empty; the
 * connection closes when both directions ended. When one leg fails (upstream refuses, a reset,
 * EPIPE) the other is closed with a reset so that its peer cannot mistake the failure for a clean
 * end. All of that but the splicing itself is proxy_run's (servers/proxy.c). */
#define _GNU_SOURCE
#include "net.h"
#include "proxy.h"

#include <errno.h>
#include <fcntl.h>
#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

/* Pipe fills per direction before the loop turns to other connections. */
#define ROUNDS 16
/* SPLICE_F_MOVE is only a hint (a no-op since Linux 2.6.21); kept as the classic idiom. */
#define SPLICE_FLAGS (SPLICE_F_NONBLOCK | SPLICE_F_MOVE)

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
	struct proxy_conn pc; /* first: proxy_run's part */
	struct flow flow[2];  /* flow[s]: from leg s to leg !s */
};

static struct proxy px = {.server = "proxy-splice", .opts = {.listen = "127.0.0.1:0"}};
static size_t pipe_size = 1048576;
/* Pipes that kept the default size (F_SETPIPE_SZ refused), in memory worker processes share. */
static uint64_t *pipes_default;

/* Give a new connection its two pipes. Returns 0, or -1 with no pipe left open when one could not
 * be made (the first time also said on stderr, like a failed accept). */
static int conn_open(struct proxy_conn *pc)
{
	struct conn *c = (struct conn *)pc;
	if ((c->flow[0].cap = net_pipe(c->flow[0].pipe, pipe_size, pipes_default)) &&
	    (c->flow[1].cap = net_pipe(c->flow[1].pipe, pipe_size, pipes_default)))
		return 0;
	if (!proxy_current()->srv.accept_warned)
		net_warn("pipe2: %s", strerror(errno));
	proxy_current()->srv.accept_warned = true;
	for (int s = 0; s < 2; s++)
		if (c->flow[s].cap) {
			close(c->flow[s].pipe[0]);
			close(c->flow[s].pipe[1]);
		}
	return -1;
}

/* The connection ended: close its pipes. */
static void conn_close(struct proxy_conn *pc)
{
	struct conn *c = (struct conn *)pc;
	for (int s = 0; s < 2; s++) {
		close(c->flow[s].pipe[0]);
		close(c->flow[s].pipe[1]);
	}
}

/* Move bytes from leg s through its pipe to leg !s until neither side makes progress, EOF is
 * forwarded, or ROUNDS pipe fills went through. */
static enum proxy_copy_result pump(struct proxy_conn *pc, int s)
{
	struct flow *f = &((struct conn *)pc)->flow[s];
	int in = pc->leg[s].fd, out = pc->leg[!s].fd;
	for (int round = 0; round < ROUNDS; round++) {
		bool progress = false;
		if (!f->eof && !f->full && f->inpipe < f->cap) {
			ssize_t n =
			    splice(in, NULL, f->pipe[1], NULL, f->cap - f->inpipe, SPLICE_FLAGS);
			if (n > 0) {
				f->inpipe += (size_t)n;
				if (s == PROXY_CLIENT)
					proxy_current()->st.bytes_in += (uint64_t)n;
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
				return PROXY_COPY_IN_FAILED;
			}
		}
		if (f->inpipe > 0) {
			ssize_t n = splice(f->pipe[0], NULL, out, NULL, f->inpipe, SPLICE_FLAGS);
			if (n > 0) {
				f->inpipe -= (size_t)n;
				if (s == PROXY_UPSTREAM)
					proxy_current()->st.bytes_out += (uint64_t)n;
				f->full = false;
				progress = true;
			} else if (n < 0 && errno != EAGAIN && errno != EINTR) {
				return PROXY_COPY_OUT_FAILED;
			}
		}
		if (f->eof && f->inpipe == 0) {
			if (!f->shut) {
				/* Everything read before the FIN was written: forward the FIN. */
				(void)shutdown(out, SHUT_WR);
				f->shut = true;
			}
			return PROXY_COPY_OK;
		}
		if (!progress)
			break;
	}
	return PROXY_COPY_OK;
}

/* EPOLLIN while leg s's pipe has room and it has not sent FIN, EPOLLOUT while bytes for it wait in
 * the other pipe. */
static uint32_t interest(const struct proxy_conn *pc, int s)
{
	const struct conn *c = (const struct conn *)pc;
	const struct flow *f = &c->flow[s];
	uint32_t ev = 0;
	if (!f->eof && !f->full && f->inpipe < f->cap)
		ev |= EPOLLIN;
	if (c->flow[!s].inpipe > 0)
		ev |= EPOLLOUT;
	return ev;
}

/* Whether leg s's FIN was forwarded. */
static bool shut(const struct proxy_conn *pc, int s)
{
	return ((const struct conn *)pc)->flow[s].shut;
}

static const struct proxy_ops ops = {
    .conn_size = sizeof(struct conn),
    .open = conn_open,
    .pump = pump,
    .interest = interest,
    .shut = shut,
    .close = conn_close,
};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sb-proxy-splice --upstream ADDR:PORT [--listen ADDR:PORT] [--pipe-size BYTES]\n"
	    "                       [--workers N] [--processes] [--upstream-sources N]\n"
	    "                       [--sndbuf BYTES] [--rcvbuf BYTES]\n"
	    "  --upstream ADDR:PORT where every accepted connection is forwarded (required)\n"
	    "  --workers N          threads, each with its own SO_REUSEPORT listener (default 1)\n"
	    "  --processes          the workers are processes (each its own RLIMIT_NOFILE)\n"
	    "  --upstream-sources N bind upstream connection k to 127.0.0.1 + (k mod N) (loopback)\n"
	    "  --listen ADDR:PORT   default 127.0.0.1:0 (port 0 = kernel picks; IPv6 as [::1]:0)\n"
	    "  --pipe-size BYTES    pipe per direction and connection (default 1048576, capped\n"
	    "                       to /proc/sys/fs/pipe-max-size)\n"
	    "  --sndbuf BYTES       SO_SNDBUF on both legs (0 = kernel default)\n"
	    "  --rcvbuf BYTES       SO_RCVBUF on both legs (0 = kernel default)\n"
	    "Prints a ready line, then a summary line on SIGTERM/SIGINT (JSON, "
	    "docs/programs.md).\n");
}

/* The proxies' options (proxy_opt) and --pipe-size; the common options are net_parse_opts's. */
static void own_opt(int val, const char *arg)
{
	if (!proxy_opt(&px, val, arg))
		pipe_size = net_parse_u64("--pipe-size", arg, 1u << 30);
}

int main(int argc, char **argv)
{
	static const struct option own[] = {
	    PROXY_LONG_OPTIONS,
	    {"pipe-size", required_argument, 0, 'p'},
	    {0, 0, 0, 0},
	};
	net_prog = "sb-proxy-splice";
	net_parse_opts(argc, argv, own, own_opt, usage, INT_MAX, &px.opts);
	proxy_opts_done(&px);
	pipe_size = net_pipe_size(pipe_size);

	px.ops = &ops;
	pipes_default = net_shared(sizeof(*pipes_default));
	proxy_run(&px);
	static char extra[64 + 128 * NET_WORKERS_MAX];
	int at = snprintf(extra, sizeof(extra), ",\"pipes_default\":%llu",
			  (unsigned long long)*pipes_default);
	net_workers_json(px.wk, px.workers ? px.workers : 1, extra + at, sizeof(extra) - (size_t)at);
	net_pipe_report(*pipes_default);
	proxy_print_summary(px.server, &px.st, &px.up, extra);
	return 0;
}
