// SPDX-License-Identifier: MIT
/* sb-client: the verifying load client (docs/programs.md).
 *
 * --threads N threads (default 1) share the connections: thread t owns a contiguous slice of them
 * and drives it from its own epoll instance, all sockets non-blocking. Each connection writes the
 * moment its connect() completes, with no pause: that timing is what exposes servers that lose
 * data sent before they accepted the socket. Every received byte is checked against the byte that
 * was sent at that offset; a mismatch, short read, reset, stall, timeout or extra byte fails the
 * connection, the JSON says so ("ok": false) and the exit code is 1. A thread that owns a single
 * ping-pong connection may instead use blocking reads and writes (--io blocking, the default when
 * it applies: one system call less per round trip than epoll) or spin on non-blocking reads
 * (--io busy-poll). The threads' latency samples are merged before the percentiles are taken,
 * so they are exact over every sample of the run.
 *
 * crr (connect, request, response, close) runs on the epoll loops: each of a thread's --conns slots
 * starts the next transaction as soon as its last one ended, the transactions drawn from one counter
 * that all threads share. SIGINT stops the stream workload: every thread's connections stop sending
 * where they are and verify the echo of what they sent (an eventfd wakes the epoll loops).
 *
 * Payload: byte o of connection c is P[o mod 256 KiB] ^ K(c, o / 256 KiB), where P is a 256 KiB
 * pattern drawn from splitmix64(seed) and K a 64-bit splitmix64 value per (connection, 256 KiB
 * block), applied a word at a time. It is position dependent (any loss, duplication, reordering
 * between or within blocks or corruption shows), differs between connections and seeds, and is
 * generated and checked in one pass at memory speed without storing what was sent. */
#define _GNU_SOURCE
#include "net.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PAT_BYTES (256u * 1024u)
#define PAT_WORDS (PAT_BYTES / 8u)
#define RBUF_BYTES (256u * 1024u)
#define MAX_LISTED_ERRORS 100
#define THREADS_MAX 1024
#define SOURCE_ADDRS_MAX 65536
#define PROCS_MAX 256
#define SECONDS_MAX 10000000 /* --timeout, --stall */
/* The largest ping-pong message the blocking path takes: a message is written whole before its
 * echo is read, so it must fit the socket buffers on the way or both ends would wait forever. */
#define BLOCKING_MSG_MAX 32768
/* How often a blocking or busy-polling thread looks at the clock for the stall and the deadline
 * while it waits (SO_RCVTIMEO/SO_SNDTIMEO). */
#define BLOCKING_TICK_US 50000

enum workload { W_STREAM, W_PINGPONG, W_BURST, W_CRR };
static const char *const workload_names[] = {"stream", "pingpong", "burst", "crr"};
enum io_mode { IO_AUTO, IO_EPOLL, IO_BLOCKING, IO_BUSY, IO_SPLIT };
static const char *const io_names[] = {"auto", "epoll", "blocking", "busy-poll", "split"};
#define IO_MODES 5

struct opts {
	const char *connect;
	enum workload wl;
	uint64_t conns, bytes, chunk, msg_size, round_trips, burst_size, bursts, transactions, seed;
	uint64_t threads, source_addrs, procs;
	bool hold;
	double timeout_s, stall_s;
	const char *cpus_text; /* --cpus as given, NULL: not pinned */
	int cpus[THREADS_MAX]; /* thread t runs on cpus[t % ncpus] */
	size_t ncpus;
	enum io_mode io;
	const char *samples_file;
};

enum cstate { C_CONNECTING, C_RUNNING, C_DONE, C_FAILED };

/* TCP_INFO of a connection, read just before it closes. */
struct conn_tcp {
	bool valid;
	uint32_t retrans, rtt_us, rttvar_us, snd_cwnd;
	uint64_t delivery_rate; /* bytes per second */
};

struct conn {
	int fd;
	uint32_t id;
	enum cstate state;
	uint32_t events; /* current epoll interest */
	uint64_t total;	 /* bytes this connection sends and expects back */
	uint64_t sent;	 /* bytes written */
	uint64_t recvd;	 /* bytes received and verified */
	uint64_t limit;	 /* may send up to this offset now (end of the current message/burst) */
	uint64_t unit;	 /* message or burst size (stream: total) */
	uint64_t unit_start_ns; /* first byte of the current message/burst written */
	uint64_t start_ns;	/* connect completed */
	uint64_t open_ns;	/* crr: socket() of this transaction */
	uint64_t progress_ns;	/* last byte written or received (stall detection) */
	bool shut_wr;
	int werr; /* --io split: the writer thread's errno when its write or shutdown failed */
	/* --io split: the end of what the writer has handed to write() so far; an echo may arrive
	 * before write() returns, so this (not sent) bounds what may have come back. */
	uint64_t posted;
	bool settled; /* --hold: counted in sh->settled (its last byte came back, or it failed) */
	struct conn_tcp tcp;
};

/* One thread: its slice of the connections, its epoll set, buffers, samples and counters. */
struct thr {
	unsigned idx;
	pthread_t th;
	int cpu;      /* pinned to this CPU, -1: not pinned */
	int last_cpu; /* sched_getcpu() when it finished */
	enum io_mode io;
	bool writer; /* --io split: this thread writes its connection (nconns 0), another reads it */
	bool stopped; /* stream: it has acted on SIGINT */
	bool released; /* --hold: it has half-closed its held connections */
	struct conn *conns;
	uint64_t nconns, nactive;
	int ep;
	uint8_t *wbuf, *rbuf;
	size_t wbuf_size;
	/* wbuf holds payload bytes [wbuf_off, wbuf_off + wbuf_len) of connection wbuf_conn: what a
	 * partial write left over is written next without generating it again. */
	uint32_t wbuf_conn;
	uint64_t wbuf_off, wbuf_len;
	uint64_t *samples;
	size_t nsamples, samples_cap;
	uint64_t conns_ok, conns_failed, bytes_sent, bytes_verified;
	uint64_t mark_end_rt; /* CLOCK_REALTIME when its last connection got its last byte back */
	double cpu_user_s, cpu_sys_s;
};

struct error_rec {
	uint32_t conn;
	uint64_t offset;
	char what[96];
};

static struct opts o;
static uint64_t pattern[PAT_WORDS];
static uint64_t seed_key;
static struct sockaddr_storage dest;
static socklen_t dest_len;
static uint64_t deadline_ns, stall_ns;

static struct conn *conns;
static struct thr *thrs;

/* What the threads share, in memory that --procs worker processes share too (MAP_SHARED): the
 * errors and the first mismatch (rare: a process-shared mutex is enough), crr's transaction
 * counter, --hold's count and the open-socket count. */
struct shared {
	pthread_mutex_t err_lock;
	struct error_rec errs[MAX_LISTED_ERRORS];
	uint64_t errors_total;
	bool have_mismatch;
	struct {
		uint32_t conn;
		uint64_t offset;
		unsigned expected, got;
		/* payload_locate(): the stream the wrong bytes belong to, and how many of them do */
		uint64_t src_at, src_run, src_offset;
		uint32_t src_conn;
	} mismatch;
	/* crr: transactions handed out so far (the next one's payload id). */
	uint64_t crr_next;
	bool stopped_early; /* stream: SIGINT ended the connections early */
	/* --hold: connections that got their last byte back (or failed), and whether all have. */
	uint64_t settled;
	bool released;
	/* Client sockets open now, and the most that were open at once. */
	uint64_t open_now, peak_open;
};
static struct shared *sh;
/* The transfer's start mark on CLOCK_REALTIME (the CPU sampler's clock, docs/programs.md): just
 * before the first connect(). The end mark is the latest of the threads' mark_end_rt. */
static uint64_t mark_start_rt;
/* stream: SIGINT asks every connection to stop sending where it is, half-close and verify the echo
 * of what it sent (a bulk load of unknown length, stopped by the orchestrator). The handler also
 * writes stop_efd, which every epoll loop watches, so that the threads sleeping in epoll_wait()
 * see it at once. */
static volatile sig_atomic_t stop_requested;
static int stop_efd = -1;
#define STOP_TAG ((void *)&stop_efd) /* epoll data of stop_efd */
/* --hold: readable once every connection has settled (an eventfd every epoll loop watches). */
static int hold_efd = -1;
#define HOLD_TAG ((void *)&hold_efd)

/* splitmix64 (Steele, Lea, Flood 2014): advances *state and returns the next 64-bit value. */
static uint64_t splitmix64(uint64_t *state)
{
	uint64_t z = (*state += 0x9e3779b97f4a7c15ull);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
	return z ^ (z >> 31);
}

/* A stateless 64-bit mix of x (one splitmix64 step from state x). */
static uint64_t mix64(uint64_t x) { return splitmix64(&x); }

/* Fill the pattern and the key seed from the --seed value. */
static void payload_init(uint64_t seed)
{
	uint64_t st = seed;
	for (size_t i = 0; i < PAT_WORDS; i++)
		pattern[i] = splitmix64(&st);
	seed_key = mix64(seed ^ 0x5bd1e9955bd1e995ull);
}

/* The 64-bit key XORed over block `block` (256 KiB) of connection `conn`. */
static uint64_t block_key(uint32_t conn, uint64_t block)
{
	return mix64(seed_key ^ mix64(((uint64_t)conn << 40) ^ block));
}

/* Write len payload bytes of connection conn starting at stream offset off into dst. */
static void payload_fill(uint32_t conn, uint64_t off, uint8_t *dst, size_t len)
{
	const uint8_t *pb = (const uint8_t *)pattern;
	while (len) {
		size_t in = (size_t)(off % PAT_BYTES);
		size_t n = PAT_BYTES - in < len ? PAT_BYTES - in : len;
		uint64_t k = block_key(conn, off / PAT_BYTES);
		const uint8_t *kb = (const uint8_t *)&k;
		size_t i = 0;
		for (; i < n && ((in + i) & 7); i++)
			dst[i] = pb[in + i] ^ kb[(in + i) & 7];
		const uint64_t *pw = pattern + (in + i) / 8;
		for (; i + 8 <= n; i += 8, pw++) {
			uint64_t w = *pw ^ k;
			memcpy(dst + i, &w, 8);
		}
		for (; i < n; i++)
			dst[i] = pb[in + i] ^ kb[(in + i) & 7];
		dst += n;
		off += n;
		len -= n;
	}
}

