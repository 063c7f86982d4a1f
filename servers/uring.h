/* SPDX-License-Identifier: MIT */
/* Shared by the io_uring programs (servers/echo_uring.c, servers/proxy_uring.c), implemented in
 * servers/uring.c with liburing: the options both take (--mode, --queue-depth, --buffers,
 * --buffer-size), the ring and its probe of the kernel, the ring of provided buffers, the
 * multishot accept, the signalfd poll and the completion loop. One ring per process, held in `ur`.
 *
 * A submission's user_data is a pointer to a 16-byte aligned struct (or NULL) with the kind of
 * operation, a program's own enum, in its low 4 bits (uring_set_data, uring_data_op). */
#ifndef SPLICEBENCH_URING_H
#define SPLICEBENCH_URING_H

#include "net.h"

#include <getopt.h>
#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum uring_mode { URING_RECV_SEND, URING_SPLICE, URING_SEND_ZC };

#define URING_OP_MASK 15u
/* Operation kinds every io_uring program has; a program's own kinds start at URING_OP_OWN. */
enum { URING_OP_ACCEPT, URING_OP_SIGNAL, URING_OP_OWN };

/* One provided buffer while user space holds it: queued on a connection, or being sent. */
struct uring_buf {
	void *owner;		  /* the connection (or direction) that queued it; NULL once sent */
	struct uring_buf *next;	  /* next buffer queued on the same owner */
	uint32_t off, len;	  /* bytes [off, len) still to be sent */
	uint32_t notifs;	  /* send-zc: notifications still due */
	bool sent;		  /* every byte went out */
} __attribute__((aligned(16)));

/* The options the io_uring programs share; defaults in uring.c (measured, see there). */
struct uring_cfg {
	enum uring_mode mode;
	unsigned queue_depth;
	unsigned nbufs;	 /* rounded up to a power of two by uring_check_opts */
	size_t buf_size; /* splice: the pipe size */
	bool buf_size_set;
};

/* The process's ring and what hangs off it. */
struct uring_ctx {
	struct uring_cfg cfg;
	struct io_uring ring;
	/* Provided-buffer rings (recv-send, send-zc), one per buffer group: the echo server has one,
	 * the proxy one per direction, so that bytes queued for one direction can never take the
	 * buffers the other direction needs to drain them (client -> upstream buffers wait for the
	 * upstream, which waits for its answer to be read into the other group). */
	unsigned groups;
	struct io_uring_buf_ring *br[2];
	uint8_t *mem;		/* groups * nbufs * buf_size bytes */
	struct uring_buf *bufs; /* per-buffer state: group g's buffer id i at g * nbufs + i */
	unsigned held[2];	/* buffers of each group user space holds (not in its ring) */
	int lfd, sfd;		      /* listening socket, signalfd */
	bool accept_armed, accept_paused, stopping;
	uint64_t pipes_default; /* splice: pipes that kept the default size */
	char features[256];	/* the summary's "features" list, JSON array items */
	void (*released)(void); /* the program's: called after a sent buffer went back to its ring */
};

extern struct uring_ctx ur;
extern const char *const uring_mode_names[3];

/* getopt_long entries of the shared options (vals 'm', 'q', 'n', 'b'), and their --help lines. */
#define URING_LONG_OPTIONS                                                                         \
	{"mode", required_argument, 0, 'm'}, {"queue-depth", required_argument, 0, 'q'},           \
	    {"buffers", required_argument, 0, 'n'}, {"buffer-size", required_argument, 0, 'b'},     \
	    {"probe", no_argument, 0, 'P'}
#define URING_USAGE                                                                                \
	"  --mode M             recv-send (default): multishot receive into provided buffers,\n"  \
	"                       send on completion; send-zc: the same with zero-copy sends;\n"     \
	"                       splice: socket -> pipe -> socket with IORING_OP_SPLICE\n"         \
	"  --queue-depth N      submission queue entries (default 256; the kernel rounds up to\n"  \
	"                       a power of two)\n"                                                 \
	"  --buffers N          provided buffers (default 256, rounded up to a power of two;\n"    \
	"                       recv-send and send-zc)\n"                                          \
	"  --buffer-size BYTES  size of each buffer (default 65536); splice: the pipe size\n"      \
	"                       (default 1048576, capped to fs.pipe-max-size)\n"                   \
	"  --probe              print what the kernel offers (JSON: io_uring_disabled, the\n"     \
	"                       opcodes present and missing) and exit\n"

