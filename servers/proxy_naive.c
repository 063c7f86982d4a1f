// SPDX-License-Identifier: MIT
/* sb-proxy-naive: TCP reverse proxy that copies through user space with recv()/send()
 * (docs/programs.md, "Proxies").
 *
 * Every accepted client connection gets its own upstream connection (--upstream); bytes are copied
 * client -> upstream and upstream -> client through one buffer per direction (--buf, default
 * 128 KiB like the naive echo server). One thread (or --workers threads, each with its own
 * SO_REUSEPORT listener and connections) and one level-triggered epoll loop each, for the same
 * reasons as sb-echo-naive: the process-CPU figure stays comparable (one core at most) and epoll
 * serves thousands of connections. A direction reads only while its buffer is empty and writes
 * while it holds bytes, so a slow receiver slows its sender (TCP flow control) instead of growing
 * memory. The client is not read before the upstream connect completed; whatever it sent early
 * waits in its socket. A FIN is forwarded (shutdown SHUT_WR) once everything read before it was
 * written; the connection closes when both directions ended. When one leg fails (upstream refuses,
 * a reset, EPIPE) the other is closed with a reset so that its peer cannot mistake the failure for
 * a clean end. All of that but the copy itself is proxy_run's (servers/proxy.c). */
#define _GNU_SOURCE
#include "net.h"
#include "proxy.h"

#include <arpa/inet.h>
#include <getopt.h>
#include <netinet/in.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/epoll.h>

/* Buffers copied per direction before the loop turns to other connections. */
#define ROUNDS 16

struct conn {
	struct proxy_conn pc;	   /* first: proxy_run's part */
	struct proxy_flow flow[2]; /* flow[s]: from leg s to leg !s */
};

static struct proxy px = {.server = "proxy-naive", .opts = {.listen = "127.0.0.1:0"}};
static size_t bufsize = 131072;

/* Copy from leg s to leg !s until one of them would block, EOF is forwarded, or ROUNDS buffers
 * went through. */
static enum proxy_copy_result pump(struct proxy_conn *pc, int s)
{
	struct conn *c = (struct conn *)pc;
	return proxy_copy(&c->flow[s], pc->leg[s].fd, pc->leg[!s].fd, bufsize, ROUNDS,
			  s == PROXY_CLIENT ? &proxy_current()->st.bytes_in : NULL,
			  s == PROXY_UPSTREAM ? &proxy_current()->st.bytes_out : NULL);
}

/* EPOLLIN while leg s's outgoing buffer is empty and it has not sent FIN, EPOLLOUT while bytes for
 * it wait. */
static uint32_t interest(const struct proxy_conn *pc, int s)
{
	const struct conn *c = (const struct conn *)pc;
	uint32_t ev = 0;
	if (!c->flow[s].eof && c->flow[s].off == c->flow[s].len)
		ev |= EPOLLIN;
	if (c->flow[!s].off < c->flow[!s].len)
		ev |= EPOLLOUT;
	return ev;
}

/* Whether leg s's FIN was forwarded. */
static bool shut(const struct proxy_conn *pc, int s)
{
	return ((const struct conn *)pc)->flow[s].shut;
}

/* The connection ended: free its buffers. */
static void conn_close(struct proxy_conn *pc)
{
	struct conn *c = (struct conn *)pc;
	free(c->flow[0].buf);
	free(c->flow[1].buf);
}

static const struct proxy_ops ops = {
    .conn_size = sizeof(struct conn),
    .pump = pump,
    .interest = interest,
    .shut = shut,
    .close = conn_close,
};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sb-proxy-naive --upstream ADDR:PORT [--listen ADDR:PORT] [--buf BYTES]\n"
	    "                      [--workers N] [--processes] [--upstream-sources N]\n"
	    "                      [--sndbuf BYTES] [--rcvbuf BYTES]\n"
	    "  --upstream ADDR:PORT where every accepted connection is forwarded (required)\n"
	    "  --workers N          threads, each with its own SO_REUSEPORT listener (default 1)\n"
	    "  --processes          the workers are processes (each its own RLIMIT_NOFILE)\n"
	    "  --upstream-sources N bind upstream connection k to 127.0.0.1 + (k mod N) (loopback)\n"
	    "  --listen ADDR:PORT   default 127.0.0.1:0 (port 0 = kernel picks; IPv6 as [::1]:0)\n"
	    "  --buf BYTES          buffer per direction and connection (default 131072)\n"
	    "  --sndbuf BYTES       SO_SNDBUF on both legs (0 = kernel default)\n"
	    "  --rcvbuf BYTES       SO_RCVBUF on both legs (0 = kernel default)\n"
	    "Prints a ready line, then a summary line on SIGTERM/SIGINT (JSON, "
	    "docs/programs.md).\n");
}

/* The proxies' options (proxy_opt) and --buf; the common options are net_parse_opts's. */
static void own_opt(int val, const char *arg)
{
	if (!proxy_opt(&px, val, arg))
		bufsize = net_parse_u64("--buf", arg, 1u << 30);
}

int main(int argc, char **argv)
{
	static const struct option own[] = {
	    PROXY_LONG_OPTIONS,
	    {"buf", required_argument, 0, 'b'},
	    {0, 0, 0, 0},
	};
	net_prog = "sb-proxy-naive";
	net_parse_opts(argc, argv, own, own_opt, usage, INT_MAX, &px.opts);
	proxy_opts_done(&px);
	if (bufsize == 0)
		net_usage_error("--buf must be at least 1");

	px.ops = &ops;
	proxy_run(&px);
	static char extra[128 * NET_WORKERS_MAX];
	net_workers_json(px.wk, px.workers ? px.workers : 1, extra, sizeof(extra));
	proxy_print_summary(px.server, &px.st, &px.up, extra);
	return 0;
}
