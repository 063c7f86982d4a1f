// SPDX-License-Identifier: MIT
/* sb-echo-uring: echo server on io_uring (docs/programs.md), built with liburing.
 *
 * One thread, one ring: like the epoll servers, one thread keeps the process-CPU figure comparable
 * (io_uring's own io-wq workers, used by the splice mode, are threads of this process too). Every
 * operation is submitted to the ring and finished by its completion; there is no epoll loop.
 *
 * Accepting: one multishot accept on the listening socket (re-armed when it ends), so a connection
 * costs no accept() system call; the signalfd is watched by a poll on the ring.
 *
 * Modes (--mode):
 *   recv-send (default): a multishot receive per connection picks buffers from a ring of provided
 *     buffers (--buffers of --buffer-size bytes, shared by all connections); each filled buffer is
 *     queued on its connection and sent back in order, one send in flight per connection; the
 *     buffer returns to the ring when its send completed. When the ring runs dry the multishot
 *     receive ends (ENOBUFS) and is re-armed once buffers come back: a slow reader slows its
 *     sender down through TCP flow control instead of growing memory.
 *   send-zc: the same with IORING_OP_SEND_ZC for the sends; a buffer returns to the ring only on
 *     the send's notification CQE (the kernel no longer references its pages).
 *   splice: IORING_OP_SPLICE socket -> pipe -> same socket, a pipe of --buffer-size bytes per
 *     connection; a poll on the ring waits for readiness and the splices are non-blocking.
 * After the client's FIN the rest is echoed, then the connection is closed.
 *
 * At start the kernel is probed for what the mode needs (kernel.io_uring_disabled, the opcodes,
 * the provided-buffer ring); anything missing ends the program with one line naming it. The ring,
 * the probe, the options, the provided buffers, the accept and the completion loop are
 * servers/uring.c's, shared with sb-proxy-uring; this file holds the echo's data path. */
#define _GNU_SOURCE
#include "net.h"
#include "uring.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* This program's kinds of operation (uring.h: the low bits of a submission's user_data, the rest
 * a pointer to a struct conn, or a struct uring_buf for sends). */
enum op { OP_RECV = URING_OP_OWN, OP_SEND, OP_POLL_IN, OP_POLL_OUT, OP_SPLICE_IN, OP_SPLICE_OUT };

struct conn {
	int fd;
	int pipe[2];		       /* splice mode: read end, write end */
	size_t cap, inpipe;	       /* splice mode: pipe capacity and bytes in it */
	struct uring_queue q; /* recv modes: buffers to send back, in order */
	unsigned inflight;	       /* submissions whose final CQE has not arrived */
	bool recv_armed; /* recv modes: the multishot receive is active; splice: an in op */
	bool send_busy;	 /* a send (or poll/splice out) is in flight */
	bool wait_bufs;	 /* recv modes: the receive ended for lack of buffers */
	bool eof;	 /* client half-closed */
	bool failed;	 /* an error ended the connection; close once nothing is in flight */
	struct conn *next_wait; /* list of connections waiting for buffers */
} __attribute__((aligned(16)));

static struct net_stats st;
static struct net_opts opts = {.listen = "127.0.0.1:0"};
static struct conn *waiting; /* connections waiting for buffers */

/* Submit the multishot receive of c (buffers from the ring). */
static void arm_recv(struct conn *c)
{
	uring_prep_recv(uring_get_sqe(), c->fd, 0, c, OP_RECV);
	c->recv_armed = true;
	c->inflight++;
}

/* Submit a send of the rest of c's first queued buffer (send-zc mode: a zero-copy send). */
static void start_send(struct conn *c)
{
	uring_prep_send(uring_get_sqe(), c->fd, c->q.head, OP_SEND);
	c->send_busy = true;
	c->inflight++;
}

/* Submit a poll of c's socket for events ev (POLLIN or POLLOUT), tagged op. */
static void arm_poll(struct conn *c, unsigned ev, enum op op)
{
	struct io_uring_sqe *sqe = uring_get_sqe();
	io_uring_prep_poll_add(sqe, c->fd, ev);
	uring_set_data(sqe, c, op);
	c->inflight++;
}

/* Submit a non-blocking splice: socket -> pipe (in) or pipe -> socket (out). */
static void start_splice(struct conn *c, bool in)
{
	struct io_uring_sqe *sqe = uring_get_sqe();
	unsigned flags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;
	if (in)
		io_uring_prep_splice(sqe, c->fd, -1, c->pipe[1], -1, (unsigned)(c->cap - c->inpipe),
				     flags);
	else
		io_uring_prep_splice(sqe, c->pipe[0], -1, c->fd, -1, (unsigned)c->inpipe, flags);
	uring_set_data(sqe, c, in ? OP_SPLICE_IN : OP_SPLICE_OUT);
	c->inflight++;
}