/* Handle shared option val ('m', 'q', 'n', 'b', or 'P': --probe, which prints its JSON line and
 * exits) with argument arg; returns false for any other val. Exits with a usage error on a bad
 * value. */
bool uring_opt(int val, const char *arg);

/* After parsing: check the shared options, fill in the mode's defaults, round --buffers up to a
 * power of two and cap a pipe size to fs.pipe-max-size. Exits with a usage error. */
void uring_check_opts(void);

/* Set up the ring, probe the kernel for everything the mode needs (proxy: also
 * IORING_OP_ASYNC_CANCEL) and, for the receive modes, register the provided-buffer rings (one
 * group; the proxy two, group s for the receives of leg s); on
 * anything missing exit 1 with one line naming it. Never switches to another technique. Also
 * opens the signalfd and raises RLIMIT_NOFILE. */
void uring_setup(bool proxy);

/* Listen on addr, arm the multishot accept and the signal poll, print the ready line. */
void uring_listen(const char *addr, const char *server);

/* Return an SQE, submitting what is queued when the submission queue is full; exits on error. */
struct io_uring_sqe *uring_get_sqe(void);

/* Tag sqe with pointer p (16-byte aligned or NULL) and operation kind op. */
void uring_set_data(struct io_uring_sqe *sqe, void *p, unsigned op);

/* The pointer and operation kind a completion was tagged with. */
void *uring_data_ptr(const struct io_uring_cqe *cqe);
unsigned uring_data_op(const struct io_uring_cqe *cqe);

/* Prepare sqe as a multishot receive on fd into buffers of group g; tagged p and op. */
void uring_prep_recv(struct io_uring_sqe *sqe, int fd, unsigned g, void *p, unsigned op);

/* Buffers received on one socket and not yet sent on, in order. */
struct uring_queue {
	struct uring_buf *head, *tail;
};

/* The buffer of group g a receive completion filled (exits if it carries none; counted as held),
 * owned by owner and queued at the end of q; returned. */
struct uring_buf *uring_queue_recv(struct uring_queue *q, const struct io_uring_cqe *cqe, unsigned g,
				   void *owner);

/* The first buffer of q went out whole: off q, and uring_buf_sent. */
void uring_queue_sent(struct uring_queue *q);

/* Closing: every buffer still on q goes back to its ring now, or at its last send-zc notification
 * (ur.released is not called: the closing program wakes its waiters once). */
void uring_queue_drop(struct uring_queue *q);

/* Prepare sqe as a send of the rest of b on fd (send-zc mode: zero-copy), tagged b and op. */
void uring_prep_send(struct io_uring_sqe *sqe, int fd, struct uring_buf *b, unsigned op);

/* A send completion of buffer b (send-zc: a buffer goes back to its ring only after the last
 * notification of its sends). True when cqe is a notification, then wholly handled here; false for
 * the send itself, after counting the notification that follows it (IORING_CQE_F_MORE). */
bool uring_send_cqe(struct uring_buf *b, const struct io_uring_cqe *cqe);

/* Every byte of b went out: back to its ring now, or at its last notification (uring_send_cqe). */
void uring_buf_sent(struct uring_buf *b);

/* Whether group g's ring holds a buffer (a receive that ended with ENOBUFS may be re-armed). */
bool uring_bufs_free(unsigned g);

/* A completion of the multishot accept: new sockets (non-blocking) go to on_fd; on running out of
 * descriptors accepting pauses while `active` connections are open (uring_accept_resume). */
void uring_on_accept(const struct io_uring_cqe *cqe, uint64_t active, void (*on_fd)(int fd));

/* A connection closed: re-arm a paused accept. */
void uring_accept_resume(void);

/* Run the completion loop: each CQE but the signal's goes to on_cqe; returns once SIGTERM or
 * SIGINT arrived (ur.stopping set). */
void uring_run(void (*on_cqe)(const struct io_uring_cqe *cqe));

/* The summary's extra fields: ,"mode":"...","features":[...] followed by more (may be ""). */
void uring_summary_extra(char *out, size_t n, const char *more);

#endif