/* Check len received bytes against the payload of conn at offset off. Returns len when all match,
 * else the index of the first wrong byte (and its expected value in *expected). */
static size_t payload_check(uint32_t conn, uint64_t off, const uint8_t *src, size_t len,
			    unsigned *expected)
{
	const uint8_t *pb = (const uint8_t *)pattern;
	size_t done = 0;
	while (done < len) {
		size_t in = (size_t)(off % PAT_BYTES);
		size_t n = PAT_BYTES - in < len - done ? PAT_BYTES - in : len - done;
		uint64_t k = block_key(conn, off / PAT_BYTES);
		const uint8_t *kb = (const uint8_t *)&k;
		const uint8_t *s = src + done;
		size_t i = 0;
		for (; i < n && ((in + i) & 7); i++)
			if (s[i] != (pb[in + i] ^ kb[(in + i) & 7]))
				goto slow;
		/* Fast path: OR the differences of 64 words, look closer only if any is non-zero.
		 */
		for (; i + 512 <= n; i += 512) {
			const uint64_t *pw = pattern + (in + i) / 8;
			uint64_t d = 0;
			for (size_t j = 0; j < 64; j++) {
				uint64_t w;
				memcpy(&w, s + i + 8 * j, 8);
				d |= w ^ pw[j] ^ k;
			}
			if (d)
				break;
		}
	slow:
		for (; i < n; i++) {
			unsigned e = pb[in + i] ^ kb[(in + i) & 7];
			if (s[i] != e) {
				*expected = e;
				return done + i;
			}
		}
		done += n;
		off += n;
	}
	return len;
}

/* Where did wrong bytes come from? Received byte i of a payload stretch that starts at stream offset
 * q is P[q+i] ^ K[(q+i) & 7] (P the pattern, K the key of q's block), so r[i] ^ r[i+8] =
 * P[q+i] ^ P[q+i+8] whatever the key: the key-free differences place the stretch in the pattern,
 * the key then names the connection and block. Searched over the connection ids in *ids (up to
 * n_ids) and blocks up to max_block; a stretch crossing a block boundary or not from any of them
 * (zeros, another program's bytes) is not found. Returns the length of the run of bytes that match
 * the stream found (0: not found), its connection and offset in *conn and *off. Runs only on a
 * mismatch. */
#define LOCATE_WINDOW 24u
static size_t payload_locate(const uint8_t *src, size_t len, const uint32_t *ids, size_t n_ids,
			     uint64_t max_block, uint32_t *conn, uint64_t *off)
{
	const uint8_t *pb = (const uint8_t *)pattern;
	if (len < LOCATE_WINDOW)
		return 0;
	uint8_t d[LOCATE_WINDOW - 8];
	for (size_t i = 0; i < sizeof(d); i++)
		d[i] = src[i] ^ src[i + 8];
	for (size_t p = 0; p + LOCATE_WINDOW <= PAT_BYTES; p++) {
		if ((pb[p] ^ pb[p + 8]) != d[0])
			continue;
		size_t i = 1;
		while (i < sizeof(d) && (pb[p + i] ^ pb[p + i + 8]) == d[i])
			i++;
		if (i < sizeof(d))
			continue;
		uint8_t kb[8];
		for (i = 0; i < 8; i++)
			kb[(p + i) & 7] = src[i] ^ pb[p + i];
		uint64_t k;
		memcpy(&k, kb, 8);
		for (size_t c = 0; c < n_ids; c++)
			for (uint64_t b = 0; b <= max_block; b++) {
				if (block_key(ids[c], b) != k)
					continue;
				unsigned unused;
				*conn = ids[c];
				*off = b * PAT_BYTES + p;
				return payload_check(ids[c], *off, src, len, &unused);
			}
	}
	return 0;
}

/* Fill sh->mismatch.src_* for wrong bytes src[0..len) of connection c: candidates are the
 * connections with ids near c's (all of them up to LOCATE_IDS), blocks up to the most any
 * connection has sent. Called with the error lock held. */
#define LOCATE_IDS 256u
#define LOCATE_SKIP 64u
static void locate_mismatch(const struct conn *c, const uint8_t *src, size_t len)
{
	uint32_t ids[LOCATE_IDS];
	size_t n = 0;
	uint64_t first = c->id > LOCATE_IDS / 2 ? c->id - LOCATE_IDS / 2 : 0;
	uint64_t last = first + LOCATE_IDS;
	if (o.wl != W_CRR && o.conns < last) /* crr's ids are transactions, beyond --conns */
		last = o.conns;
	for (uint64_t id = first; id < last && id <= UINT32_MAX; id++)
		ids[n++] = (uint32_t)id;
	uint64_t most = 0;
	for (uint64_t i = 0; i < o.conns; i++)
		if (conns[i].sent > most)
			most = conns[i].sent;
	/* From the first wrong byte on; if that stretch is nobody's, a few bytes later (a byte or a
	 * word changed in place, then the stream goes on). */
	for (size_t skip = 0; skip < LOCATE_SKIP && skip < len; skip++) {
		sh->mismatch.src_run = payload_locate(src + skip, len - skip, ids, n, most / PAT_BYTES,
						      &sh->mismatch.src_conn, &sh->mismatch.src_offset);
		if (sh->mismatch.src_run) {
			sh->mismatch.src_at = sh->mismatch.offset + skip;
			return;
		}
	}
}

/* CLOCK_REALTIME in nanoseconds: the clock that the marks share with sb-cpustat's readings. */
static uint64_t realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Append one latency sample in nanoseconds to thread t's samples. */
static void add_sample(struct thr *t, uint64_t ns)
{
	if (t->nsamples == t->samples_cap) {
		t->samples_cap = t->samples_cap ? t->samples_cap * 2 : 1024;
		t->samples = realloc(t->samples, t->samples_cap * sizeof(*t->samples));
		if (!t->samples)
			net_die("out of memory for latency samples");
	}
	t->samples[t->nsamples++] = ns;
}

/* Set conn's epoll interest to ev (no system call when it is already that). */
static void set_events(struct thr *t, struct conn *c, uint32_t ev)
{
	net_epoll_mod(t->ep, c->fd, c, &c->events, ev);
}

/* Read conn's TCP_INFO into c->tcp (connections that got connected only). */
static void read_tcp_info(struct conn *c)
{
	struct tcp_info ti;
	socklen_t len = sizeof(ti);
	memset(&ti, 0, sizeof(ti));
	if (c->state != C_RUNNING || getsockopt(c->fd, IPPROTO_TCP, TCP_INFO, &ti, &len) < 0)
		return;
	/* crr: a slot's retransmits are summed over its transactions, the rest is its last one's. */
	c->tcp.retrans = (o.wl == W_CRR && c->tcp.valid ? c->tcp.retrans : 0) + ti.tcpi_total_retrans;
	c->tcp.valid = true;
	c->tcp.rtt_us = ti.tcpi_rtt;
	c->tcp.rttvar_us = ti.tcpi_rttvar;
	c->tcp.snd_cwnd = ti.tcpi_snd_cwnd;
	/* tcpi_delivery_rate arrived in Linux 4.9; an older kernel returns a shorter struct. */
	if (len >= offsetof(struct tcp_info, tcpi_delivery_rate) + sizeof(ti.tcpi_delivery_rate))
		c->tcp.delivery_rate = ti.tcpi_delivery_rate;
}

/* --hold: conn got its last byte back (or failed); the last of all to do so releases them all. */
static void settle(struct conn *c)
{
	if (!o.hold || c->settled)
		return;
	c->settled = true;
	if (__atomic_add_fetch(&sh->settled, 1, __ATOMIC_ACQ_REL) == o.conns) {
		__atomic_store_n(&sh->released, true, __ATOMIC_RELEASE);
		uint64_t one = 1;
		if (write(hold_efd, &one, sizeof(one)) != (ssize_t)sizeof(one))
			net_die("write(eventfd): %s", strerror(errno));
	}
}

/* Take the errors' lock. It is robust: a --procs worker process killed while holding it leaves it
 * to the next taker (the main process fails that process's connections) instead of a deadlock. */
static void lock_errors(void)
{
	if (pthread_mutex_lock(&sh->err_lock) == EOWNERDEAD)
		pthread_mutex_consistent(&sh->err_lock);
}