static void wake_waiting(void);

/* Close c once nothing of it is in flight and it is done (echoed everything after the FIN) or
 * failed; otherwise do nothing. Buffers it still holds go back to the ring. */
static void conn_maybe_close(struct conn *c)
{
	if (c->inflight)
		return;
	bool done = c->eof && !c->q.head && c->inpipe == 0;
	if (!done && !c->failed)
		return;
	uring_queue_drop(&c->q);
	close(c->fd);
	if (ur.cfg.mode == URING_SPLICE) {
		close(c->pipe[0]);
		close(c->pipe[1]);
	}
	st.active--;
	if (c->failed)
		st.errors++;
	free(c);
	uring_accept_resume();
	wake_waiting(); /* c's buffers went back to the ring */
}

/* Mark c failed: shut the socket down so that its pending operations complete soon, and take it
 * off the list of connections waiting for buffers (the buffers it holds may be all there are). */
static void conn_fail(struct conn *c)
{
	if (c->failed)
		return;
	c->failed = true;
	shutdown(c->fd, SHUT_RDWR);
	if (c->wait_bufs) {
		struct conn **p = &waiting;
		while (*p != c)
			p = &(*p)->next_wait;
		*p = c->next_wait;
		c->wait_bufs = false;
		c->inflight--; /* the wait held c open */
	}
}

/* Re-arm the receives that ended for lack of buffers, now that some came back. */
static void wake_waiting(void)
{
	while (waiting && uring_bufs_free(0)) {
		struct conn *c = waiting;
		waiting = c->next_wait;
		c->wait_bufs = false;
		c->inflight--; /* the wait held c open */
		if (!c->failed && !c->eof)
			arm_recv(c);
		else
			conn_maybe_close(c);
	}
}

/* A new connection fd: set it up and start its first operation for the mode. */
static void on_accepted(int fd)
{
	net_set_bufs(fd, opts.sndbuf, opts.rcvbuf);
	net_set_nodelay(fd);
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		net_die("out of memory");
	c->fd = fd;
	c->pipe[0] = c->pipe[1] = -1;
	if (ur.cfg.mode == URING_SPLICE) {
		c->cap = net_pipe(c->pipe, ur.cfg.buf_size, &ur.pipes_default);
		if (c->cap == 0) {
			net_warn("pipe for a connection: %s", strerror(errno));
			close(fd);
			free(c);
			st.connections++;
			st.errors++;
			return;
		}
	}
	st.connections++;
	st.active++;
	if (ur.cfg.mode == URING_SPLICE) {
		c->recv_armed = true;
		arm_poll(c, POLLIN, OP_POLL_IN);
	} else {
		arm_recv(c);
	}
}

/* A completion of c's multishot receive. */
static void on_recv(struct conn *c, const struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	if (cqe->res > 0) {
		uring_queue_recv(&c->q, cqe, 0, c);
		st.bytes_in += (uint64_t)cqe->res;
		if (!c->send_busy && !c->failed)
			start_send(c);
	} else if (cqe->res == 0) {
		c->eof = true;
	} else if (cqe->res == -ENOBUFS) {
		if (!more && !c->failed && !c->eof) {
			if (uring_bufs_free(0)) {
				c->inflight--;
				arm_recv(c); /* buffers came back meanwhile */
				return;
			}
			c->wait_bufs = true; /* keeps c open (counted in flight) */
			c->next_wait = waiting;
			waiting = c;
			c->recv_armed = false;
			return;
		}
	} else if (cqe->res != -EINTR && cqe->res != -EAGAIN) {
		conn_fail(c);
	}
	if (more)
		return;
	c->recv_armed = false;
	c->inflight--;
	if (cqe->res > 0 && !c->failed && !c->eof)
		arm_recv(c); /* the multishot receive ended (e.g. CQ overflow): re-arm */
	else if (cqe->res < 0 && cqe->res != -ENOBUFS && !c->failed)
		arm_recv(c); /* EINTR/EAGAIN */
	else
		conn_maybe_close(c);
}

/* A completion of a send (or a send-zc notification) of buffer b. */
static void on_send(struct uring_buf *b, const struct io_uring_cqe *cqe)
{
	if (uring_send_cqe(b, cqe))
		return;
	struct conn *c = b->owner;
	c->send_busy = false;
	c->inflight--;
	if (cqe->res > 0) {
		b->off += (uint32_t)cqe->res;
		st.bytes_out += (uint64_t)cqe->res;
	} else if (cqe->res != -EINTR && cqe->res != -EAGAIN) {
		conn_fail(c);
	}
	if (b->off == b->len)
		uring_queue_sent(&c->q);
	if (c->q.head && !c->failed)
		start_send(c);
	else
		conn_maybe_close(c);
}

