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
 * the provided-buffer ring); anything missing ends the program with one line naming it. */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <fcntl.h>
#include <liburing.h>
#include <limits.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

enum mode { MODE_RECV_SEND, MODE_SPLICE, MODE_SEND_ZC };
static const char *const mode_names[] = {"recv-send", "splice", "send-zc"};

/* The kind of a submission, kept in the low 3 bits of its user_data (the rest is a pointer to an
 * 8-byte aligned struct conn, or a struct buf for sends). */
enum op {
	OP_ACCEPT,
	OP_SIGNAL,
	OP_RECV,
	OP_SEND,
	OP_POLL_IN,
	OP_POLL_OUT,
	OP_SPLICE_IN,
	OP_SPLICE_OUT
};
#define OP_MASK 7u
#define BGID 0 /* the one provided-buffer group */

/* One provided buffer while user space holds it: queued on a connection, or being sent. */
struct buf {
	struct conn *conn;
	struct buf *next;  /* next buffer queued on the same connection */
	uint32_t off, len; /* bytes [off, len) still to be sent */
	uint32_t notifs;   /* send-zc: notifications still due */
	bool sent;	   /* every byte went out */
} __attribute__((aligned(8)));

struct conn {
	int fd;
	int pipe[2];		 /* splice mode: read end, write end */
	size_t cap, inpipe;	 /* splice mode: pipe capacity and bytes in it */
	struct buf *head, *tail; /* recv modes: buffers to send back, in order */
	unsigned inflight;	 /* submissions whose final CQE has not arrived */
	bool recv_armed;	 /* recv modes: the multishot receive is active; splice: an in op */
	bool send_busy;		 /* a send (or poll/splice out) is in flight */
	bool wait_bufs;		 /* recv modes: the receive ended for lack of buffers */
	bool eof;		 /* client half-closed */
	bool failed;		/* an error ended the connection; close once nothing is in flight */
	struct conn *next_wait; /* list of connections waiting for buffers */
} __attribute__((aligned(8)));

static struct net_stats st;
static struct net_opts opts = {.listen = "127.0.0.1:0"};
static enum mode mode = MODE_RECV_SEND;
/* Defaults measured on loopback (2 vCPU, kernel 6.18; 256 MiB stream, 100 connections x 10 MiB
 * bursts, 64 B ping-pong; two rounds, spread about 15 %): 4 KiB buffers reached a third of the
 * goodput of 16 KiB, 64 KiB was best for the bursts (~1.9 GiB/s vs ~1.3) and no worse for the
 * stream; 64, 256 or 1,024 buffers and a queue depth of 64 to 1,024 made no difference beyond the
 * spread, so 256 buffers (16 MiB) and depth 256. Splice: a 1 MiB pipe beat 64 KiB (stream ~1.24
 * vs ~0.98 GiB/s), the size sb-echo-splice uses too. */
static unsigned queue_depth = 256;
static unsigned nbufs = 256;
static size_t buf_size; /* --buffer-size; 0 until set: the mode's default (main) */
static bool buf_size_set;

static struct io_uring ring;
static struct io_uring_buf_ring *br; /* the provided-buffer ring */
static uint8_t *buf_mem;	     /* nbufs * buf_size bytes */
static struct buf *bufs;	     /* per-buffer state, indexed by buffer id */
static unsigned bufs_held;	     /* buffers user space holds (not in the ring) */
static struct conn *waiting;	     /* connections waiting for buffers */
static int lfd, sfd;
static bool accept_armed, accept_paused, stopping;
static uint64_t pipes_default;
static char features[256]; /* the summary's "features" list, JSON array items */

/* Return an SQE, submitting what is queued when the submission queue is full; exits on error. */
static struct io_uring_sqe *get_sqe(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
	if (!sqe) {
		int r = io_uring_submit(&ring);
		if (r < 0)
			net_die("io_uring_submit: %s", strerror(-r));
		sqe = io_uring_get_sqe(&ring);
		if (!sqe)
			net_die("no submission queue entry after a submit");
	}
	return sqe;
}

/* Tag sqe with pointer p and operation op. */
static void set_data(struct io_uring_sqe *sqe, void *p, enum op op)
{
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)p | op);
}