/* A client socket was opened: count it, and the most open at once. */
static void count_open(void)
{
	uint64_t now = __atomic_add_fetch(&sh->open_now, 1, __ATOMIC_RELAXED);
	uint64_t peak = __atomic_load_n(&sh->peak_open, __ATOMIC_RELAXED);
	while (now > peak && !__atomic_compare_exchange_n(&sh->peak_open, &peak, now, true,
							   __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

/* End conn: read its TCP_INFO, close it and count it as passed or failed. */
static void finish(struct thr *t, struct conn *c, enum cstate st)
{
	if (c->fd >= 0) {
		read_tcp_info(c);
		/* --io split: the writer thread may still be in write(); main() closes the socket
		 * once every thread has ended. */
		if (t->io != IO_SPLIT) {
			close(c->fd);
			c->fd = -1;
			__atomic_sub_fetch(&sh->open_now, 1, __ATOMIC_RELAXED);
		}
	}
	settle(c);
	__atomic_store_n(&c->state, st, __ATOMIC_RELEASE);
	if (st == C_DONE)
		t->conns_ok++;
	else
		t->conns_failed++;
	t->nactive--;
}

/* Record an error for conn at stream offset off and fail the connection. */
static void fail(struct thr *t, struct conn *c, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(struct thr *t, struct conn *c, uint64_t off, const char *fmt, ...)
{
	lock_errors();
	if (sh->errors_total < MAX_LISTED_ERRORS) {
		struct error_rec *e = &sh->errs[sh->errors_total];
		e->conn = c->id;
		e->offset = off;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->what, sizeof(e->what), fmt, ap);
		va_end(ap);
	}
	sh->errors_total++;
	pthread_mutex_unlock(&sh->err_lock);
	finish(t, c, C_FAILED);
}

/* Name a socket error the way docs/programs.md lists them. */
static const char *errno_name(int err)
{
	if (err == ECONNRESET || err == EPIPE)
		return "reset";
	return strerror(err);
}

/* One write() of the current message/burst/stream: the rest of the last chunk if a partial
 * write left some, else a new chunk of up to wbuf_size bytes. Half-closes after the last byte.
 * Returns false when the connection failed. */
static bool do_send(struct thr *t, struct conn *c)
{
	if (c->sent < c->limit) {
		uint64_t room = c->limit - c->sent;
		const uint8_t *p;
		size_t n;
		if (t->wbuf_conn == c->id && c->sent >= t->wbuf_off &&
		    c->sent < t->wbuf_off + t->wbuf_len) {
			p = t->wbuf + (c->sent - t->wbuf_off);
			n = (size_t)(t->wbuf_off + t->wbuf_len - c->sent);
		} else {
			n = room < t->wbuf_size ? (size_t)room : t->wbuf_size;
			payload_fill(c->id, c->sent, t->wbuf, n);
			t->wbuf_conn = c->id;
			t->wbuf_off = c->sent;
			t->wbuf_len = n;
			p = t->wbuf;
		}
		if (n > room)
			n = (size_t)room;
		if (o.wl != W_STREAM && c->sent % c->unit == 0)
			c->unit_start_ns = net_now_ns();
		ssize_t w = write(c->fd, p, n);
		if (w < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return true;
			fail(t, c, c->recvd, "%s", errno_name(errno));
			return false;
		}
		c->sent += (uint64_t)w;
		t->bytes_sent += (uint64_t)w;
		if (stall_ns)
			__atomic_store_n(&c->progress_ns, net_now_ns(), __ATOMIC_RELAXED);
	}
	/* --hold: the half-close waits until every connection got its last byte back. */
	if (c->sent == c->total && !c->shut_wr &&
	    (!o.hold || __atomic_load_n(&sh->released, __ATOMIC_ACQUIRE))) {
		if (shutdown(c->fd, SHUT_WR) < 0) {
			fail(t, c, c->recvd, "shutdown: %s", errno_name(errno));
			return false;
		}
		c->shut_wr = true;
	}
	return true;
}

/* After a mismatch: read more after the n bytes in buf (up to want in all, waiting up to 200 ms
 * for them) so that payload_locate() has a stretch to place. Returns the bytes in buf now. */
#define LOCATE_WANT 4096u
static size_t top_up(int fd, uint8_t *buf, size_t n, size_t want)
{
	uint64_t until = net_now_ns() + 200000000ull;
	if (want > RBUF_BYTES)
		want = RBUF_BYTES;
	while (n < want) {
		struct pollfd p = {.fd = fd, .events = POLLIN};
		uint64_t now = net_now_ns();
		int ready = now >= until ? 0 : poll(&p, 1, (int)((until - now) / 1000000u) + 1);
		if (ready < 0 && errno == EINTR) /* the thread's tick */
			continue;
		if (ready <= 0)
			break;
		ssize_t r = recv(fd, buf + n, want - n, MSG_DONTWAIT);
		if (r <= 0)
			break;
		n += (size_t)r;
	}
	return n;
}

/* One read(): verify, account finished messages/bursts and start the next one. Returns false
 * when the connection ended (passed or failed). */
static bool do_recv(struct thr *t, struct conn *c)
{
	/* --io split: the writing thread lowers total to what it sent when SIGINT stops it. */
	uint64_t total = __atomic_load_n(&c->total, __ATOMIC_ACQUIRE);
	ssize_t r = read(c->fd, t->rbuf, RBUF_BYTES);
	if (r < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return true;
		fail(t, c, c->recvd, "%s", errno_name(errno));
		return false;
	}
	if (r == 0) {
		int werr = __atomic_load_n(&c->werr, __ATOMIC_ACQUIRE);
		if (werr) { /* --io split: the writer failed and shut the reading side down */
			fail(t, c, c->recvd, "%s", errno_name(werr));
		} else if (c->recvd == total) {
			if (o.wl == W_STREAM && total == 0)
				add_sample(t, net_now_ns() - c->start_ns);
			if (o.wl == W_CRR) /* connect, request, response, close: one transaction */
				add_sample(t, net_now_ns() - c->open_ns);
			finish(t, c, C_DONE);
		} else {
			fail(t, c, c->recvd, "short read (EOF at offset %llu)",
			     (unsigned long long)c->recvd);
		}
		return false;
	}
	size_t n = (size_t)r;
	size_t want = total - c->recvd < n ? (size_t)(total - c->recvd) : n;
	unsigned expected = 0;
	size_t ok = payload_check(c->id, c->recvd, t->rbuf, want, &expected);
	t->bytes_verified += ok;
	if (stall_ns)
		__atomic_store_n(&c->progress_ns, net_now_ns(), __ATOMIC_RELAXED);
	if (ok < want) {
		uint64_t at = c->recvd + ok;
		lock_errors();
		if (!sh->have_mismatch) {
			sh->have_mismatch = true;
			sh->mismatch.conn = c->id;
			sh->mismatch.offset = at;
			sh->mismatch.expected = expected;
			sh->mismatch.got = t->rbuf[ok];
			size_t have = top_up(c->fd, t->rbuf, n, ok + LOCATE_WANT);
			locate_mismatch(c, t->rbuf + ok, have - ok);
		}
		pthread_mutex_unlock(&sh->err_lock);
		c->recvd = at;
		fail(t, c, at, "mismatch");
		return false;
	}
	c->recvd += want;
	uint64_t sent = t->io == IO_SPLIT ? __atomic_load_n(&c->posted, __ATOMIC_ACQUIRE) : c->sent;
	if (want < n || c->recvd > sent) {
		fail(t, c, c->recvd, "extra bytes");
		return false;
	}
	if (c->recvd == total) {
		t->mark_end_rt = realtime_ns();
		settle(c);
	}
	if (o.wl == W_STREAM && c->recvd == total)
		add_sample(t, net_now_ns() - c->start_ns); /* last byte verified; EOF comes next */
	if ((o.wl == W_PINGPONG || o.wl == W_BURST) && c->recvd == c->limit) {
		add_sample(t, net_now_ns() - c->unit_start_ns);
		if (c->limit < c->total) {
			c->limit += c->unit;
			return do_send(t, c);
		}
	}
	return true;
}

/* Set the interest that matches conn's state: always readable, writable while it has bytes that
 * may be sent now and the last write did not take them all. */
static void update_events(struct thr *t, struct conn *c)
{
	set_events(t, c, EPOLLIN | (c->sent < c->limit ? EPOLLOUT : 0u));
}

/* connect() completed (or failed): start sending at once. Returns false when it failed. */
static bool on_connected(struct thr *t, struct conn *c)
{
	int err = net_sock_error(c->fd);
	if (err) {
		fail(t, c, 0, "connect: %s", strerror(err));
		return false;
	}
	c->state = C_RUNNING;
	c->start_ns = net_now_ns();
	c->progress_ns = c->start_ns;
	if (c->total == 0)
		settle(c); /* nothing to get back */
	return do_send(t, c);
}

/* Handle the epoll events of one connection. */
static void on_event(struct thr *t, struct conn *c, uint32_t ev)
{
	if (c->state == C_CONNECTING) {
		if (on_connected(t, c))
			update_events(t, c);
		return;
	}
	if (ev & EPOLLOUT) {
		if (!do_send(t, c))
			return;
	}
	if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		if (!do_recv(t, c))
			return;
	}
	update_events(t, c);
}

/* Fail conn as stalled when it made no progress for the stall interval (0: off). Returns true
 * when it did. */
static bool check_stall(struct thr *t, struct conn *c, uint64_t now)
{
	/* With --io split the writing thread may have moved progress_ns past `now`. */
	uint64_t progress = __atomic_load_n(&c->progress_ns, __ATOMIC_RELAXED);
	if (!stall_ns || c->state != C_RUNNING || progress >= now || now - progress < stall_ns)
		return false;
	if (c->settled && !__atomic_load_n(&sh->released, __ATOMIC_ACQUIRE))
		return false; /* --hold: it waits for the others, on purpose */
	fail(t, c, c->recvd, "stall (no bytes for %gs at offset %llu)", o.stall_s,
	     (unsigned long long)c->recvd);
	return true;
}

/* Initialise conn i's plan (sizes, limits) before it connects. */
static void conn_init(struct conn *c, uint64_t i)
{
	c->id = (uint32_t)i;
	c->fd = -1;
	c->state = C_CONNECTING;
	c->unit = o.wl == W_PINGPONG || o.wl == W_CRR ? o.msg_size
		  : o.wl == W_BURST			? o.burst_size
							: o.bytes;
	c->total = o.wl == W_CRR      ? o.msg_size
		   : o.wl == W_PINGPONG ? o.msg_size * o.round_trips
		   : o.wl == W_BURST  ? o.burst_size * o.bursts
				      : o.bytes;
	c->limit = o.wl == W_STREAM ? c->total : c->unit;
	if (c->unit == 0)
		c->unit = 1; /* stream of 0 bytes: only the half-close */
}

/* Create conn's socket (flags: SOCK_NONBLOCK or 0) with TCP_NODELAY, bound to its source address
 * when --source-addrs spreads them, and start connect(). Returns the connect() result (0, or -1
 * with errno; EINPROGRESS for a non-blocking connect in progress); fails conn when no socket could
 * be made or bound (then returns -1 with c->fd -1). */
static int conn_connect(struct thr *t, struct conn *c, int flags)
{
	c->fd = socket(dest.ss_family, SOCK_STREAM | SOCK_CLOEXEC | flags, 0);
	if (c->fd < 0) {
		fail(t, c, 0, "socket: %s", strerror(errno));
		return -1;
	}
	count_open();
	/* Messages go out when written: no Nagle delay on ping-pong requests or burst tails. */
	net_set_nodelay(c->fd);
	if (o.source_addrs) {
		/* 127.0.0.1 + (id mod N): every source address has its own ephemeral port range
		 * towards the server; the port is picked at connect() (IP_BIND_ADDRESS_NO_PORT). */
		int one = 1;
		(void)setsockopt(c->fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		struct sockaddr_in src = {.sin_family = AF_INET};
		src.sin_addr.s_addr = htonl(0x7f000001u + (uint32_t)(c->id % o.source_addrs));
		if (bind(c->fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
			fail(t, c, 0, "bind: %s", strerror(errno));
			return -1;
		}
	}
	return connect(c->fd, (const struct sockaddr *)&dest, dest_len);
}

/* Open conn c of thread t (non-blocking connect) and register it with epoll; a failure fails it. */
static void open_conn(struct thr *t, struct conn *c)
{
	t->nactive++;
	c->open_ns = net_now_ns();
	int r = conn_connect(t, c, SOCK_NONBLOCK);
	if (c->fd < 0)
		return;
	c->events = EPOLLOUT;
	net_epoll_add(t->ep, c->fd, EPOLLOUT, c);
	if (r < 0 && errno != EINPROGRESS)
		fail(t, c, 0, "connect: %s", strerror(errno));
	/* Completion (even immediate) is reported as EPOLLOUT. */
}

/* crr: while slot c's connection has ended (passed or failed) and transactions are left, start the
 * next one in it: a connection that sends one message of msg_size bytes, half-closes, reads the
 * echo back and sees the server close. Each transaction has its own payload (its index is the
 * connection number). */
static void crr_refill(struct thr *t, struct conn *c)
{
	while (c->state == C_DONE || c->state == C_FAILED) {
		uint64_t id = __atomic_fetch_add(&sh->crr_next, 1, __ATOMIC_RELAXED);
		if (id >= o.transactions)
			return;
		*c = (struct conn){.tcp = c->tcp};
		conn_init(c, id);
		open_conn(t, c);
	}
}

/* Open every connection of thread t (crr: its slots' first transactions). */
static void open_conns(struct thr *t)
{
	for (uint64_t i = 0; i < t->nconns; i++) {
		struct conn *c = &t->conns[i];
		if (o.wl != W_CRR) {
			open_conn(t, c);
			continue;
		}
		c->state = C_DONE; /* an empty slot */
		crr_refill(t, c);
	}
}

static void on_sigint(int sig)
{
	(void)sig;
	stop_requested = 1;
	uint64_t one = 1;
	if (stop_efd >= 0)
		(void)!write(stop_efd, &one, sizeof(one));
}

/* stream, after SIGINT: each of thread t's running connections now ends at the bytes it has written
 * (what it expects back), half-closing at once; one still connecting ends with nothing sent. */
static void stop_streams(struct thr *t)
{
	t->stopped = true;
	__atomic_store_n(&sh->stopped_early, true, __ATOMIC_RELAXED);
	for (uint64_t i = 0; i < t->nconns; i++) {
		struct conn *c = &t->conns[i];
		if (c->state == C_CONNECTING) {
			c->total = 0;
			finish(t, c, C_DONE); /* nothing sent, nothing expected */
			continue;
		}
		if (c->state != C_RUNNING)
			continue;
		c->total = c->limit = c->sent;
		if (c->recvd == c->total) {
			t->mark_end_rt = realtime_ns();
			settle(c);
		}
		if (do_send(t, c))
			update_events(t, c);
	}
}

/* --hold: every connection has settled; half-close thread t's held ones (their EOF ends them). */
static void release_held(struct thr *t)
{
	if (t->released)
		return;
	t->released = true;
	(void)epoll_ctl(t->ep, EPOLL_CTL_DEL, hold_efd, NULL); /* level-triggered, stays readable */
	for (uint64_t i = 0; i < t->nconns; i++) {
		struct conn *c = &t->conns[i];
		if (c->state == C_RUNNING && do_send(t, c))
			update_events(t, c);
	}
}

/* Thread t's epoll loop until its connections ended or the deadline passed. */
static void run_epoll(struct thr *t)
{
	t->ep = net_epoll_create();
	if (stop_efd >= 0)
		net_epoll_add(t->ep, stop_efd, EPOLLIN, STOP_TAG);
	if (hold_efd >= 0)
		net_epoll_add(t->ep, hold_efd, EPOLLIN, HOLD_TAG);
	open_conns(t);
	/* Stalls are looked for every quarter of the interval: a stall is reported at most 25 %
	 * later than it began to count. */
	uint64_t scan_every = stall_ns / 4 ? stall_ns / 4 : 1;
	uint64_t next_scan = net_now_ns() + scan_every;
	struct epoll_event evs[256];
	bool busy = t->io == IO_BUSY;
	while (t->nactive > 0) {
		uint64_t now = net_now_ns();
		if (now >= deadline_ns)
			break;
		if (stop_requested && !t->stopped) {
			stop_streams(t);
			if (stop_efd >= 0) /* level-triggered: it would wake this loop from now on */
				(void)epoll_ctl(t->ep, EPOLL_CTL_DEL, stop_efd, NULL);
			continue;
		}
		if (stall_ns && now >= next_scan) {
			for (uint64_t i = 0; i < t->nconns; i++)
				if (check_stall(t, &t->conns[i], now) && o.wl == W_CRR)
					crr_refill(t, &t->conns[i]);
			next_scan = now + scan_every;
			continue;
		}
		uint64_t until = stall_ns && next_scan < deadline_ns ? next_scan : deadline_ns;
		uint64_t left_ms = (until - now + 999999) / 1000000;
		int n = epoll_wait(t->ep, evs, 256,
				   busy ? 0 : left_ms > 60000 ? 60000 : (int)left_ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			net_die("epoll_wait: %s", strerror(errno));
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (evs[i].data.ptr == STOP_TAG) {
				/* The loop's next round acts on it (a --procs worker process learns
				 * of SIGINT from the eventfd alone). */
				stop_requested = 1;
				continue;
			}
			if (evs[i].data.ptr == HOLD_TAG) {
				release_held(t);
				continue;
			}
			if (c->state == C_CONNECTING || c->state == C_RUNNING)
				on_event(t, c, evs[i].events);
			if (o.wl == W_CRR)
				crr_refill(t, c);
		}
	}
	close(t->ep);
}

/* The blocking path's wake-up: TICK_SIGNAL, sent every BLOCKING_TICK_US to the thread blocked in
 * read() or write(), which then returns EINTR (the handler is installed without SA_RESTART) so that
 * it looks at the stall interval and the deadline. A socket timeout (SO_RCVTIMEO) would do the same,
 * but arms a timer of its own for every blocking call: its expiry moves with every round trip, so
 * the CPU reprograms its timer device each time (a VM exit in a guest), which cost about 5 us (9 %)
 * of a 64-byte round trip here, client and server pinned to two CPUs; the periodic timer's expiry
 * stays put. (The epoll loop's timeouts, seconds long, cost nothing measurable.) */
#define TICK_SIGNAL (SIGRTMIN + 1)
#ifndef sigev_notify_thread_id /* the kernel's field; glibc names it from 2.41 on */
#define sigev_notify_thread_id _sigev_un._tid
#endif
static void on_tick(int sig) { (void)sig; }

/* A timer that sends TICK_SIGNAL to the calling thread every BLOCKING_TICK_US; false if none. */
static bool tick_start(timer_t *timer)
{
	struct sigevent ev = {.sigev_notify = SIGEV_THREAD_ID, .sigev_signo = TICK_SIGNAL};
	ev.sigev_notify_thread_id = gettid();
	struct itimerspec every = {.it_interval = {.tv_nsec = BLOCKING_TICK_US * 1000L},
				   .it_value = {.tv_nsec = BLOCKING_TICK_US * 1000L}};
	if (timer_create(CLOCK_MONOTONIC, &ev, timer) < 0)
		return false;
	if (timer_settime(*timer, 0, &every, NULL) < 0) {
		timer_delete(*timer);
		return false;
	}
	return true;
}

/* Thread t's one ping-pong connection with blocking reads and writes (busy: non-blocking reads in
 * a loop that never sleeps). TICK_SIGNAL interrupts a blocked call every BLOCKING_TICK_US, to look
 * at the stall interval and the deadline (a socket timeout where no timer could be made). */
static void run_blocking(struct thr *t, bool busy)
{
	struct conn *c = &t->conns[0];
	t->nactive = 1;
	int r = conn_connect(t, c, 0);
	if (c->fd < 0)
		return;
	if (r < 0) {
		fail(t, c, 0, "connect: %s", strerror(errno));
		return;
	}
	timer_t timer;
	bool ticking = !busy && tick_start(&timer);
	if (!busy && !ticking) {
		struct timeval tick = {.tv_sec = 0, .tv_usec = BLOCKING_TICK_US};
		(void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof(tick));
		(void)setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tick, sizeof(tick));
	}
	if (busy)
		net_set_nonblock(c->fd);
	if (on_connected(t, c)) {
		for (;;) {
			bool more = c->sent < c->limit || (c->sent == c->total && !c->shut_wr)
					? do_send(t, c)
					: do_recv(t, c);
			if (!more)
				break;
			uint64_t now = net_now_ns();
			if (now >= deadline_ns || check_stall(t, c, now))
				break;
		}
	}
	if (ticking)
		timer_delete(timer);
}

/* --io split, the writing thread of one stream connection (connected by main()): write the whole
 * stream with blocking writes, then half-close. It stops when the reading thread ended the
 * connection or the deadline passed (the socket wakes it every BLOCKING_TICK_US); when a write
 * fails it leaves the errno in c->werr and shuts the reading side down, so that the reading thread
 * fails the connection with that reason. */
static void run_split_writer(struct thr *t, struct conn *c)
{
	while (__atomic_load_n(&c->state, __ATOMIC_ACQUIRE) == C_RUNNING) {
		if (stop_requested && !t->stopped) { /* the reader now expects back what was sent */
			t->stopped = true;
			__atomic_store_n(&sh->stopped_early, true, __ATOMIC_RELAXED);
			t->wbuf_conn = UINT32_MAX;
			__atomic_store_n(&c->total, c->sent, __ATOMIC_RELEASE);
			c->limit = c->sent;
		}
		if (c->sent == c->total && c->shut_wr)
			return;
		uint64_t before = c->sent;
		int err = 0;
		if (c->sent < c->total) {
			size_t n = c->total - c->sent < t->wbuf_size ? (size_t)(c->total - c->sent)
								 : t->wbuf_size;
			if (t->wbuf_conn != c->id || t->wbuf_off != c->sent) {
				payload_fill(c->id, c->sent, t->wbuf, n);
				t->wbuf_conn = c->id;
				t->wbuf_off = c->sent;
				t->wbuf_len = n;
			}
			__atomic_store_n(&c->posted, c->sent + t->wbuf_len, __ATOMIC_RELEASE);
			ssize_t w = write(c->fd, t->wbuf, (size_t)t->wbuf_len);
			if (w < 0 && errno != EAGAIN && errno != EINTR)
				err = errno;
			if (w > 0) {
				__atomic_store_n(&c->sent, c->sent + (uint64_t)w, __ATOMIC_RELEASE);
				t->bytes_sent += (uint64_t)w;
				__atomic_store_n(&c->progress_ns, net_now_ns(), __ATOMIC_RELAXED);
				/* The rest of a partial write is written next without generating
				 * the chunk again. */
				memmove(t->wbuf, t->wbuf + w, (size_t)(t->wbuf_len - (uint64_t)w));
				t->wbuf_off += (uint64_t)w;
				t->wbuf_len -= (uint64_t)w;
				if (!t->wbuf_len)
					t->wbuf_conn = UINT32_MAX;
			}
		} else if (shutdown(c->fd, SHUT_WR) < 0) {
			err = errno;
		} else {
			c->shut_wr = true;
		}
		if (err) {
			__atomic_store_n(&c->werr, err, __ATOMIC_RELEASE);
			(void)shutdown(c->fd, SHUT_RD);
			return;
		}
		if (c->sent == before && net_now_ns() >= deadline_ns)
			return;
	}
}

/* --io split, the reading thread of one stream connection: blocking reads, verified as always, until
 * the connection ended, stalled or the deadline passed. */
static void run_split_reader(struct thr *t, struct conn *c)
{
	while (c->state == C_RUNNING && do_recv(t, c)) {
		uint64_t now = net_now_ns();
		if (now >= deadline_ns || check_stall(t, c, now))
			return;
	}
}

/* A thread's body: pin it, run its connections, fail what is left at the deadline, take its CPU
 * time. */
static void *thread_main(void *arg)
{
	struct thr *t = arg;
	if (t->cpu >= 0) {
		cpu_set_t set;
		CPU_ZERO(&set);
		CPU_SET(t->cpu, &set);
		int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
		if (err)
			net_die("cannot pin thread %u to CPU %d: %s", t->idx, t->cpu, strerror(err));
	}
	t->wbuf = malloc(t->wbuf_size);
	t->rbuf = malloc(RBUF_BYTES);
	if (!t->wbuf || !t->rbuf)
		net_die("out of memory");
	t->wbuf_conn = UINT32_MAX;
	if (t->io == IO_SPLIT && t->writer)
		run_split_writer(t, t->conns);
	else if (t->io == IO_SPLIT)
		run_split_reader(t, t->conns);
	else if (t->io == IO_BLOCKING ||
	    (t->io == IO_BUSY && t->nconns == 1 && o.wl == W_PINGPONG && o.msg_size <= BLOCKING_MSG_MAX))
		run_blocking(t, t->io == IO_BUSY);
	else
		run_epoll(t);
	for (uint64_t i = 0; i < t->nconns; i++) {
		struct conn *c = &t->conns[i];
		if (c->state == C_CONNECTING || c->state == C_RUNNING)
			fail(t, c, c->recvd, "timeout");
	}
	struct rusage ru;
	if (getrusage(RUSAGE_THREAD, &ru) == 0) {
		t->cpu_user_s = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6;
		t->cpu_sys_s = ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
	}
	t->last_cpu = sched_getcpu();
	free(t->wbuf);
	free(t->rbuf);
	return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

/* Nearest-rank percentile p (0 < p <= 100) of the n sorted samples. */
static uint64_t percentile(const uint64_t *s, size_t n, double p)
{
	size_t rank = (size_t)((p / 100.0) * (double)n + 0.999999999);
	if (rank < 1)
		rank = 1;
	if (rank > n)
		rank = n;
	return s[rank - 1];
}

/* Log-linear bucket of v: exact below 128, else 64 sub-buckets per power of two (width 2^(e-6)
 * for 2^e <= v < 2^(e+1), i.e. at most 1/64 = 1.56 % of the value). */
static void bucket_of(uint64_t v, uint64_t *lo, uint64_t *hi)
{
	if (v < 128) {
		*lo = v;
		*hi = v + 1;
		return;
	}
	int e = 63 - __builtin_clzll(v);
	int shift = e - 6;
	*lo = (v >> shift) << shift;
	*hi = *lo + (1ull << shift);
}

/* Print s as a JSON string (the texts here are short ASCII: quotes, backslashes and control
 * characters are escaped anyway). */
static void json_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (ch == '"' || ch == '\\')
			printf("\\%c", ch);
		else if (ch < 0x20)
			printf("\\u%04x", ch);
		else
			putchar(ch);
	}
	putchar('"');
}

static void json_opt_u64(const char *key, bool used, uint64_t v)
{
	if (used)
		printf("\"%s\":%llu", key, (unsigned long long)v);
	else
		printf("\"%s\":null", key);
}

/* "key":{"min":..,"p50":..,"p99":..,"max":..} over the n values in v (sorted here), null when
 * n is 0. */
static void json_spread(const char *key, uint64_t *v, size_t n)
{
	if (!n) {
		printf("\"%s\":null", key);
		return;
	}
	qsort(v, n, sizeof(*v), cmp_u64);
	printf("\"%s\":{\"min\":%llu,\"p50\":%llu,\"p99\":%llu,\"max\":%llu}", key,
	       (unsigned long long)v[0], (unsigned long long)percentile(v, n, 50),
	       (unsigned long long)percentile(v, n, 99), (unsigned long long)v[n - 1]);
}

/* The "tcp_info" object: what TCP_INFO said of the connections that got connected, read as each
 * one ended. */
static void print_tcp_info(void)
{
	uint64_t *v = malloc((o.conns ? o.conns : 1) * sizeof(*v));
	if (!v)
		net_die("out of memory");
	size_t n = 0;
	uint64_t retrans = 0, with_retrans = 0;
	for (uint64_t i = 0; i < o.conns; i++)
		if (conns[i].tcp.valid) {
			retrans += conns[i].tcp.retrans;
			with_retrans += conns[i].tcp.retrans > 0;
			n++;
		}
	printf("\"tcp_info\":{\"conns\":%zu,\"retrans_total\":%llu,\"conns_with_retrans\":%llu", n,
	       (unsigned long long)retrans, (unsigned long long)with_retrans);
	static const char *const keys[] = {"rtt_us", "rttvar_us", "snd_cwnd",
					   "delivery_rate_bytes_per_s"};
	for (int k = 0; k < 4; k++) {
		size_t m = 0;
		for (uint64_t i = 0; i < o.conns; i++) {
			const struct conn_tcp *ct = &conns[i].tcp;
			if (!ct->valid)
				continue;
			v[m++] = k == 0	  ? ct->rtt_us
				 : k == 1 ? ct->rttvar_us
				 : k == 2 ? ct->snd_cwnd
					  : ct->delivery_rate;
		}
		putchar(',');
		json_spread(keys[k], v, m);
	}
	printf("},");
	free(v);
}

/* The process (0..procs-1) that runs thread i: process p runs threads
 * [p * threads / procs, (p + 1) * threads / procs). */
static uint64_t proc_of(uint64_t i)
{
	uint64_t p = i * o.procs / o.threads;
	while (p + 1 < o.procs && (p + 1) * o.threads / o.procs <= i)
		p++;
	while (p > 0 && p * o.threads / o.procs > i)
		p--;
	return p;
}

/* The "threads" array: per thread, where it ran, how, its connections, CPU time and samples. */
static void print_threads(void)
{
	printf("\"threads\":[");
	for (uint64_t i = 0; i < o.threads; i++) {
		struct thr *t = &thrs[i];
		printf("%s{\"thread\":%u,\"proc\":%llu,\"cpu\":", i ? "," : "", t->idx,
		       (unsigned long long)proc_of(i));
		if (t->cpu >= 0)
			printf("%d", t->cpu);
		else
			printf("null");
		printf(",\"last_cpu\":%d,\"io\":\"%s\",\"conns\":%llu,\"conns_ok\":%llu,"
		       "\"conns_failed\":%llu,\"bytes_verified\":%llu,\"cpu_user_s\":%.6f,"
		       "\"cpu_sys_s\":%.6f,\"latency_count\":%zu}",
		       t->last_cpu, io_names[t->io], (unsigned long long)t->nconns,
		       (unsigned long long)t->conns_ok, (unsigned long long)t->conns_failed,
		       (unsigned long long)t->bytes_verified, t->cpu_user_s, t->cpu_sys_s,
		       t->nsamples);
	}
	printf("],");
}

/* Write every latency sample as "thread nanoseconds" lines to --samples-file. */
static void write_samples_file(void)
{
	FILE *f = fopen(o.samples_file, "w");
	if (!f)
		net_die("cannot write %s: %s", o.samples_file, strerror(errno));
	for (uint64_t i = 0; i < o.threads; i++)
		for (size_t j = 0; j < thrs[i].nsamples; j++)
			fprintf(f, "%llu %llu\n", (unsigned long long)i,
				(unsigned long long)thrs[i].samples[j]);
	if (fclose(f) != 0)
		net_die("cannot write %s: %s", o.samples_file, strerror(errno));
}

/* Print the one JSON result object (docs/programs.md) to stdout. */
static void print_result(bool ok, double wall_s, uint64_t mark_end_rt)
{
	/* --procs: the worker processes (reaped by now) count with this one. */
	struct rusage ru, ch;
	getrusage(RUSAGE_SELF, &ru);
	getrusage(RUSAGE_CHILDREN, &ch);
	timeradd(&ru.ru_utime, &ch.ru_utime, &ru.ru_utime);
	timeradd(&ru.ru_stime, &ch.ru_stime, &ru.ru_stime);
	bool st = o.wl == W_STREAM, pp = o.wl == W_PINGPONG, bu = o.wl == W_BURST, crr = o.wl == W_CRR;
	uint64_t expected = 0;
	if (sh->stopped_early)
		for (uint64_t i = 0; i < o.conns; i++)
			expected += conns[i].total;
	else
		expected = crr ? o.transactions * o.msg_size
			       : o.conns * (pp   ? o.msg_size * o.round_trips
					    : bu ? o.burst_size * o.bursts
						 : o.bytes);
	uint64_t conns_ok = 0, conns_failed = 0, bytes_sent = 0, bytes_verified = 0;
	size_t nsamples = 0;
	for (uint64_t i = 0; i < o.threads; i++) {
		conns_ok += thrs[i].conns_ok;
		conns_failed += thrs[i].conns_failed;
		bytes_sent += thrs[i].bytes_sent;
		bytes_verified += thrs[i].bytes_verified;
		nsamples += thrs[i].nsamples;
	}
	/* Every thread's samples in one sorted array: the percentiles are exact over all of them. */
	uint64_t *samples = malloc((nsamples ? nsamples : 1) * sizeof(*samples));
	if (!samples)
		net_die("out of memory for latency samples");
	for (uint64_t i = 0, k = 0; i < o.threads; i++) {
		memcpy(samples + k, thrs[i].samples, thrs[i].nsamples * sizeof(*samples));
		k += thrs[i].nsamples;
	}

	printf("{\"tool\":\"sb-client\",\"format\":1,\"ok\":%s,\"workload\":\"%s\",\"params\":{",
	       ok ? "true" : "false", workload_names[o.wl]);
	printf("\"conns\":%llu,", (unsigned long long)o.conns);
	json_opt_u64("bytes", st, o.bytes);
	putchar(',');
	json_opt_u64("chunk", st || bu, o.chunk);
	putchar(',');
	json_opt_u64("msg_size", pp || crr, o.msg_size);
	putchar(',');
	json_opt_u64("round_trips", pp, o.round_trips);
	putchar(',');
	json_opt_u64("burst_size", bu, o.burst_size);
	putchar(',');
	json_opt_u64("bursts", bu, o.bursts);
	putchar(',');
	json_opt_u64("transactions", crr, o.transactions);
	printf(",\"seed\":%llu,\"timeout_s\":%.17g,\"stall_s\":%.17g,\"threads\":%llu,\"cpus\":",
	       (unsigned long long)o.seed, o.timeout_s, o.stall_s, (unsigned long long)o.threads);
	if (o.cpus_text)
		json_str(o.cpus_text);
	else
		printf("null");
	printf(",\"io\":\"%s\",\"source_addrs\":%llu,\"procs\":%llu,\"hold\":%s},", io_names[o.io],
	       (unsigned long long)o.source_addrs, (unsigned long long)o.procs,
	       o.hold ? "true" : "false");
	printf("\"peak_open\":%llu,", (unsigned long long)sh->peak_open);
	printf("\"stopped_early\":%s,", sh->stopped_early ? "true" : "false");
	printf("\"conns_ok\":%llu,\"conns_failed\":%llu,", (unsigned long long)conns_ok,
	       (unsigned long long)conns_failed);
	printf("\"bytes_sent\":%llu,\"bytes_verified\":%llu,\"bytes_expected\":%llu,",
	       (unsigned long long)bytes_sent, (unsigned long long)bytes_verified,
	       (unsigned long long)expected);
	printf("\"wall_s\":%.9f,\"goodput_bytes_per_s\":%.1f,", wall_s,
	       wall_s > 0 ? (double)bytes_verified / wall_s : 0.0);
	printf("\"start_realtime_ns\":%llu,\"end_realtime_ns\":%llu,", (unsigned long long)mark_start_rt,
	       (unsigned long long)mark_end_rt);

	qsort(samples, nsamples, sizeof(*samples), cmp_u64);
	printf("\"latency_ns\":{\"count\":%zu", nsamples);
	if (nsamples) {
		long double sum = 0;
		for (size_t i = 0; i < nsamples; i++)
			sum += samples[i];
		printf(",\"min\":%llu,\"mean\":%.1f", (unsigned long long)samples[0],
		       (double)(sum / nsamples));
		static const struct {
			const char *k;
			double p;
		} ps[] = {{"p50", 50}, {"p90", 90}, {"p99", 99}, {"p999", 99.9}};
		for (size_t i = 0; i < sizeof(ps) / sizeof(ps[0]); i++)
			printf(",\"%s\":%llu", ps[i].k,
			       (unsigned long long)percentile(samples, nsamples, ps[i].p));
		printf(",\"max\":%llu}", (unsigned long long)samples[nsamples - 1]);
	} else {
		printf(",\"min\":null,\"mean\":null,\"p50\":null,\"p90\":null,\"p99\":null,"
		       "\"p999\":null,\"max\":null}");
	}
	printf(",\"hist\":{\"scheme\":\"log2-64\",\"unit\":\"ns\",\"buckets\":[");
	for (size_t i = 0; i < nsamples;) {
		uint64_t lo, hi;
		bucket_of(samples[i], &lo, &hi);
		size_t j = i;
		while (j < nsamples && samples[j] < hi)
			j++;
		printf("%s[%llu,%llu,%zu]", i ? "," : "", (unsigned long long)lo,
		       (unsigned long long)hi, j - i);
		i = j;
	}
	printf("]},");
	free(samples);
	print_threads();
	print_tcp_info();

	if (sh->have_mismatch) {
		printf("\"mismatch\":{\"conn\":%u,\"offset\":%llu,\"expected\":%u,\"got\":%u,\"source\":",
		       sh->mismatch.conn, (unsigned long long)sh->mismatch.offset, sh->mismatch.expected,
		       sh->mismatch.got);
		if (sh->mismatch.src_run)
			printf("{\"at\":%llu,\"conn\":%u,\"offset\":%llu,\"bytes\":%llu}},",
			       (unsigned long long)sh->mismatch.src_at, sh->mismatch.src_conn,
			       (unsigned long long)sh->mismatch.src_offset,
			       (unsigned long long)sh->mismatch.src_run);
		else
			printf("null},");
	} else
		printf("\"mismatch\":null,");
	printf("\"errors\":[");
	for (uint64_t i = 0; i < sh->errors_total && i < MAX_LISTED_ERRORS; i++) {
		printf("%s{\"conn\":%u,\"error\":", i ? "," : "", sh->errs[i].conn);
		json_str(sh->errs[i].what);
		printf(",\"offset\":%llu}", (unsigned long long)sh->errs[i].offset);
	}
	printf("],\"errors_total\":%llu,", (unsigned long long)sh->errors_total);
	printf("\"cpu_user_s\":%.6f,\"cpu_sys_s\":%.6f}\n",
	       ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6,
	       ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6);
	fflush(stdout);
}

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sb-client --connect ADDR:PORT --workload stream|pingpong|burst|crr [options]\n"
	    "  --conns N            concurrent connections (default 1)\n"
	    "  --bytes B            stream: bytes per connection (default 104857600)\n"
	    "  --chunk C            stream, burst: write size (default 131072)\n"
	    "  --msg-size M         pingpong, crr: message size (default 64)\n"
	    "  --round-trips K      pingpong: round trips per connection (default 1000)\n"
	    "  --burst-size S       burst: bytes per burst (default 1048576)\n"
	    "  --bursts R           burst: bursts per connection (default 10)\n"
	    "  --transactions T     crr: connections in all, each one request and its response\n"
	    "                       (default 1000; --conns of them at a time)\n"
	    "  --seed X             payload seed (default 1)\n"
	    "  --timeout SECONDS    whole-run deadline (default 120)\n"
	    "  --stall SECONDS      fail a connection that moved no byte for this long (default 10;\n"
	    "                       0 = off)\n"
	    "  --threads N          threads sharing the connections, each its own epoll loop\n"
	    "                       (default 1, at most --conns)\n"
	    "  --cpus LIST          pin thread t to the t-th CPU of LIST (e.g. 0,2-3; cycled)\n"
	    "  --io MODE            auto (default), epoll, blocking, busy-poll or split: blocking and\n"
	    "                       busy-poll serve one ping-pong connection per thread (auto:\n"
	    "                       blocking where that holds, else epoll); split (stream): each\n"
	    "                       connection gets a writing and a reading thread\n"
	    "  --source-addrs N     bind connection c to 127.0.0.1 + (c mod N) (loopback IPv4\n"
	    "                       server; each address has its own ephemeral ports)\n"
	    "  --procs N            run the threads in N processes (default 1, at most --threads):\n"
	    "                       each has its own RLIMIT_NOFILE, results stay one JSON object\n"
	    "  --hold 0|1           1: every connection stays open once it got its last byte back\n"
	    "                       and half-closes only when all have (all --conns open at once)\n"
	    "  --samples-file PATH  write every latency sample as 'thread ns' lines\n"
	    "stream: SIGINT stops sending; each connection then expects back what it sent.\n"
	    "Prints one JSON object (docs/programs.md); exit 0 when every byte came back intact,\n"
	    "1 on any error, 2 on bad arguments.\n");
}

