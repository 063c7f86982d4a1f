/* SPDX-License-Identifier: MIT */
/* Shared by the reverse proxies (servers/proxy_naive.c, servers/proxy_splice.c,
 * bpf/proxy_sockmap.c), implemented in servers/proxy.c: the upstream connection and its failures,
 * accepting a client together with its upstream leg, the user-space copy of one direction, abortive
 * close, and the summary line, which is the servers' summary (docs/programs.md) plus the proxy's
 * own counters. For the proxies that move every byte from user space (naive, splice) also the
 * whole per-connection handling (pairing the legs, the upstream connect, epoll interest,
 * half-close, teardown, counters) around a data path (struct proxy_ops) that only moves bytes. */
#ifndef SPLICEBENCH_PROXY_H
#define SPLICEBENCH_PROXY_H

#include "net.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* The legs of a proxied connection, as indices of its two sockets and two directions. */
#define PROXY_CLIENT 0
#define PROXY_UPSTREAM 1

/* Where every accepted connection is forwarded to (--upstream ADDR:PORT). */
struct proxy_upstream {
	struct sockaddr_storage addr;
	socklen_t len;
	const char *text; /* as given on the command line, for messages */
	uint64_t errors;  /* connects that failed (upstream_errors in the summary) */
	bool warned;	  /* the first failure was reported on stderr */
	/* --upstream-sources N (0: off): upstream connect k binds source address 127.0.0.1 + (k mod N),
	 * so that a loopback upstream is not limited to one address's ephemeral ports. */
	uint32_t sources;
};

/* Parse --upstream: a numeric ADDR:PORT with a port other than 0; exits with a usage error. */
void proxy_parse_upstream(const char *s, struct proxy_upstream *up);

/* Check the proxy's required --upstream after parsing: a usage error when it is missing (s NULL),
 * else proxy_parse_upstream. */
void proxy_require_upstream(const char *s, struct proxy_upstream *up);

/* A connection to the upstream failed with err: count it in up->errors and say so on stderr the
 * first time only; later failures are only counted (upstream_errors in the summary). */
void proxy_upstream_failed(struct proxy_upstream *up, int err);

/* Start a non-blocking connect to the upstream; prep (buffer sizes: they must be set before the
 * SYN fixes the window scale) and TCP_NODELAY run on the socket first. Returns the socket, or -1
 * with errno set when the connect failed at once (e.g. ECONNREFUSED, EADDRNOTAVAIL) or
 * descriptors ran out. *done tells whether the connection is already established (otherwise wait
 * for EPOLLOUT, then proxy_connected). Exits when no socket can be created for another reason. */
int proxy_connect(const struct proxy_upstream *up, void (*prep)(int fd), bool *done);

/* Events ev arrived on the upstream socket fd while its connect is in progress. Returns 1 when the
 * connect completed, 0 while it is still in progress, -1 when it failed (then counted and
 * reported with proxy_upstream_failed): a pending socket error or any of fail_events in ev. */
int proxy_connected(struct proxy_upstream *up, int fd, uint32_t ev, uint32_t fail_events);

/* Close fd so that its peer sees a reset (SO_LINGER 0) rather than an orderly EOF: used when the
 * other leg of a proxied connection failed, so that the failure is not mistaken for a clean end. */
void proxy_abort(int fd);

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
enum proxy_copy_result proxy_copy(struct proxy_flow *f, int in, int out, size_t bufsize, int rounds,
				  uint64_t *nread, uint64_t *nwritten);

/* Accept the next client (net_accept) and start its upstream connect (proxy_connect); prep and
 * TCP_NODELAY run on both legs. Returns the client socket, with the upstream socket in *ufd and
 * whether its connect already completed in *done, and counts the connection in st. A client whose
 * upstream connect failed at once is reset and counted (st->errors, up->errors), and the next one
 * is tried. Returns -1 when no client is left to accept now. */
int proxy_accept(struct net_server *s, struct proxy_upstream *up, struct net_stats *st,
		 void (*prep)(int fd), int *ufd, bool *done);

/* Print the summary line: the servers' fields (bytes_in = read from clients, bytes_out = written to
 * clients) plus upstream_errors (upstream connects that failed) and an optional JSON fragment
 * `extra` (",\"key\":value..." or ""). Flushes stdout. */
void proxy_print_summary(const char *server, const struct net_stats *st,
			 const struct proxy_upstream *up, const char *extra);