/* A completion of a poll or splice of connection c (splice mode). */
static void on_splice_op(struct conn *c, enum op op, int res)
{
	c->inflight--;
	if (op == OP_POLL_IN) {
		if (c->failed || res < 0) {
			c->recv_armed = false;
			if (res < 0)
				conn_fail(c);
		} else {
			start_splice(c, true);
		}
	} else if (op == OP_POLL_OUT) {
		if (c->failed || res < 0) {
			c->send_busy = false;
			if (res < 0)
				conn_fail(c);
		} else {
			start_splice(c, false);
		}
	} else if (op == OP_SPLICE_IN) {
		c->recv_armed = false;
		if (res > 0) {
			c->inpipe += (size_t)res;
			st.bytes_in += (uint64_t)res;
		} else if (res == 0) {
			c->eof = true;
		} else if (res == -EAGAIN || res == -EINTR) {
			if (!c->failed) {
				c->recv_armed = true;
				arm_poll(c, POLLIN, OP_POLL_IN);
			}
		} else {
			conn_fail(c);
		}
	} else { /* OP_SPLICE_OUT */
		c->send_busy = false;
		if (res > 0) {
			c->inpipe -= (size_t)res;
			st.bytes_out += (uint64_t)res;
		} else if (res == -EAGAIN || res == -EINTR) {
			if (!c->failed) {
				c->send_busy = true;
				arm_poll(c, POLLOUT, OP_POLL_OUT);
			}
		} else {
			conn_fail(c);
		}
	}
	if (!c->failed) {
		/* Out first: splice straight from the pipe (the socket is usually writable). */
		if (!c->send_busy && c->inpipe > 0) {
			c->send_busy = true;
			start_splice(c, false);
		}
		if (!c->recv_armed && !c->eof && c->inpipe < c->cap) {
			c->recv_armed = true;
			arm_poll(c, POLLIN, OP_POLL_IN);
		}
	}
	conn_maybe_close(c);
}

/* Dispatch one completion. */
static void on_cqe(const struct io_uring_cqe *cqe)
{
	void *p = uring_data_ptr(cqe);
	unsigned op = uring_data_op(cqe);
	if (op == URING_OP_ACCEPT)
		uring_on_accept(cqe, st.active, on_accepted);
	else if (op == OP_RECV)
		on_recv(p, cqe);
	else if (op == OP_SEND)
		on_send(p, cqe);
	else
		on_splice_op(p, (enum op)op, cqe->res);
}

/* Print the command line and its options to f (--help, usage errors' hint). */
static void usage(FILE *f)
{
	fprintf(f,
		"usage: sb-echo-uring [--listen ADDR:PORT] [--mode recv-send|splice|send-zc] "
		"[--queue-depth N] [--buffers N] [--buffer-size BYTES] [--sndbuf BYTES] "
		"[--rcvbuf BYTES]\n"
		"  --listen ADDR:PORT   default 127.0.0.1:0 (port 0 = kernel picks; IPv6 as "
		"[::1]:0)\n" URING_USAGE
		"  --sndbuf BYTES       SO_SNDBUF on accepted sockets (0 = kernel default)\n"
		"  --rcvbuf BYTES       SO_RCVBUF on accepted sockets (0 = kernel default)\n"
		"Prints a ready line, then a summary line on SIGTERM/SIGINT (JSON, "
		"docs/programs.md).\n");
}

/* --mode, --queue-depth, --buffers, --buffer-size (uring_opt); the common options are
 * net_parse_opts's. */
static void own_opt(int val, const char *arg) { (void)uring_opt(val, arg); }

/* Parse the options, probe and set up the ring, listen, print the ready line, then run the
 * completion loop until SIGTERM/SIGINT and print the summary line. Exit 0; 1 on a runtime failure
 * (one line on stderr), 2 on bad arguments. */
int main(int argc, char **argv)
{
	static const struct option own[] = {URING_LONG_OPTIONS, {0, 0, 0, 0}};
	net_prog = "sb-echo-uring";
	net_parse_opts(argc, argv, own, own_opt, usage, INT_MAX, &opts);
	uring_check_opts();
	uring_setup(false);
	uring_listen(opts.listen, "uring");
	ur.released = wake_waiting;
	uring_run(on_cqe);
	net_pipe_report(ur.pipes_default);
	char extra[384];
	uring_summary_extra(extra, sizeof(extra), "");
	net_print_summary_extra("uring", &st, extra);
	return 0;
}