enum {
	O_CONNECT = 256,
	O_WORKLOAD,
	O_CONNS,
	O_BYTES,
	O_CHUNK,
	O_MSG,
	O_RT,
	O_BSIZE,
	O_BURSTS,
	O_TXNS,
	O_SEED,
	O_TIMEOUT,
	O_STALL,
	O_THREADS,
	O_CPUS,
	O_IO,
	O_SOURCES,
	O_SAMPLES,
	O_PROCS,
	O_HOLD,
	O_HELP
};

/* A number of seconds for opt: > 0 (or >= 0 when zero_ok), at most SECONDS_MAX; usage error otherwise. */
static double parse_seconds(const char *opt, const char *s, bool zero_ok)
{
	char *end;
	errno = 0;
	double v = strtod(s, &end);
	if (errno || *end || end == s || !(v > 0 || (zero_ok && v == 0)))
		net_usage_error("%s: expected a number of seconds %s 0, got '%s'", opt,
				zero_ok ? ">=" : ">", s);
	if (v > SECONDS_MAX)
		net_usage_error("%s: %s is larger than the maximum %d", opt, s, SECONDS_MAX);
	return v;
}

/* Parse --cpus: comma-separated CPU numbers and ranges (a-b), each a CPU this process may run on.
 */
static void parse_cpus(const char *s)
{
	cpu_set_t allowed;
	CPU_ZERO(&allowed);
	if (sched_getaffinity(0, sizeof(allowed), &allowed) < 0)
		net_die("sched_getaffinity: %s", strerror(errno));
	o.cpus_text = s;
	o.ncpus = 0;
	const char *p = s;
	for (;;) {
		char *end;
		errno = 0;
		if (*p < '0' || *p > '9')
			net_usage_error("--cpus: expected a list like 0,2-3, got '%s'", s);
		unsigned long a = strtoul(p, &end, 10), b = a;
		if (*end == '-') {
			p = end + 1;
			if (*p < '0' || *p > '9')
				net_usage_error("--cpus: expected a list like 0,2-3, got '%s'", s);
			b = strtoul(p, &end, 10);
		}
		if (errno || b < a || (*end && *end != ','))
			net_usage_error("--cpus: expected a list like 0,2-3, got '%s'", s);
		for (unsigned long c = a; c <= b; c++) {
			if (c >= CPU_SETSIZE || !CPU_ISSET(c, &allowed))
				net_usage_error("--cpus: CPU %lu is not one this process may run on "
						"(%d CPUs online)",
						c, CPU_COUNT(&allowed));
			if (o.ncpus == THREADS_MAX)
				net_usage_error("--cpus: more than %d CPUs listed", THREADS_MAX);
			o.cpus[o.ncpus++] = (int)c;
		}
		if (!*end)
			break;
		p = end + 1;
	}
}

