// SPDX-License-Identifier: MIT
/* The ring, probe, provided buffers, accept and completion loop shared by the io_uring programs;
 * contracts in uring.h. */
#define _GNU_SOURCE
#include "uring.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

/* Defaults measured on loopback with sb-echo-uring (2 vCPU, kernel 6.18; 256 MiB stream, 100
 * connections x 10 MiB bursts, 64 B ping-pong; two rounds, spread about 15 %): 4 KiB buffers
 * reached a third of the goodput of 16 KiB, 64 KiB was best for the bursts (~1.9 GiB/s vs ~1.3)
 * and no worse for the stream; 64, 256 or 1,024 buffers and a queue depth of 64 to 1,024 made no
 * difference beyond the spread, so 256 buffers (16 MiB) and depth 256. Splice: a 1 MiB pipe beat
 * 64 KiB (stream ~1.24 vs ~0.98 GiB/s), the size sb-echo-splice uses too. The same sweep through
 * sb-proxy-uring (100 MiB stream; 50 connections x 10 x 1 MiB bursts; 3 rounds on a loaded host)
 * kept them: 16 KiB and 256 KiB buffers, 32 or 1,024 buffers and depth 32 were within the spread
 * of the defaults (16 KiB lost a third on the bursts); a 1 MiB pipe beat 64 KiB by ~1.3-1.5x. */
struct uring_ctx ur = {.cfg = {.mode = URING_RECV_SEND, .queue_depth = 256, .nbufs = 256},
		       .lfd = -1,
		       .sfd = -1};
const char *const uring_mode_names[3] = {"recv-send", "splice", "send-zc"};

static void __attribute__((noreturn)) probe_and_exit(void);

bool uring_opt(int val, const char *arg)
{
	switch (val) {
	case 'm':
		for (int i = 0; i < 3; i++)
			if (strcmp(arg, uring_mode_names[i]) == 0) {
				ur.cfg.mode = (enum uring_mode)i;
				return true;
			}
		net_usage_error("--mode: expected recv-send, splice or send-zc, got '%s'", arg);
	case 'q':
		ur.cfg.queue_depth = (unsigned)net_parse_u64("--queue-depth", arg, 32768);
		return true;
	case 'n':
		ur.cfg.nbufs = (unsigned)net_parse_u64("--buffers", arg, 32768);
		return true;
	case 'b':
		ur.cfg.buf_size = net_parse_u64("--buffer-size", arg, 1u << 30);
		ur.cfg.buf_size_set = true;
		return true;
	case 'P':
		probe_and_exit();
	default:
		return false;
	}
}

void uring_check_opts(void)
{
	struct uring_cfg *c = &ur.cfg;
	if (c->queue_depth == 0)
		net_usage_error("--queue-depth must be at least 1");
	if (c->nbufs == 0)
		net_usage_error("--buffers must be at least 1");
	unsigned p = 1; /* a buffer ring's size is a power of two (nbufs is at most 2^15) */
	while (p < c->nbufs)
		p <<= 1;
	c->nbufs = p;
	if (c->buf_size_set && c->buf_size == 0)
		net_usage_error("--buffer-size must be at least 1");
	if (!c->buf_size_set)
		c->buf_size = c->mode == URING_SPLICE ? 1048576 : 65536;
	if (c->mode == URING_SPLICE)
		c->buf_size = net_pipe_size(c->buf_size); /* capped to fs.pipe-max-size */
}

/* Append feature name to the summary's "features" list. */
static void feature(const char *name)
{
	size_t n = strlen(ur.features);
	snprintf(ur.features + n, sizeof(ur.features) - n, "%s\"%s\"", n ? "," : "", name);
}

/* kernel.io_uring_disabled (0 when the kernel has no such setting, before Linux 6.6). */
static int io_uring_disabled(void)
{
	int disabled = 0;
	FILE *f = fopen("/proc/sys/kernel/io_uring_disabled", "r");
	if (f) {
		if (fscanf(f, "%d", &disabled) != 1)
			disabled = 0;
		fclose(f);
	}
	return disabled;
}

