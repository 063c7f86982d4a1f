// SPDX-License-Identifier: MIT
/* sb-proxy-uring: TCP reverse proxy on io_uring (docs/programs.md, "Proxies"), built with liburing.
 *
 * One thread, one ring, as sb-echo-uring (the ring, its probe, the provided buffers and the
 * multishot accept are servers/uring.c's). Every accepted client gets its own upstream connection
 * (--upstream): a non-blocking connect (proxy_connect, shared with the other proxies) whose
 * completion is awaited with a poll on the ring; the client is not read before it completed, so
 * whatever it sent early waits in its socket. Then each direction (client -> upstream and back)
 * moves bytes with the mode's technique:
 *   recv-send (default): a multishot receive on the source leg picks buffers from the shared ring
 *     of provided buffers; each filled buffer is sent to the other leg in order, one send in
 *     flight per direction, and returns to the ring when sent. When the ring runs dry the receive
 *     ends (ENOBUFS) and is re-armed once buffers come back, so a slow receiver slows its sender.
 *   send-zc: the same with IORING_OP_SEND_ZC; a buffer returns on the send's notification.
 *   splice: IORING_OP_SPLICE source leg -> pipe -> other leg, a pipe of --buffer-size bytes per
 *     direction; polls on the ring wait for readiness and the splices are non-blocking.
 * A FIN is forwarded (shutdown SHUT_WR) once everything read before it was sent; the connection
 * closes when both directions ended. When one leg fails (upstream refuses, a reset, EPIPE) every
 * operation of the connection is cancelled (IORING_OP_ASYNC_CANCEL), the failed leg is closed and
 * the other one reset, so that its peer cannot mistake the failure for a clean end. */
#define _GNU_SOURCE
#include "net.h"
#include "proxy.h"
#include "uring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

/* This program's kinds of operation (uring.h): OP_CONNECT and OP_CANCEL are tagged with a struct
 * conn, sends with their struct uring_buf, the others with a struct flow. */
enum op {
	OP_CONNECT = URING_OP_OWN,
	OP_CANCEL,
	OP_RECV,
	OP_SEND,
	OP_POLL_IN,
	OP_POLL_OUT,
	OP_SPLICE_IN,
	OP_SPLICE_OUT
};

struct conn;

/* One direction: from leg s to leg !s. */
struct flow {
	struct conn *c;
	int s;
	struct uring_queue q; /* recv modes: buffers to send on, in order */
	int pipe[2];		       /* splice mode: read end, write end */
	size_t cap, inpipe;	       /* splice mode: pipe capacity and bytes in it */
	bool in_armed;		       /* a receive (or poll/splice in) is in flight */
	bool out_busy;		       /* a send (or poll/splice out) is in flight */
	bool wait_bufs;		       /* recv modes: the receive ended for lack of buffers */
	bool full;		       /* splice: the pipe had no free slot; wait for it to drain */
	bool eof;		       /* the source leg sent FIN */
	bool shut;		       /* FIN forwarded to the destination leg */
	struct flow *next_wait;	       /* list of directions waiting for buffers */
} __attribute__((aligned(16)));

struct conn {
	int fd[2];	     /* PROXY_CLIENT, PROXY_UPSTREAM */
	struct flow flow[2]; /* flow[s]: from leg s to leg !s */
	unsigned inflight;   /* submissions whose final CQE has not arrived */
	bool connecting;     /* upstream connect in progress */
	bool failed;	     /* a leg failed; close once nothing is in flight */
	int failed_leg;	     /* closed plainly; the other leg is reset */
} __attribute__((aligned(16)));

static struct net_opts opts = {.listen = "127.0.0.1:0"};
static struct proxy_upstream up;
static struct net_stats st; /* bytes_in: read from clients; bytes_out: written to clients */
static struct flow *waiting[2]; /* directions waiting for buffers, per buffer group (leg) */