/* Parse the command line into o; bad arguments end with exit 2. */
static void parse_args(int argc, char **argv)
{
	static const struct option lo[] = {
	    {"connect", required_argument, 0, O_CONNECT},
	    {"workload", required_argument, 0, O_WORKLOAD},
	    {"conns", required_argument, 0, O_CONNS},
	    {"bytes", required_argument, 0, O_BYTES},
	    {"chunk", required_argument, 0, O_CHUNK},
	    {"msg-size", required_argument, 0, O_MSG},
	    {"round-trips", required_argument, 0, O_RT},
	    {"burst-size", required_argument, 0, O_BSIZE},
	    {"bursts", required_argument, 0, O_BURSTS},
	    {"transactions", required_argument, 0, O_TXNS},
	    {"seed", required_argument, 0, O_SEED},
	    {"timeout", required_argument, 0, O_TIMEOUT},
	    {"stall", required_argument, 0, O_STALL},
	    {"threads", required_argument, 0, O_THREADS},
	    {"cpus", required_argument, 0, O_CPUS},
	    {"io", required_argument, 0, O_IO},
	    {"source-addrs", required_argument, 0, O_SOURCES},
	    {"samples-file", required_argument, 0, O_SAMPLES},
	    {"procs", required_argument, 0, O_PROCS},
	    {"hold", required_argument, 0, O_HOLD},
	    {"help", no_argument, 0, O_HELP},
	    {0, 0, 0, 0},
	};
	o = (struct opts){.wl = -1,
			  .conns = 1,
			  .bytes = 104857600,
			  .chunk = 131072,
			  .msg_size = 64,
			  .round_trips = 1000,
			  .burst_size = 1048576,
			  .bursts = 10,
			  .transactions = 1000,
			  .seed = 1,
			  .threads = 1,
			  .procs = 1,
			  .timeout_s = 120,
			  .stall_s = 10};
	bool given[O_HELP + 1] = {0};
	int c;
	while ((c = net_getopt(argc, argv, lo)) != -1) {
		if (c >= O_CONNECT && c <= O_HELP)
			given[c] = true;
		switch (c) {
		case O_CONNECT:
			o.connect = optarg;
			break;
		case O_WORKLOAD:
			if (!strcmp(optarg, "stream"))
				o.wl = W_STREAM;
			else if (!strcmp(optarg, "pingpong"))
				o.wl = W_PINGPONG;
			else if (!strcmp(optarg, "burst"))
				o.wl = W_BURST;
			else if (!strcmp(optarg, "crr"))
				o.wl = W_CRR;
			else
				net_usage_error(
				    "--workload: expected stream, pingpong, burst or crr, got '%s'",
				    optarg);
			break;
		case O_CONNS:
			o.conns = net_parse_u64("--conns", optarg, 1000000);
			break;
		case O_BYTES:
			o.bytes = net_parse_u64("--bytes", optarg, 1ull << 50);
			break;
		case O_CHUNK:
			o.chunk = net_parse_u64("--chunk", optarg, 64u << 20);
			break;
		case O_MSG:
			o.msg_size = net_parse_u64("--msg-size", optarg, 1u << 30);
			break;
		case O_RT:
			o.round_trips = net_parse_u64("--round-trips", optarg, 1ull << 40);
			break;
		case O_BSIZE:
			o.burst_size = net_parse_u64("--burst-size", optarg, 1ull << 40);
			break;
		case O_BURSTS:
			o.bursts = net_parse_u64("--bursts", optarg, 1ull << 40);
			break;
		case O_TXNS:
			o.transactions = net_parse_u64("--transactions", optarg, UINT32_MAX);
			break;
		case O_SEED:
			o.seed = net_parse_u64("--seed", optarg, UINT64_MAX);
			break;
		case O_TIMEOUT:
			o.timeout_s = parse_seconds("--timeout", optarg, false);
			break;
		case O_STALL:
			o.stall_s = parse_seconds("--stall", optarg, true);
			break;
		case O_THREADS:
			o.threads = net_parse_u64("--threads", optarg, THREADS_MAX);
			break;
		case O_CPUS:
			parse_cpus(optarg);
			break;
		case O_IO: {
			int m = -1;
			for (int i = 0; i < IO_MODES; i++)
				if (!strcmp(optarg, io_names[i]))
					m = i;
			if (m < 0)
				net_usage_error("--io: expected auto, epoll, blocking, busy-poll or split, "
						"got '%s'",
						optarg);
			o.io = (enum io_mode)m;
			break;
		}
		case O_SOURCES:
			o.source_addrs = net_parse_u64("--source-addrs", optarg, SOURCE_ADDRS_MAX);
			break;
		case O_SAMPLES:
			o.samples_file = optarg;
			break;
		case O_PROCS:
			o.procs = net_parse_u64("--procs", optarg, PROCS_MAX);
			break;
		case O_HOLD:
			o.hold = net_parse_u64("--hold", optarg, 1) == 1;
			break;
		case O_HELP:
			usage(stdout);
			exit(0);
		}
	}
	if (!o.connect)
		net_usage_error("--connect ADDR:PORT is required");
	if ((int)o.wl < 0)
		net_usage_error("--workload stream|pingpong|burst|crr is required");
	static const struct {
		int opt;
		const char *name;
		unsigned mask; /* workloads it applies to: 1 stream, 2 pingpong, 4 burst, 8 crr */
	} scope[] = {{O_BYTES, "--bytes", 1},	   {O_CHUNK, "--chunk", 5},
		     {O_MSG, "--msg-size", 10},	   {O_RT, "--round-trips", 2},
		     {O_BSIZE, "--burst-size", 4}, {O_BURSTS, "--bursts", 4},
		     {O_TXNS, "--transactions", 8}};
	for (size_t i = 0; i < sizeof(scope) / sizeof(scope[0]); i++)
		if (given[scope[i].opt] && !(scope[i].mask & (1u << o.wl)))
			net_usage_error("%s does not apply to the %s workload", scope[i].name,
					workload_names[o.wl]);
	struct {
		const char *name;
		uint64_t v;
	} pos[] = {{"--conns", o.conns},	   {"--chunk", o.chunk},
		   {"--msg-size", o.msg_size},	   {"--round-trips", o.round_trips},
		   {"--burst-size", o.burst_size}, {"--bursts", o.bursts},
		   {"--transactions", o.transactions}, {"--threads", o.threads},
		   {"--procs", o.procs}};
	for (size_t i = 0; i < sizeof(pos) / sizeof(pos[0]); i++)
		if (pos[i].v == 0)
			net_usage_error("%s must be at least 1", pos[i].name);
	if (o.io == IO_SPLIT) {
		/* Two threads per connection: --threads is theirs, not the user's. */
		if (o.wl != W_STREAM || given[O_THREADS] || o.conns > THREADS_MAX / 2)
			net_usage_error("--io split needs the stream workload, no --threads and --conns "
					"at most %d (two threads per connection)",
					THREADS_MAX / 2);
		o.threads = 2 * o.conns;
	}
	if (given[O_SOURCES] && o.source_addrs == 0)
		net_usage_error("--source-addrs must be at least 1");
	if (o.threads > o.conns && o.io != IO_SPLIT)
		net_usage_error("--threads %llu is more than --conns %llu: a thread needs a connection",
				(unsigned long long)o.threads, (unsigned long long)o.conns);
	if (o.procs > o.threads)
		net_usage_error("--procs %llu is more than --threads %llu: a process runs threads",
				(unsigned long long)o.procs, (unsigned long long)o.threads);
	if (o.procs > 1 && o.io == IO_SPLIT)
		net_usage_error("--procs needs --io other than split");
	if (o.hold && (o.wl == W_CRR || (o.io != IO_AUTO && o.io != IO_EPOLL)))
		net_usage_error("--hold 1 needs the stream, pingpong or burst workload and --io auto or "
				"epoll");
	if (o.io == IO_BLOCKING &&
	    (o.wl != W_PINGPONG || o.conns != o.threads || o.msg_size > BLOCKING_MSG_MAX))
		net_usage_error("--io blocking needs the pingpong workload, one connection per "
				"thread (--conns = --threads) and --msg-size at most %d",
				BLOCKING_MSG_MAX);
	uint64_t per_conn = o.bytes;
	if ((o.wl == W_PINGPONG && __builtin_mul_overflow(o.msg_size, o.round_trips, &per_conn)) ||
	    (o.wl == W_BURST && __builtin_mul_overflow(o.burst_size, o.bursts, &per_conn)) ||
	    per_conn > (1ull << 50))
		net_usage_error("bytes per connection too large (at most 2^50)");
}