/* The opcodes the io_uring programs use, by name. */
static const struct {
	int op;
	const char *name;
} opcodes[] = {
    {IORING_OP_ACCEPT, "ACCEPT"}, {IORING_OP_POLL_ADD, "POLL_ADD"},
    {IORING_OP_RECV, "RECV"},	  {IORING_OP_SEND, "SEND"},
    {IORING_OP_SEND_ZC, "SEND_ZC"}, {IORING_OP_SPLICE, "SPLICE"},
    {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
};

/* --probe: print one JSON line saying whether io_uring may be used and which of the opcodes the
 * programs use the kernel has, then exit 0 (exit 1 only when nothing could be printed). */
static void __attribute__((noreturn)) probe_and_exit(void)
{
	int disabled = io_uring_disabled();
	struct io_uring ring;
	int r = io_uring_queue_init(8, &ring, 0);
	printf("{\"event\":\"probe\",\"io_uring_disabled\":%d", disabled);
	if (r < 0) {
		printf(",\"setup_error\":\"%s\"}\n", strerror(-r));
		exit(fflush(stdout) == 0 ? 0 : 1);
	}
	struct io_uring_probe *probe = io_uring_get_probe_ring(&ring);
	const char *sep = "";
	printf(",\"present\":[");
	for (size_t i = 0; probe && i < sizeof(opcodes) / sizeof(opcodes[0]); i++)
		if (io_uring_opcode_supported(probe, opcodes[i].op)) {
			printf("%s\"%s\"", sep, opcodes[i].name);
			sep = ",";
		}
	sep = "";
	printf("],\"missing\":[");
	for (size_t i = 0; i < sizeof(opcodes) / sizeof(opcodes[0]); i++)
		if (!probe || !io_uring_opcode_supported(probe, opcodes[i].op)) {
			printf("%s\"%s\"", sep, opcodes[i].name);
			sep = ",";
		}
	printf("]}\n");
	exit(fflush(stdout) == 0 ? 0 : 1);
}

/* Exit with one line unless the kernel has every opcode the mode (and a proxy) needs. */
static void probe_opcodes(bool proxy)
{
	struct io_uring_probe *probe = io_uring_get_probe_ring(&ur.ring);
	if (!probe)
		net_die("io_uring: the kernel cannot report its opcodes (IORING_REGISTER_PROBE)");
	enum { ALL = 7, PROXY = 8 };
	static const struct {
		int op;
		const char *name;
		int need; /* bit per mode that needs it; PROXY: only the proxy */
	} need[] = {
	    {IORING_OP_ACCEPT, "IORING_OP_ACCEPT", ALL},
	    {IORING_OP_POLL_ADD, "IORING_OP_POLL_ADD", ALL},
	    {IORING_OP_RECV, "IORING_OP_RECV", 1 | 4},
	    {IORING_OP_SEND, "IORING_OP_SEND", 1},
	    {IORING_OP_SEND_ZC, "IORING_OP_SEND_ZC", 4},
	    {IORING_OP_SPLICE, "IORING_OP_SPLICE", 2},
	    {IORING_OP_ASYNC_CANCEL, "IORING_OP_ASYNC_CANCEL", ALL | PROXY},
	};
	for (size_t i = 0; i < sizeof(need) / sizeof(need[0]); i++) {
		bool needed = (need[i].need & (1 << ur.cfg.mode)) && (proxy || !(need[i].need & PROXY));
		if (needed && !io_uring_opcode_supported(probe, need[i].op))
			net_die("io_uring: this kernel lacks %s (needed by --mode %s)", need[i].name,
				uring_mode_names[ur.cfg.mode]);
	}
	/* Multishot accept and receive arrived with Linux 5.19 and 6.0; neither has an opcode of
	 * its own to probe. IORING_OP_SEND_ZC arrived in 6.0, after both: its presence vouches for
	 * them (the kernel would otherwise fail the first accept or receive with EINVAL). */
	if (!io_uring_opcode_supported(probe, IORING_OP_SEND_ZC))
		net_die(
		    "io_uring: this kernel lacks multishot accept/receive (Linux 6.0, probed by "
		    "IORING_OP_SEND_ZC)");
	io_uring_free_probe(probe);
}

/* Give buffer b back to its group's ring. */
static void buf_return(struct uring_buf *b)
{
	unsigned i = (unsigned)(b - ur.bufs), g = i / ur.cfg.nbufs, bid = i % ur.cfg.nbufs;
	io_uring_buf_ring_add(ur.br[g], ur.mem + (size_t)i * ur.cfg.buf_size,
			      (unsigned)ur.cfg.buf_size, (unsigned short)bid,
			      io_uring_buf_ring_mask(ur.cfg.nbufs), 0);
	io_uring_buf_ring_advance(ur.br[g], 1);
	ur.held[g]--;
}

/* Register a provided-buffer ring per group and fill each with its buffers. */
static void setup_buffers(unsigned groups)
{
	unsigned n = ur.cfg.nbufs;
	ur.groups = groups;
	ur.mem = malloc((size_t)groups * n * ur.cfg.buf_size);
	ur.bufs = calloc((size_t)groups * n, sizeof(*ur.bufs));
	if (!ur.mem || !ur.bufs)
		net_die("out of memory for %u buffers of %zu bytes", groups * n, ur.cfg.buf_size);
	for (unsigned g = 0; g < groups; g++) {
		/* liburing 2.3 (Debian 12) has no io_uring_setup_buf_ring: map and register. */
		ur.br[g] = mmap(NULL, n * sizeof(struct io_uring_buf), PROT_READ | PROT_WRITE,
				MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
		if (ur.br[g] == MAP_FAILED)
			net_die("mmap of a buffer ring: %s", strerror(errno));
		struct io_uring_buf_reg reg = {
		    .ring_addr = (uint64_t)(uintptr_t)ur.br[g], .ring_entries = n, .bgid = (uint16_t)g};
		int r = io_uring_register_buf_ring(&ur.ring, &reg, 0);
		if (r < 0)
			net_die("io_uring: this kernel lacks provided-buffer rings "
				"(IORING_REGISTER_PBUF_RING: %s)",
				strerror(-r));
		io_uring_buf_ring_init(ur.br[g]);
		ur.held[g] = n;
		for (unsigned i = 0; i < n; i++)
			buf_return(&ur.bufs[g * n + i]);
	}
}

void uring_setup(bool proxy)
{
	ur.sfd = net_signalfd();
	net_raise_nofile();
	int disabled = io_uring_disabled();
	if (disabled == 2)
		net_die("io_uring is disabled on this host (kernel.io_uring_disabled = 2)");
	int r = io_uring_queue_init(ur.cfg.queue_depth, &ur.ring, 0);
	if (r < 0) {
		if (disabled == 1 && r == -EPERM)
			net_die(
			    "io_uring is not allowed for this user (kernel.io_uring_disabled = 1)");
		net_die("io_uring_queue_init (queue depth %u): %s", ur.cfg.queue_depth,
			strerror(-r));
	}
	probe_opcodes(proxy);
	feature("multishot-accept");
	feature("poll");
	if (proxy)
		feature("async-cancel");
	if (ur.cfg.mode == URING_SPLICE) {
		feature("splice");
		return;
	}
	setup_buffers(proxy ? 2 : 1);
	feature("buffer-ring");
	feature("multishot-recv");
	feature(ur.cfg.mode == URING_SEND_ZC ? "send-zc" : "send");
}

struct io_uring_sqe *uring_get_sqe(void)
{
	struct io_uring_sqe *sqe = io_uring_get_sqe(&ur.ring);
	if (!sqe) {
		int r = io_uring_submit(&ur.ring);
		if (r < 0)
			net_die("io_uring_submit: %s", strerror(-r));
		sqe = io_uring_get_sqe(&ur.ring);
		if (!sqe)
			net_die("no submission queue entry after a submit");
	}
	return sqe;
}

void uring_set_data(struct io_uring_sqe *sqe, void *p, unsigned op)
{
	io_uring_sqe_set_data64(sqe, (uint64_t)(uintptr_t)p | op);
}

void *uring_data_ptr(const struct io_uring_cqe *cqe)
{
	return (void *)(uintptr_t)(cqe->user_data & ~(uint64_t)URING_OP_MASK);
}

unsigned uring_data_op(const struct io_uring_cqe *cqe)
{
	return (unsigned)(cqe->user_data & URING_OP_MASK);
}

/* The bytes of buffer b still to be sent. */
static uint8_t *buf_data(const struct uring_buf *b)
{
	return ur.mem + (size_t)(b - ur.bufs) * ur.cfg.buf_size + b->off;
}

void uring_prep_recv(struct io_uring_sqe *sqe, int fd, unsigned g, void *p, unsigned op)
{
	io_uring_prep_recv_multishot(sqe, fd, NULL, 0, 0);
	sqe->flags |= IOSQE_BUFFER_SELECT;
	sqe->buf_group = (uint16_t)g;
	uring_set_data(sqe, p, op);
}

struct uring_buf *uring_queue_recv(struct uring_queue *q, const struct io_uring_cqe *cqe, unsigned g,
				   void *owner)
{
	if (!(cqe->flags & IORING_CQE_F_BUFFER))
		net_die("io_uring: a receive completed without a provided buffer");
	unsigned bid = cqe->flags >> IORING_CQE_BUFFER_SHIFT;
	ur.held[g]++;
	struct uring_buf *b = &ur.bufs[g * ur.cfg.nbufs + bid];
	*b = (struct uring_buf){.owner = owner, .len = (uint32_t)cqe->res};
	if (q->tail)
		q->tail->next = b;
	else
		q->head = b;
	q->tail = b;
	return b;
}

void uring_prep_send(struct io_uring_sqe *sqe, int fd, struct uring_buf *b, unsigned op)
{
	uint8_t *p = buf_data(b);
	if (ur.cfg.mode == URING_SEND_ZC)
		io_uring_prep_send_zc(sqe, fd, p, b->len - b->off, MSG_NOSIGNAL, 0);
	else
		io_uring_prep_send(sqe, fd, p, b->len - b->off, MSG_NOSIGNAL);
	uring_set_data(sqe, b, op);
}

/* Back to its ring, and the program told (ur.released: it wakes what waits for a buffer). */
static void buf_release(struct uring_buf *b)
{
	buf_return(b);
	if (ur.released)
		ur.released();
}

bool uring_send_cqe(struct uring_buf *b, const struct io_uring_cqe *cqe)
{
	if (cqe->flags & IORING_CQE_F_NOTIF) {
		if (--b->notifs == 0 && b->sent)
			buf_release(b);
		return true;
	}
	if (cqe->flags & IORING_CQE_F_MORE)
		b->notifs++; /* a notification follows */
	return false;
}

void uring_buf_sent(struct uring_buf *b)
{
	b->sent = true;
	b->owner = NULL;
	if (b->notifs == 0)
		buf_release(b);
}

/* b off the front of q. */
static struct uring_buf *queue_pop(struct uring_queue *q)
{
	struct uring_buf *b = q->head;
	q->head = b->next;
	if (!q->head)
		q->tail = NULL;
	return b;
}

void uring_queue_sent(struct uring_queue *q)
{
	uring_buf_sent(queue_pop(q));
}

void uring_queue_drop(struct uring_queue *q)
{
	while (q->head) {
		struct uring_buf *b = queue_pop(q);
		b->owner = NULL;
		if (b->notifs == 0)
			buf_return(b);
		else
			b->sent = true; /* the notification returns it */
	}
}

bool uring_bufs_free(unsigned g) { return ur.held[g] < ur.cfg.nbufs; }

/* Submit a multishot accept on the listening socket (accepted sockets non-blocking, cloexec). */
static void arm_accept(void)
{
	struct io_uring_sqe *sqe = uring_get_sqe();
	io_uring_prep_multishot_accept(sqe, ur.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
	uring_set_data(sqe, NULL, URING_OP_ACCEPT);
	ur.accept_armed = true;
}

/* Submit a poll for readability of the signalfd. */
static void arm_signal(void)
{
	struct io_uring_sqe *sqe = uring_get_sqe();
	io_uring_prep_poll_add(sqe, ur.sfd, POLLIN);
	uring_set_data(sqe, NULL, URING_OP_SIGNAL);
}

void uring_listen(const char *addr, const char *server)
{
	ur.lfd = net_listen(addr);
	arm_accept();
	arm_signal();
	net_print_ready(server, ur.lfd);
}

void uring_on_accept(const struct io_uring_cqe *cqe, uint64_t active, void (*on_fd)(int fd))
{
	if (!(cqe->flags & IORING_CQE_F_MORE))
		ur.accept_armed = false;
	int res = cqe->res;
	if (res >= 0) {
		on_fd(res);
	} else if (res == -EMFILE || res == -ENFILE || res == -ENOMEM || res == -ENOBUFS) {
		static bool warned;
		if (!warned)
			net_warn("accept: %s (waiting for a connection to close)", strerror(-res));
		warned = true;
		if (active > 0 && !ur.accept_armed) {
			ur.accept_paused = true;
			return;
		}
	} else if (res == -EINVAL) {
		net_die("io_uring: multishot accept is not supported by this kernel");
	} else if (res != -ECONNABORTED && res != -EINTR && res != -EAGAIN) {
		net_die("accept: %s", strerror(-res));
	}
	if (!ur.accept_armed && !ur.accept_paused)
		arm_accept();
}

void uring_accept_resume(void)
{
	if (ur.accept_paused && !ur.stopping) {
		ur.accept_paused = false; /* a descriptor is free again */
		arm_accept();
	}
}

/* The signal poll completed: true once SIGTERM/SIGINT was read (otherwise re-armed). */
static bool on_signal(void)
{
	struct signalfd_siginfo si;
	if (read(ur.sfd, &si, sizeof(si)) == (ssize_t)sizeof(si))
		return true;
	arm_signal();
	return false;
}

void uring_run(void (*on_cqe)(const struct io_uring_cqe *cqe))
{
	while (!ur.stopping) {
		int r = io_uring_submit_and_wait(&ur.ring, 1);
		if (r < 0 && r != -EINTR && r != -EAGAIN && r != -EBUSY)
			net_die("io_uring_submit_and_wait: %s", strerror(-r));
		struct io_uring_cqe *cqe;
		unsigned head, seen = 0;
		io_uring_for_each_cqe(&ur.ring, head, cqe)
		{
			seen++;
			if (uring_data_op(cqe) != URING_OP_SIGNAL)
				on_cqe(cqe);
			else if (on_signal()) {
				ur.stopping = true;
				break;
			}
		}
		io_uring_cq_advance(&ur.ring, seen);
	}
}

void uring_summary_extra(char *out, size_t n, const char *more)
{
	snprintf(out, n, ",\"mode\":\"%s\",\"features\":[%s]%s", uring_mode_names[ur.cfg.mode],
		 ur.features, more);
}