/* Submit a multishot accept on the listening socket (accepted sockets non-blocking, cloexec). */
static void arm_accept(void)
{
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_multishot_accept(sqe, lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	set_data(sqe, NULL, OP_ACCEPT);
	accept_armed = true;
}

/* Submit a poll for readability of the signalfd. */
static void arm_signal(void)
{
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_poll_add(sqe, sfd, POLLIN);
	set_data(sqe, NULL, OP_SIGNAL);
}

/* Give buffer id bid back to the provided-buffer ring. */
static void buf_return(unsigned bid)
{
	io_uring_buf_ring_add(br, buf_mem + (size_t)bid * buf_size, (unsigned)buf_size,
			      (unsigned short)bid, io_uring_buf_ring_mask(nbufs), 0);
	io_uring_buf_ring_advance(br, 1);
	bufs_held--;
}

/* Submit the multishot receive of c (buffers from the ring). */
static void arm_recv(struct conn *c)
{
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = BGID;
	set_data(sqe, c, OP_RECV);
	c->recv_armed = true;
	c->inflight++;
}

/* Submit a send of the rest of c's first queued buffer (send-zc mode: a zero-copy send). */
static void start_send(struct conn *c)
{
	struct buf *b = c->head;
	struct io_uring_sqe *sqe = get_sqe();
	uint8_t *p = buf_mem + (size_t)(b - bufs) * buf_size + b->off;
	if (mode == MODE_SEND_ZC)
		io_uring_prep_send_zc(sqe, c->fd, p, b->len - b->off, MSG_NOSIGNAL, 0);
	else
		io_uring_prep_send(sqe, c->fd, p, b->len - b->off, MSG_NOSIGNAL);
	set_data(sqe, b, OP_SEND);
	c->send_busy = true;
	c->inflight++;
}

/* Submit a poll of c's socket for events ev (POLLIN or POLLOUT), tagged op. */
static void arm_poll(struct conn *c, unsigned ev, enum op op)
{
	struct io_uring_sqe *sqe = get_sqe();
	io_uring_prep_poll_add(sqe, c->fd, ev);
	set_data(sqe, c, op);
	c->inflight++;
}

/* Submit a non-blocking splice: socket -> pipe (in) or pipe -> socket (out). */
static void start_splice(struct conn *c, bool in)
{
	struct io_uring_sqe *sqe = get_sqe();
	unsigned flags = SPLICE_F_NONBLOCK | SPLICE_F_MOVE;
	if (in)
		io_uring_prep_splice(sqe, c->fd, -1, c->pipe[1], -1, (unsigned)(c->cap - c->inpipe),
				     flags);
	else
		io_uring_prep_splice(sqe, c->pipe[0], -1, c->fd, -1, (unsigned)c->inpipe, flags);
	set_data(sqe, c, in ? OP_SPLICE_IN : OP_SPLICE_OUT);
	c->inflight++;
}

static void wake_waiting(void);

/* Close c once nothing of it is in flight and it is done (echoed everything after the FIN) or
 * failed; otherwise do nothing. Buffers it still holds go back to the ring. */
static void conn_maybe_close(struct conn *c)
{
	if (c->inflight)
		return;
	bool done = c->eof && !c->head && c->inpipe == 0;
	if (!done && !c->failed)
		return;
	while (c->head) {
		struct buf *b = c->head;
		c->head = b->next;
		b->conn = NULL;
		if (b->notifs == 0)
			buf_return((unsigned)(b - bufs));
		else
			b->sent = true; /* the notification returns it */
	}
	close(c->fd);
	if (mode == MODE_SPLICE) {
		close(c->pipe[0]);
		close(c->pipe[1]);
	}
	st.active--;
	if (c->failed)
		st.errors++;
	free(c);
	if (accept_paused && !stopping) {
		accept_paused = false; /* a descriptor is free again */
		arm_accept();
	}
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
	while (waiting && bufs_held < nbufs) {
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
	if (mode == MODE_SPLICE) {
		c->cap = net_pipe(c->pipe, buf_size, &pipes_default);
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
	if (mode == MODE_SPLICE) {
		c->recv_armed = true;
		arm_poll(c, POLLIN, OP_POLL_IN);
	} else {
		arm_recv(c);
	}
}

/* A completion of the multishot accept. */
static void on_accept(struct io_uring_cqe *cqe)
{
	if (!(cqe->flags & IORING_CQE_F_MORE))
		accept_armed = false;
	if (cqe->res >= 0) {
		on_accepted(cqe->res);
	} else if (cqe->res == -EMFILE || cqe->res == -ENFILE || cqe->res == -ENOMEM ||
		   cqe->res == -ENOBUFS) {
		static bool warned;
		if (!warned)
			net_warn("accept: %s (waiting for a connection to close)",
				 strerror(-cqe->res));
		warned = true;
		if (st.active > 0 && !accept_armed) {
			accept_paused = true;
			return;
		}
	} else if (cqe->res == -EINVAL) {
		net_die("io_uring: multishot accept is not supported by this kernel");
	} else if (cqe->res != -ECONNABORTED && cqe->res != -EINTR && cqe->res != -EAGAIN) {
		net_die("accept: %s", strerror(-cqe->res));
	}
	if (!accept_armed && !accept_paused)
		arm_accept();
}

/* A completion of c's multishot receive. */
static void on_recv(struct conn *c, struct io_uring_cqe *cqe)
{
	bool more = cqe->flags & IORING_CQE_F_MORE;
	if (cqe->res > 0) {
		if (!(cqe->flags & IORING_CQE_F_BUFFER))
			net_die("io_uring: a receive completed without a provided buffer");
		unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
		struct buf *b = &bufs[bid];
		bufs_held++;
		*b = (struct buf){.conn = c, .len = (uint32_t)cqe->res};
		st.bytes_in += (uint64_t)cqe->res;
		if (c->tail)
			c->tail->next = b;
		else
			c->head = b;
		c->tail = b;
		if (!c->send_busy && !c->failed)
			start_send(c);
	} else if (cqe->res == 0) {
		c->eof = true;
	} else if (cqe->res == -ENOBUFS) {
		if (!more && !c->failed && !c->eof) {
			if (bufs_held < nbufs) {
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

/* Release buffer b after its last send (and, send-zc, its last notification). */
static void buf_done(struct buf *b)
{
	unsigned bid = (unsigned)(b - bufs);
	buf_return(bid);
	wake_waiting();
}

/* A completion of a send (or a send-zc notification) of buffer b. */
static void on_send(struct buf *b, struct io_uring_cqe *cqe)
{
	if (cqe->flags & IORING_CQE_F_NOTIF) {
		if (--b->notifs == 0 && b->sent)
			buf_done(b);
		return;
	}
	struct conn *c = b->conn;
	if (cqe->flags & IORING_CQE_F_MORE)
		b->notifs++; /* a notification follows */
	c->send_busy = false;
	c->inflight--;
	if (cqe->res > 0) {
		b->off += (uint32_t)cqe->res;
		st.bytes_out += (uint64_t)cqe->res;
	} else if (cqe->res != -EINTR && cqe->res != -EAGAIN) {
		conn_fail(c);
	}
	if (b->off == b->len) {
		c->head = b->next;
		if (!c->head)
			c->tail = NULL;
		b->sent = true;
		b->conn = NULL;
		if (b->notifs == 0)
			buf_done(b);
	}
	if (c->head && !c->failed)
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

/* Dispatch one completion. Returns false once a signal asked the server to stop. */
static bool on_cqe(struct io_uring_cqe *cqe)
{
	uint64_t d = io_uring_cqe_get_data64(cqe);
	enum op op = (enum op)(d & OP_MASK);
	void *p = (void *)(uintptr_t)(d & ~(uint64_t)OP_MASK);
	switch (op) {
	case OP_ACCEPT:
		on_accept(cqe);
		return true;
	case OP_SIGNAL: {
		struct signalfd_siginfo si;
		if (read(sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
			return false;
		arm_signal();
		return true;
	}
	case OP_RECV:
		on_recv(p, cqe);
		return true;
	case OP_SEND:
		on_send(p, cqe);
		return true;
	default:
		on_splice_op(p, op, cqe->res);
		return true;
	}
}

/* Append feature name to the summary's "features" list. */
static void feature(const char *name)
{
	size_t n = strlen(features);
	snprintf(features + n, sizeof(features) - n, "%s\"%s\"", n ? "," : "", name);
}

/* Set up the ring and probe the kernel for everything the mode needs; on anything missing exit 1
 * with one line naming it. Never switches to another technique. */
static void setup_ring(void)
{
	int disabled = 0;
	FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
	if (f) {
		if (fscanf(f, "%d", &disabled) != 1)
			disabled = 0;
		fclose(f);
	}
	if (disabled == 2)
		net_die("io_uring is disabled on this host (kernel.io_uring_disabled = 2)");
	int r = io_uring_queue_init(queue_depth, &ring, 0);
	if (r < 0) {
		if (disabled == 1 && r == -EPERM)
			net_die(
			    "io_uring is not allowed for this user (kernel.io_uring_disabled = 1)");
		net_die("io_uring_queue_init (queue depth %u): %s", queue_depth, strerror(-r));
	}
	struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
	if (!probe)
		net_die("io_uring: the kernel cannot report its opcodes (IORING_REGISTER_PROBE)");
	static const struct {
		int op;
		const char *name;
		int modes; /* bit per mode that needs it */
	} need[] = {
	    {IORING_OP_ACCEPT, "IORING_OP_ACCEPT", 7},
	    {IORING_OP_POLL_ADD, "IORING_OP_POLL_ADD", 7},
	    {IORING_OP_RECV, "IORING_OP_RECV", 1 | 4},
	    {IORING_OP_SEND, "IORING_OP_SEND", 1},
	    {IORING_OP_SEND_ZC, "IORING_OP_SEND_ZC", 4},
	    {IORING_OP_SPLICE, "IORING_OP_SPLICE", 2},
	};
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++)
		if ((need[i].modes & (1 << mode)) && !io_uring_opcode_supported(probe, need[i].op))
			net_die("io_uring: this kernel lacks %s (needed by --mode %s)",
				need[i].name, mode_names[mode]);
	/* Multishot accept and receive arrived with Linux 5.19 and 6.0; neither has an opcode of
	 * its own to probe. IORING_OP_SEND_ZC arrived in 6.0, after both: its presence vouches for
	 * them (the kernel would otherwise fail the first accept or receive with EINVAL). */
	if (!io_uring_opcode_supported(probe, IORING_OP_SEND_ZC))
		net_die(
		    "io_uring: this kernel lacks multishot accept/receive (Linux 6.0, probed by "
		    "IORING_OP_SEND_ZC)");
	io_uring_free_probe(probe);
	feature("multishot-accept");
	feature("poll");

	if (mode == MODE_SPLICE) {
		feature("splice");
		return;
	}
	size_t ring_bytes = nbufs * sizeof(struct io_uring_buf);
	br = mmap(NULL, ring_bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
	if (br == MAP_FAILED)
		net_die("mmap of the buffer ring: %s", strerror(errno));
	struct io_uring_buf_reg reg = {
	    .ring_addr = (uint64_t)(uintptr_t)br, .ring_entries = nbufs, .bgid = BGID};
	r = io_uring_register_buf_ring(&ring, &reg, 0);
	if (r < 0)
		net_die("io_uring: this kernel lacks provided-buffer rings "
			"(IORING_REGISTER_PBUF_RING: %s)",
			strerror(-r));
	buf_mem = malloc(nbufs * buf_size);
	bufs = calloc(nbufs, sizeof(*bufs));
	if (!buf_mem || !bufs)
		net_die("out of memory for %u buffers of %zu bytes", nbufs, buf_size);
	io_uring_buf_ring_init(br);
	bufs_held = nbufs;
	for (unsigned i = 0; i < nbufs; i++)
		buf_return(i);
	feature("buffer-ring");
	feature("multishot-recv");
	feature(mode == MODE_SEND_ZC ? "send-zc" : "send");
}

/* Print the command line and its options to f (--help, usage errors' hint). */
static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sb-echo-uring [--listen ADDR:PORT] [--mode recv-send|splice|send-zc] "
	    "[--queue-depth N] [--buffers N] [--buffer-size BYTES] [--sndbuf BYTES] "
	    "[--rcvbuf BYTES]\n"
	    "  --listen ADDR:PORT   default 127.0.0.1:0 (port 0 = kernel picks; IPv6 as [::1]:0)\n"
	    "  --mode M             recv-send (default): multishot receive into provided buffers,\n"
	    "                       send on completion; send-zc: the same with zero-copy sends;\n"
	    "                       splice: socket -> pipe -> socket with IORING_OP_SPLICE\n"
	    "  --queue-depth N      submission queue entries (default 256; the kernel rounds up "
	    "to\n"
	    "                       a power of two)\n"
	    "  --buffers N          provided buffers (default 256, rounded up to a power of two;\n"
	    "                       recv-send and send-zc)\n"
	    "  --buffer-size BYTES  size of each buffer (default 65536); splice: the pipe size\n"
	    "                       (default 1048576, capped to fs.pipe-max-size)\n"
	    "  --sndbuf BYTES       SO_SNDBUF on accepted sockets (0 = kernel default)\n"
	    "  --rcvbuf BYTES       SO_RCVBUF on accepted sockets (0 = kernel default)\n"
	    "Prints a ready line, then a summary line on SIGTERM/SIGINT (JSON, "
	    "docs/programs.md).\n");
}

/* --mode, --queue-depth, --buffers, --buffer-size; the common options are net_parse_opts's. */
static void own_opt(int val, const char *arg)
{
	switch (val) {
	case 'm':
		for (int i = 0; i < 3; i++)
			if (strcmp(arg, mode_names[i]) == 0) {
				mode = (enum mode)i;
				return;
			}
		net_usage_error("--mode: expected recv-send, splice or send-zc, got '%s'", arg);
	case 'q':
		queue_depth = (unsigned)net_parse_u64("--queue-depth", arg, 32768);
		return;
	case 'n':
		nbufs = (unsigned)net_parse_u64("--buffers", arg, 32768);
		return;
	default:
		buf_size = net_parse_u64("--buffer-size", arg, 1u << 30);
		buf_size_set = true;
	}
}

/* The smallest power of two >= n (n at most 2^15). */
static unsigned pow2_up(unsigned n)
{
	unsigned p = 1;
	while (p < n)
		p <<= 1;
	return p;
}

/* Parse the options, probe and set up the ring, listen, print the ready line, then run the
 * completion loop until SIGTERM/SIGINT and print the summary line. Exit 0; 1 on a runtime failure
 * (one line on stderr), 2 on bad arguments. */
int main(int argc, char **argv)
{
	static const struct option own[] = {{"mode", required_argument, 0, 'm'},
					    {"queue-depth", required_argument, 0, 'q'},
					    {"buffers", required_argument, 0, 'n'},
					    {"buffer-size", required_argument, 0, 'b'},
					    {0, 0, 0, 0}};
	net_prog = "sb-echo-uring";
	net_parse_opts(argc, argv, own, own_opt, usage, INT_MAX, &opts);
	if (queue_depth == 0)
		net_usage_error("--queue-depth must be at least 1");
	if (nbufs == 0)
		net_usage_error("--buffers must be at least 1");
	nbufs = pow2_up(nbufs); /* a buffer ring's size is a power of two */
	if (buf_size_set && buf_size == 0)
		net_usage_error("--buffer-size must be at least 1");
	if (!buf_size_set)
		buf_size = mode == MODE_SPLICE ? 1048576 : 65536;
	if (mode == MODE_SPLICE)
		buf_size = net_pipe_size(buf_size); /* capped to fs.pipe-max-size */

	sfd = net_signalfd();
	net_raise_nofile();
	setup_ring();
	lfd = net_listen(opts.listen);
	arm_accept();
	arm_signal();
	net_print_ready("uring", lfd);

	bool running = true;
	while (running) {
		int r = io_uring_submit_and_wait(&ring, 1);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY)
			net_die("io_uring_submit_and_wait: %s", strerror(-r));
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&ring, head, cqe)
		{
			seen++;
			if (!on_cqe(cqe)) {
				running = false;
				break;
			}
		}
		io_uring_cq_advance(&ring, seen);
	}
	stopping = true;
	net_pipe_report(pipes_default);
	char extra[384];
	snprintf(extra, sizeof(extra), ",\"mode\":\"%s\",\"features\":[%s]", mode_names[mode],
		 features);
	net_print_summary_extra("uring", &st, extra);
	return 0;
}