/* --io split: connect every connection (blocking) before the threads start; a connection that
 * fails counts as its reading thread's. */
static void split_connect(void)
{
	struct timeval tick = {.tv_sec = 0, .tv_usec = BLOCKING_TICK_US};
	for (uint64_t i = 0; i < o.conns; i++) {
		struct thr *t = &thrs[2 * i + 1];
		struct conn *c = &conns[i];
		t->nactive = 1;
		int r = conn_connect(t, c, 0);
		if (c->state != C_CONNECTING) /* no socket, or no source address: failed already */
			continue;
		if (r < 0) {
			fail(t, c, 0, "connect: %s", strerror(errno));
			continue;
		}
		(void)setsockopt(c->fd, SOL_SOCKET, SO_RCVTIMEO, &tick, sizeof(tick));
		(void)setsockopt(c->fd, SOL_SOCKET, SO_SNDTIMEO, &tick, sizeof(tick));
		c->state = C_RUNNING;
		c->start_ns = c->progress_ns = net_now_ns();
	}
}

/* How thread t moves its bytes: blocking for one ping-pong connection unless told otherwise. */
static enum io_mode thread_io(uint64_t nconns)
{
	bool one_pp = nconns == 1 && o.wl == W_PINGPONG && o.msg_size <= BLOCKING_MSG_MAX && !o.hold;
	if (o.io == IO_AUTO)
		return one_pp ? IO_BLOCKING : IO_EPOLL;
	return o.io;
}