/* User-space proxies
 * ------------------
 * sb-proxy-naive and sb-proxy-splice differ only in how bytes go from one leg to the other; the
 * rest is proxy_run's: accept a client and connect its upstream leg, wait for the connect without
 * reading the client (its early bytes wait in its socket), then after any event on either leg
 * pump both directions, end the connection once both FINs were forwarded, and keep each leg's
 * epoll interest to what its data path waits for. When one leg fails (upstream refuses, a reset,
 * EPIPE) the other is closed with a reset so that its peer cannot mistake the failure for a clean
 * end. */

struct proxy_conn;

/* One socket of a proxied connection; its address is the epoll tag. */
struct proxy_leg {
	struct proxy_conn *c;
	int fd;
	uint32_t events; /* current epoll interest; 0 = not registered */
};

/* What every user-space proxied connection has; a data path's own connection struct starts with
 * it (see proxy_ops.conn_size). */
struct proxy_conn {
	struct proxy_leg leg[2]; /* PROXY_CLIENT, PROXY_UPSTREAM */
	bool connecting;	 /* upstream connect in progress */
	bool dead;		 /* closed; freed after the current batch of events */
	struct proxy_conn *next_dead;
};

/* A data path: how bytes of direction s go from leg s to leg !s. Every callback gets the
 * connection as struct proxy_conn, the first member of the data path's own struct. */
struct proxy_ops {
	/* Size of the data path's connection struct; proxy_run allocates it zeroed. */
	size_t conn_size;
	/* A client was accepted and its upstream connect started; the legs are not set yet. Set up
	 * the per-connection resources (NULL: none). Returns 0, or -1 with nothing left allocated,
	 * after which the connection is reset and counted in errors. */
	int (*open)(struct proxy_conn *c);
	/* Move bytes of direction s (counting them in the stats of the running proxy) until one leg
	 * would block, the FIN is forwarded or the data path's turn is over. */
	enum proxy_copy_result (*pump)(struct proxy_conn *c, int s);
	/* The epoll interest leg s needs now (EPOLLIN, EPOLLOUT or 0), after both directions were
	 * pumped. */
	uint32_t (*interest)(const struct proxy_conn *c, int s);
	/* Whether the FIN of leg s was forwarded to leg !s. */
	bool (*shut)(const struct proxy_conn *c, int s);
	/* The connection ended and both legs are closed: release what open() and pump() set up
	 * (NULL: nothing). The struct itself is freed after the current batch of events. */
	void (*close)(struct proxy_conn *c);
};

/* A running user-space proxy: set ops, opts, up and workers (after parsing), then call proxy_run.
 */
struct proxy {
	const char *server; /* name in the ready and summary lines, e.g. "proxy-naive" */
	const struct proxy_ops *ops;
	struct net_opts opts;	  /* --listen, --sndbuf/--rcvbuf (on both legs) */
	struct proxy_upstream up; /* --upstream */
	unsigned workers;	  /* --workers: threads (net_workers_run); 0 means 1 */
	bool processes;		  /* --processes: the workers are processes */
	const char *upstream_arg, *sources_arg; /* as given, until proxy_opts_done */
	struct net_server srv;
	struct net_stats st;	 /* bytes_in: read from clients; bytes_out: written to clients */
	struct proxy_conn *dead; /* ended in this batch of events, freed after it */
	struct net_worker *wk;	 /* after proxy_run: the workers, their counters and CPU time */
};

/* Listen on p->opts.listen, print the ready line for p->server and proxy every accepted
 * connection to p->up with p->ops until SIGTERM or SIGINT; then return, leaving the summary to the
 * caller (proxy_print_summary with p->st). With p->workers > 1 every worker thread runs a copy of
 * *p with its own listener and connections (a worker process its copy in shared memory); at the end p->st and p->up.errors hold their sums and
 * p->wk the workers. One proxy per process. Exits on fatal errors. */
void proxy_run(struct proxy *p);

/* The options every user-space proxy (proxy_run) takes, for getopt_long; their --help lines are
 * each program's. */
#define PROXY_LONG_OPTIONS                                                                         \
	{"upstream", required_argument, 0, 'u'}, {"workers", required_argument, 0, 'w'},           \
	    {"processes", no_argument, 0, 'P'}, {"upstream-sources", required_argument, 0, 's'}

/* One of PROXY_LONG_OPTIONS (by val) into p: true; false for a program's own option. */
bool proxy_opt(struct proxy *p, int val, const char *arg);

/* After parsing: --upstream (required) and --upstream-sources (1..65536, with a loopback IPv4
 * upstream) into p->up; usage errors otherwise. */
void proxy_opts_done(struct proxy *p);

/* The proxy (the worker's copy) that the calling thread serves, for a data path's counters. */
struct proxy *proxy_current(void);

#endif