static int in_fd(const struct flow *f) { return f->c->fd[f->s]; }
static int out_fd(const struct flow *f) { return f->c->fd[!f->s]; }

/* Submit the multishot receive of f's source leg (buffers from the ring). */
static void arm_recv(struct flow *f)
{
	uring_prep_recv(uring_get_sqe(), in_fd(f), (unsigned)f->s, f, OP_RECV);
	f->in_armed = true;
	f->c->inflight++;
}

/* Submit a send of the rest of f's first queued buffer to its destination leg. */
static void start_send(struct flow *f)
{
	uring_prep_send(uring_get_sqe(), out_fd(f), f->q.head, OP_SEND);
	f->out_busy = true;
	f->c->inflight++;
}

/* Submit a poll of socket fd for events ev, tagged with p and op. */
static void arm_poll(struct conn *c, void *p, int fd, unsigned ev, enum op op)
{
	struct io_uring_sqe *sqe = uring_get_sqe();
	io_uring_prep_poll_add(sqe, fd, ev);
	uring_set_data(sqe, p, op);
	c->inflight++;
}

/* Submit a non-blocking splice: source leg -> pipe (in) or pipe -> destination leg (out). */
static void start_splice(struct flow *f, bool in)
{
	struct io_uring_sqe *sqe = uring_get_sqe();
	unsigned flags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;
	if (in)
		io_uring_prep_splice(sqe, in_fd(f), -1, f->pipe[1], -1,
				     (unsigned)(f->cap - f->inpipe), flags);
	else
		io_uring_prep_splice(sqe, f->pipe[0], -1, out_fd(f), -1, (unsigned)f->inpipe,
				     flags);
	uring_set_data(sqe, f, in ? OP_SPLICE_IN : OP_SPLICE_OUT);
	f->c->inflight++;
}

/* Start reading f's source leg with the mode's technique. */
static void start_in(struct flow *f)
{
	if (ur.cfg.mode != URING_SPLICE) {
		arm_recv(f);
	} else {
		f->in_armed = true;
		arm_poll(f->c, f, in_fd(f), POLLIN, OP_POLL_IN);
	}
}

static void wake_waiting(void);

/* Take f off the list of directions waiting for buffers, if it is on it. */
static void unwait(struct flow *f)
{
	if (!f->wait_bufs)
		return;
	struct flow **p = &waiting[f->s];
	while (*p != f)
		p = &(*p)->next_wait;
	*p = f->next_wait;
	f->wait_bufs = false;
	f->c->inflight--; /* the wait held the connection open */
}

/* Close c once nothing of it is in flight and both FINs were forwarded, or it failed; otherwise
 * do nothing. Buffers it still holds go back to the ring. */
static void conn_maybe_close(struct conn *c)
{
	if (c->inflight)
		return;
	if (!(c->flow[0].shut && c->flow[1].shut) && !c->failed)
		return;
	for (int s = 0; s < 2; s++) {
		struct flow *f = &c->flow[s];
		uring_queue_drop(&f->q);
		if (ur.cfg.mode == URING_SPLICE) {
			close(f->pipe[0]);
			close(f->pipe[1]);
		}
		if (c->failed && s != c->failed_leg)
			proxy_abort(c->fd[s]);
		else
			close(c->fd[s]);
	}
	st.active--;
	if (c->failed)
		st.errors++;
	free(c);
	uring_accept_resume();
	wake_waiting(); /* c's buffers went back to the ring */
}

/* Leg `leg` of c failed: cancel everything of c in flight (the CQEs come back, then c closes:
 * that leg plainly, the other with a reset). */
static void conn_fail(struct conn *c, int leg)
{
	if (c->failed)
		return;
	c->failed = true;
	c->failed_leg = leg;
	for (int s = 0; s < 2; s++)
		unwait(&c->flow[s]);
	if (c->inflight == 0)
		return;
	for (int s = 0; s < 2; s++) {
		struct io_uring_sqe *sqe = uring_get_sqe();
		io_uring_prep_cancel_fd(sqe, c->fd[s], IORING_ASYNC_CANCEL_ALL);
		uring_set_data(sqe, c, OP_CANCEL);
		c->inflight++;
	}
}