/* Run threads [first, end): in this thread when it is one, else in threads of their own. */
static void run_threads(uint64_t first, uint64_t end)
{
	if (end - first == 1) {
		thread_main(&thrs[first]);
		return;
	}
	for (uint64_t i = first; i < end; i++) {
		int err = pthread_create(&thrs[i].th, NULL, thread_main, &thrs[i]);
		if (err)
			net_die("pthread_create: %s", strerror(err));
	}
	for (uint64_t i = first; i < end; i++)
		pthread_join(thrs[i].th, NULL);
}

/* Write all n bytes of buf to fd; exits on error. */
static void write_all(int fd, const void *buf, size_t n)
{
	for (const char *p = buf; n;) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			net_die("write(samples): %s", strerror(errno));
		p += w;
		n -= (size_t)w;
	}
}

/* Worker process p of --procs: die with the main process, run its threads, hand their latency
 * samples over in memfd (their counters and connections are in shared memory already). */
static void proc_main(uint64_t p, pid_t parent, int memfd)
{
	if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)
		_exit(70); /* the main process is gone already */
	uint64_t first = p * o.threads / o.procs, end = (p + 1) * o.threads / o.procs;
	run_threads(first, end);
	for (uint64_t i = first; i < end; i++)
		write_all(memfd, thrs[i].samples, thrs[i].nsamples * sizeof(*thrs[i].samples));
	_exit(0);
}

/* Thread t's samples, thrs[t].nsamples of them, from the memfd of its process at *off. */
static void read_samples(struct thr *t, int memfd, off_t *off)
{
	size_t bytes = t->nsamples * sizeof(*t->samples);
	t->samples = malloc(bytes ? bytes : 1);
	if (!t->samples)
		net_die("out of memory for latency samples");
	for (size_t got = 0; got < bytes;) {
		ssize_t r = pread(memfd, (char *)t->samples + got, bytes - got, *off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			net_die("read(samples): %s", r < 0 ? strerror(errno) : "short");
		got += (size_t)r;
		*off += r;
	}
}

/* --procs: fork the worker processes (process p runs threads [p * threads / procs, ...)), wait
 * for them all and collect their samples. A process that did not end cleanly fails the
 * connections it left unfinished, naming how it ended; its samples are lost. */
static void run_procs(void)
{
	pid_t parent = getpid(), *pids = calloc(o.procs, sizeof(*pids));
	int *memfds = calloc(o.procs, sizeof(*memfds));
	if (!pids || !memfds)
		net_die("out of memory");
	fflush(stdout); /* nothing buffered may be written twice */
	for (uint64_t p = 0; p < o.procs; p++) {
		memfds[p] = memfd_create("sb-client-samples", MFD_CLOEXEC);
		if (memfds[p] < 0)
			net_die("memfd_create: %s", strerror(errno));
		pids[p] = fork();
		if (pids[p] < 0)
			net_die("fork: %s", strerror(errno));
		if (pids[p] == 0)
			proc_main(p, parent, memfds[p]);
	}
	for (uint64_t p = 0; p < o.procs; p++) {
		int status;
		while (waitpid(pids[p], &status, 0) < 0)
			if (errno != EINTR)
				net_die("waitpid: %s", strerror(errno));
		uint64_t first = p * o.threads / o.procs, end = (p + 1) * o.threads / o.procs;
		off_t off = 0;
		for (uint64_t i = first; i < end; i++) {
			struct thr *t = &thrs[i];
			if (WIFEXITED(status) && WEXITSTATUS(status) == 0) {
				read_samples(t, memfds[p], &off);
				continue;
			}
			t->samples = NULL;
			t->nsamples = 0;
			for (uint64_t k = 0; k < t->nconns; k++) {
				struct conn *c = &t->conns[k];
				if (c->state != C_CONNECTING && c->state != C_RUNNING)
					continue;
				c->fd = -1; /* the process's descriptor, gone with it */
				if (WIFSIGNALED(status))
					fail(t, c, c->recvd, "client process %llu ended by signal %d",
					     (unsigned long long)p, WTERMSIG(status));
				else
					fail(t, c, c->recvd, "client process %llu ended with status %d",
					     (unsigned long long)p, WEXITSTATUS(status));
			}
		}
		close(memfds[p]);
	}
	free(pids);
	free(memfds);
}

int main(int argc, char **argv)
{
	net_prog = "sb-client";
	parse_args(argc, argv);

	if (net_parse_addr(o.connect, &dest, &dest_len) < 0)
		net_usage_error("--connect: expected ADDR:PORT with a numeric address, got '%s'",
				o.connect);
	if (o.source_addrs &&
	    (dest.ss_family != AF_INET ||
	     (ntohl(((struct sockaddr_in *)&dest)->sin_addr.s_addr) >> 24) != 127))
		net_usage_error("--source-addrs needs a server on loopback IPv4 (127.0.0.0/8), got "
				"'%s'",
				o.connect);

	signal(SIGPIPE, SIG_IGN);
	struct sigaction tick_sa = {.sa_handler = on_tick}; /* no SA_RESTART: the blocked call returns */
	sigemptyset(&tick_sa.sa_mask);
	sigaction(TICK_SIGNAL, &tick_sa, NULL);
	if (o.wl == W_STREAM) {
		/* SIGINT: stop sending and verify the echo of what was sent. Repeating it changes
		 * nothing (over SSH the process group's signal and the launcher's forwarded copy both
		 * arrive); SIGTERM still ends the client at once. */
		stop_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (stop_efd < 0)
			net_die("eventfd: %s", strerror(errno));
		struct sigaction sa = {.sa_handler = on_sigint};
		sigemptyset(&sa.sa_mask);
		sigaction(SIGINT, &sa, NULL);
	}
	net_raise_nofile();
	payload_init(o.seed);
	size_t wbuf_size = o.wl == W_PINGPONG || o.wl == W_CRR
			       ? (o.msg_size < (1u << 20) ? o.msg_size : (1u << 20))
			       : o.chunk;
	/* Shared memory: --procs worker processes run these threads and connections. */
	sh = net_shared(sizeof(*sh));
	pthread_mutexattr_t ma;
	pthread_mutexattr_init(&ma);
	pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&sh->err_lock, &ma);
	conns = net_shared(o.conns * sizeof(*conns));
	thrs = net_shared(o.threads * sizeof(*thrs));
	if (o.hold && (hold_efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0)
		net_die("eventfd: %s", strerror(errno));
	for (uint64_t i = 0; i < o.conns; i++)
		conn_init(&conns[i], i);
	for (uint64_t i = 0; i < o.threads; i++) {
		struct thr *t = &thrs[i];
		uint64_t first = o.conns * i / o.threads, end = o.conns * (i + 1) / o.threads;
		if (o.io == IO_SPLIT) { /* thread 2c writes connection c, thread 2c + 1 reads it */
			first = i / 2;
			end = i % 2 ? first + 1 : first;
			t->writer = i % 2 == 0;
		}
		t->idx = (unsigned)i;
		t->conns = conns + first;
		t->nconns = end - first;
		t->cpu = o.ncpus ? o.cpus[i % o.ncpus] : -1;
		t->io = thread_io(t->nconns);
		t->wbuf_size = wbuf_size;
		uint64_t want = o.wl == W_PINGPONG ? t->nconns * o.round_trips
				: o.wl == W_BURST  ? t->nconns * o.bursts
				: o.wl == W_CRR	   ? o.transactions / o.threads + 1
						   : t->nconns;
		t->samples_cap = want < (1u << 20) ? want : (1u << 20);
		t->samples = malloc((t->samples_cap ? t->samples_cap : 1) * sizeof(*t->samples));
		if (!t->samples)
			net_die("out of memory for latency samples");
	}
	stall_ns = (uint64_t)(o.stall_s * 1e9);

	uint64_t t0 = net_now_ns();
	deadline_ns = t0 + (uint64_t)(o.timeout_s * 1e9);
	mark_start_rt = realtime_ns();
	if (o.io == IO_SPLIT)
		split_connect();
	if (o.procs > 1)
		run_procs();
	else
		run_threads(0, o.threads);
	double wall_s = (double)(net_now_ns() - t0) / 1e9;
	for (uint64_t i = 0; i < o.conns; i++)
		if (conns[i].fd >= 0) /* --io split: the sockets every thread is done with */
			close(conns[i].fd);
	uint64_t mark_end_rt = 0, conns_failed = 0;
	for (uint64_t i = 0; i < o.threads; i++) {
		if (thrs[i].mark_end_rt > mark_end_rt)
			mark_end_rt = thrs[i].mark_end_rt;
		conns_failed += thrs[i].conns_failed;
	}
	if (!mark_end_rt) /* no connection got all its bytes back: the end is when the client stopped */
		mark_end_rt = realtime_ns();
	if (o.samples_file)
		write_samples_file();

	bool ok = conns_failed == 0 && sh->errors_total == 0;
	print_result(ok, wall_s, mark_end_rt);
	if (!ok) {
		const struct error_rec *e = &sh->errs[0];
		fprintf(stderr,
			"%s: %llu of %llu connections failed (first: conn %u: %s at offset %llu)\n",
			net_prog, (unsigned long long)conns_failed,
			(unsigned long long)(o.wl == W_CRR ? o.transactions : o.conns),
			e->conn, e->what, (unsigned long long)e->offset);
		return 1;
	}
	return 0;
}