/* Forward f's FIN once everything read before it went out. */
static void check_fin(struct flow *f)
{
	if (f->eof && !f->shut && !f->c->failed && !f->q.head && f->inpipe == 0) {
		(void)shutdown(out_fd(f), SHUT_WR);
		f->shut = true;
	}
}

/* Re-arm the receives that ended for lack of buffers whose group has some again. */
static void wake_waiting(void)
{
	for (unsigned g = 0; g < 2; g++)
		while (waiting[g] && uring_bufs_free(g)) {
			struct flow *f = waiting[g];
			waiting[g] = f->next_wait;
			f->wait_bufs = false;
			f->c->inflight--; /* the wait held the connection open */
			if (!f->c->failed && !f->eof)
				arm_recv(f);
			else
				conn_maybe_close(f->c);
		}
}

/* --sndbuf/--rcvbuf on a leg. */
static void set_bufs(int fd) { net_set_bufs(fd, opts.sndbuf, opts.rcvbuf); }

/* The upstream connect of c completed: start both directions. */
static void conn_start(struct conn *c)
{
	c->connecting = false;
	start_in(&c->flow[PROXY_CLIENT]);
	start_in(&c->flow[PROXY_UPSTREAM]);
}

/* A new client socket: start its upstream connect (a failure at once resets the client). */
static void on_accepted(int fd)
{
	set_bufs(fd);
	net_set_nodelay(fd);
	st.connections++;
	bool done;
	int ufd = proxy_connect(&up, set_bufs, &done);
	if (ufd < 0) {
		proxy_upstream_failed(&up, errno);
		st.errors++;
		proxy_abort(fd);
		return;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		net_die("out of memory");
	c->fd[PROXY_CLIENT] = fd;
	c->fd[PROXY_UPSTREAM] = ufd;
	for (int s = 0; s < 2; s++) {
		c->flow[s] = (struct flow){.c = c, .s = s, .pipe = {-1, -1}};
		if (ur.cfg.mode != URING_SPLICE)
			continue;
		c->flow[s].cap = net_pipe(c->flow[s].pipe, ur.cfg.buf_size, &ur.pipes_default);
		if (c->flow[s].cap == 0) {
			static bool warned;
			if (!warned)
				net_warn("pipe for a connection: %s", strerror(errno));
			warned = true;
			if (s == 1) {
				close(c->flow[0].pipe[0]);
				close(c->flow[0].pipe[1]);
			}
			free(c);
			close(ufd);
			proxy_abort(fd);
			st.errors++;
			return;
		}
	}
	st.active++;
	if (done) {
		conn_start(c);
	} else {
		c->connecting = true;
		arm_poll(c, c, ufd, POLLOUT, OP_CONNECT);
	}
}

/* The poll on a connecting upstream leg completed with events (or an error) res. */
static void on_connect(struct conn *c, int res)
{
	c->inflight--;
	if (c->failed) {
		conn_maybe_close(c);
		return;
	}
	/* poll(2) and epoll share the event bits that proxy_connected reads. */
	int done = proxy_connected(&up, c->fd[PROXY_UPSTREAM], res < 0 ? EPOLLERR : (uint32_t)res,
				   EPOLLERR | EPOLLHUP);
	if (done < 0) {
		conn_fail(c, PROXY_UPSTREAM);
		conn_maybe_close(c);
	} else if (done == 0) {
		arm_poll(c, c, c->fd[PROXY_UPSTREAM], POLLOUT, OP_CONNECT);
	} else {
		conn_start(c);
	}
}

/* A completion of f's multishot receive. */
static void on_recv(struct flow *f, const struct io_uring_cqe *cqe)
{
	struct conn *c = f->c;
	bool more = cqe->flags & IORING_CQE_F_MORE;
	if (cqe->res > 0) {
		uring_queue_recv(&f->q, cqe, (unsigned)f->s, f);
		if (f->s == PROXY_CLIENT)
			st.bytes_in += (uint64_t)cqe->res;
		if (!f->out_busy && !c->failed)
			start_send(f);
	} else if (cqe->res == 0) {
		f->eof = true;
	} else if (cqe->res == -ENOBUFS) {
		if (!more && !c->failed && !f->eof) {
			f->in_armed = false;
			if (uring_bufs_free((unsigned)f->s)) {
				c->inflight--;
				arm_recv(f); /* buffers came back meanwhile */
				return;
			}
			f->wait_bufs = true; /* keeps c open (counted in flight) */
			f->next_wait = waiting[f->s];
			waiting[f->s] = f;
			return;
		}
	} else if (cqe->res != -EINTR && cqe->res != -EAGAIN) {
		conn_fail(c, f->s);
	}
	if (more)
		return;
	f->in_armed = false;
	c->inflight--;
	bool rearm = cqe->res > 0 || (cqe->res < 0 && cqe->res != -ENOBUFS);
	if (rearm && !c->failed && !f->eof) {
		arm_recv(f); /* ended for another reason (CQ overflow, EINTR): re-arm */
		return;
	}
	check_fin(f);
	conn_maybe_close(c);
}

/* A completion of a send (or a send-zc notification) of buffer b. */
static void on_send(struct uring_buf *b, const struct io_uring_cqe *cqe)
{
	if (uring_send_cqe(b, cqe))
		return;
	struct flow *f = b->owner;
	struct conn *c = f->c;
	f->out_busy = false;
	c->inflight--;
	if (cqe->res > 0) {
		b->off += (uint32_t)cqe->res;
		if (f->s == PROXY_UPSTREAM)
			st.bytes_out += (uint64_t)cqe->res;
	} else if (cqe->res != -EINTR && cqe->res != -EAGAIN) {
		conn_fail(c, !f->s);
	}
	if (b->off == b->len)
		uring_queue_sent(&f->q);
	if (f->q.head && !c->failed) {
		start_send(f);
		return;
	}
	check_fin(f);
	conn_maybe_close(c);
}

/* A completion of a poll or splice of direction f (splice mode). */
static void on_splice_op(struct flow *f, enum op op, int res)
{
	struct conn *c = f->c;
	c->inflight--;
	if (op == OP_POLL_IN) {
		if (c->failed || res < 0) {
			f->in_armed = false;
			if (res < 0)
				conn_fail(c, f->s);
		} else {
			start_splice(f, true);
		}
	} else if (op == OP_POLL_OUT) {
		if (c->failed || res < 0) {
			f->out_busy = false;
			if (res < 0)
				conn_fail(c, !f->s);
		} else {
			start_splice(f, false);
		}
	} else if (op == OP_SPLICE_IN) {
		f->in_armed = false;
		if (res > 0) {
			f->inpipe += (size_t)res;
			if (f->s == PROXY_CLIENT)
				st.bytes_in += (uint64_t)res;
		} else if (res == 0) {
			f->eof = true;
		} else if (res == -EAGAIN || res == -EINTR) {
			/* Either the socket is empty or the pipe has no free slot (skb fragments can
			 * fill its slots before its byte capacity). With bytes in the pipe assume the
			 * latter and wait for it to drain rather than poll a readable socket again. */
			if (f->inpipe > 0)
				f->full = true;
		} else {
			conn_fail(c, f->s);
		}
	} else { /* OP_SPLICE_OUT */
		f->out_busy = false;
		if (res > 0) {
			f->inpipe -= (size_t)res;
			f->full = false;
			if (f->s == PROXY_UPSTREAM)
				st.bytes_out += (uint64_t)res;
		} else if (res == -EAGAIN || res == -EINTR) {
			if (!c->failed) {
				f->out_busy = true;
				arm_poll(c, f, out_fd(f), POLLOUT, OP_POLL_OUT);
			}
		} else if (res < 0) {
			conn_fail(c, !f->s);
		}
	}
	if (!c->failed) {
		/* Out first: splice straight from the pipe (the socket is usually writable). */
		if (!f->out_busy && f->inpipe > 0) {
			f->out_busy = true;
			start_splice(f, false);
		}
		if (!f->in_armed && !f->eof && !f->full && f->inpipe < f->cap) {
			f->in_armed = true;
			arm_poll(c, f, in_fd(f), POLLIN, OP_POLL_IN);
		}
		check_fin(f);
	}
	conn_maybe_close(c);
}

/* Dispatch one completion. */
static void on_cqe(const struct io_uring_cqe *cqe)
{
	void *p = uring_data_ptr(cqe);
	unsigned op = uring_data_op(cqe);
	switch (op) {
	case URING_OP_ACCEPT:
		uring_on_accept(cqe, st.active, on_accepted);
		return;
	case OP_CONNECT:
		on_connect(p, cqe->res);
		return;
	case OP_CANCEL: {
		struct conn *c = p;
		c->inflight--;
		conn_maybe_close(c);
		return;
	}
	case OP_RECV:
		on_recv(p, cqe);
		return;
	case OP_SEND:
		on_send(p, cqe);
		return;
	default:
		on_splice_op(p, (enum op)op, cqe->res);
	}
}

/* Print the command line and its options to f (--help, usage errors' hint). */
static void usage(FILE *f)
{
	fprintf(f,
		"usage: sb-proxy-uring --upstream ADDR:PORT [--listen ADDR:PORT]\n"
		"                      [--mode recv-send|splice|send-zc] [--queue-depth N] "
		"[--buffers N]\n"
		"                      [--buffer-size BYTES] [--sndbuf BYTES] [--rcvbuf BYTES]\n"
		"  --upstream ADDR:PORT where every accepted connection is forwarded (required)\n"
		"  --listen ADDR:PORT   default 127.0.0.1:0 (port 0 = kernel picks; IPv6 as "
		"[::1]:0)\n" URING_USAGE
		"                       (splice: a pipe per direction and connection)\n"
		"  --sndbuf BYTES       SO_SNDBUF on both legs (0 = kernel default)\n"
		"  --rcvbuf BYTES       SO_RCVBUF on both legs (0 = kernel default)\n"
		"Prints a ready line, then a summary line on SIGTERM/SIGINT (JSON, "
		"docs/programs.md).\n");
}

static const char *upstream;

/* --upstream and the io_uring options (uring_opt); the common options are net_parse_opts's. */
static void own_opt(int val, const char *arg)
{
	if (val == 'u')
		upstream = arg;
	else
		(void)uring_opt(val, arg);
}

/* Parse the options, probe and set up the ring, listen, print the ready line, then proxy until
 * SIGTERM/SIGINT and print the summary line. Exit 0; 1 on a runtime failure (one line on
 * stderr), 2 on bad arguments. */
int main(int argc, char **argv)
{
	static const struct option own[] = {
	    {"upstream", required_argument, 0, 'u'}, URING_LONG_OPTIONS, {0, 0, 0, 0}};
	net_prog = "sb-proxy-uring";
	net_parse_opts(argc, argv, own, own_opt, usage, INT_MAX, &opts);
	proxy_require_upstream(upstream, &up);
	uring_check_opts();
	uring_setup(true);
	uring_listen(opts.listen, "proxy-uring");
	ur.released = wake_waiting;
	uring_run(on_cqe);
	net_pipe_report(ur.pipes_default);
	char extra[384];
	uring_summary_extra(extra, sizeof(extra), "");
	proxy_print_summary("proxy-uring", &st, &up, extra);
	return 0;
}
