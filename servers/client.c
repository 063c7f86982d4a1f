// SPDX-License-Identifier: MIT
/* sb-client: the verifying load client (docs/programs.md).
 *
 * One thread, one epoll instance, all N connections non-blocking. Each connection writes the moment
 * its connect() completes, with no pause: that timing is what exposes servers that lose data sent
 * before they accepted the socket. Every received byte is checked against the byte that was sent at
 * that offset; a mismatch, short read, reset, timeout or extra byte fails the connection, the JSON
 * says so ("ok": false) and the exit code is 1.
 *
 * Payload: byte o of connection c is P[o mod 256 KiB] ^ K(c, o / 256 KiB), where P is a 256 KiB
 * pattern drawn from splitmix64(seed) and K a 64-bit splitmix64 value per (connection, 256 KiB
 * block), applied a word at a time. It is position dependent (any loss, duplication, reordering
 * between or within blocks or corruption shows), differs between connections and seeds, and is
 * generated and checked in one pass at memory speed without storing what was sent. */
#define _GNU_SOURCE
#include "net.h"

#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define PAT_BYTES (256u * 1024u)
#define PAT_WORDS (PAT_BYTES / 8u)
#define RBUF_BYTES (256u * 1024u)
#define MAX_LISTED_ERRORS 100

enum workload { W_STREAM, W_PINGPONG, W_BURST, W_CRR };
static const char *const workload_names[] = {"stream", "pingpong", "burst", "crr"};

struct opts {
	const char *connect;
	enum workload wl;
	uint64_t conns, bytes, chunk, msg_size, round_trips, burst_size, bursts, transactions, seed;
	double timeout_s;
};

enum cstate { C_CONNECTING, C_RUNNING, C_DONE, C_FAILED };

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
	bool shut_wr;
};

struct error_rec {
	uint32_t conn;
	uint64_t offset;
	char what[96];
};

static struct opts o;
static uint64_t pattern[PAT_WORDS];
static uint64_t seed_key;

static struct conn *conns;
static uint64_t nactive;
static int ep;
static uint8_t *wbuf, *rbuf;
static size_t wbuf_size;

static uint64_t *samples;
static size_t nsamples, samples_cap;

static struct error_rec errs[MAX_LISTED_ERRORS];
static uint64_t errors_total, conns_failed, conns_ok, bytes_sent, bytes_verified;
static bool have_mismatch;
/* stream: SIGINT asks every connection to stop sending where it is, half-close and verify the
 * echo of what it sent (a bulk load of unknown length, stopped by the orchestrator). */
static volatile sig_atomic_t stop_requested;
static bool stopped_early;
/* The transfer's marks on CLOCK_REALTIME (the CPU sampler's clock, docs/programs.md): just before
 * the first connect(), and when the last byte of a connection was verified (the latest one). */
static uint64_t mark_start_rt, mark_end_rt;
static struct {
	uint32_t conn;
	uint64_t offset;
	unsigned expected, got;
} mismatch;

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

/* Append one latency sample in nanoseconds. */
/* CLOCK_REALTIME in nanoseconds: the clock that the marks share with sb-cpustat's readings. */
static uint64_t realtime_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void add_sample(uint64_t ns)
{
	if (nsamples == samples_cap) {
		samples_cap = samples_cap ? samples_cap * 2 : 1024;
		samples = realloc(samples, samples_cap * sizeof(*samples));
		if (!samples)
			net_die("out of memory for latency samples");
	}
	samples[nsamples++] = ns;
}

/* Set conn's epoll interest to ev (no system call when it is already that). */
static void set_events(struct conn *c, uint32_t ev) { net_epoll_mod(ep, c->fd, c, &c->events, ev); }

/* End conn: close it and count it as passed or failed. */
static void finish(struct conn *c, enum cstate st)
{
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->state = st;
	if (st == C_DONE)
		conns_ok++;
	else
		conns_failed++;
	nactive--;
}

/* Record an error for conn at stream offset off and fail the connection. */
static void fail(struct conn *c, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct conn *c, uint64_t off, const char *fmt, ...)
{
	if (errors_total < MAX_LISTED_ERRORS) {
		struct error_rec *e = &errs[errors_total];
		e->conn = c->id;
		e->offset = off;
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(e->what, sizeof(e->what), fmt, ap);
		va_end(ap);
	}
	errors_total++;
	finish(c, C_FAILED);
}

/* Name a socket error the way docs/programs.md lists them. */
static const char *errno_name(int err)
{
	if (err == ECONNRESET || err == EPIPE)
		return "reset";
	return strerror(err);
}

/* wbuf holds payload bytes [wbuf_off, wbuf_off + wbuf_len) of connection wbuf_conn: what a
 * partial write left over is written next without generating it again. */
static uint32_t wbuf_conn = UINT32_MAX;
static uint64_t wbuf_off, wbuf_len;

/* One write() of the current message/burst/stream: the rest of the last chunk if a partial
 * write left some, else a new chunk of up to wbuf_size bytes. Half-closes after the last byte.
 * Returns false when the connection failed. */
static bool do_send(struct conn *c)
{
	if (c->sent < c->limit) {
		uint64_t room = c->limit - c->sent;
		const uint8_t *p;
		size_t n;
		if (wbuf_conn == c->id && c->sent >= wbuf_off && c->sent < wbuf_off + wbuf_len) {
			p = wbuf + (c->sent - wbuf_off);
			n = (size_t)(wbuf_off + wbuf_len - c->sent);
		} else {
			n = room < wbuf_size ? (size_t)room : wbuf_size;
			payload_fill(c->id, c->sent, wbuf, n);
			wbuf_conn = c->id;
			wbuf_off = c->sent;
			wbuf_len = n;
			p = wbuf;
		}
		if (n > room)
			n = (size_t)room;
		if (o.wl != W_STREAM && c->sent % c->unit == 0)
			c->unit_start_ns = net_now_ns();
		ssize_t w = write(c->fd, p, n);
		if (w < 0) {
			if (errno == EAGAIN || errno == EINTR)
				return true;
			fail(c, c->recvd, "%s", errno_name(errno));
			return false;
		}
		c->sent += (uint64_t)w;
		bytes_sent += (uint64_t)w;
	}
	if (c->sent == c->total && !c->shut_wr) {
		if (shutdown(c->fd, SHUT_WR) < 0) {
			fail(c, c->recvd, "shutdown: %s", errno_name(errno));
			return false;
		}
		c->shut_wr = true;
	}
	return true;
}

/* One read(): verify, account finished messages/bursts and start the next one. Returns false
 * when the connection ended (passed or failed). */
static bool do_recv(struct conn *c)
{
	ssize_t r = read(c->fd, rbuf, RBUF_BYTES);
	if (r < 0) {
		if (errno == EAGAIN || errno == EINTR)
			return true;
		fail(c, c->recvd, "%s", errno_name(errno));
		return false;
	}
	if (r == 0) {
		if (c->recvd == c->total) {
			if (o.wl == W_STREAM && c->total == 0)
				add_sample(net_now_ns() - c->start_ns);
			if (o.wl == W_CRR) /* connect, request, response, close: one transaction */
				add_sample(net_now_ns() - c->open_ns);
			finish(c, C_DONE);
		} else {
			fail(c, c->recvd, "short read (EOF at offset %llu)",
			     (unsigned long long)c->recvd);
		}
		return false;
	}
	size_t n = (size_t)r;
	size_t want = c->total - c->recvd < n ? (size_t)(c->total - c->recvd) : n;
	unsigned expected = 0;
	size_t ok = payload_check(c->id, c->recvd, rbuf, want, &expected);
	bytes_verified += ok;
	if (ok < want) {
		uint64_t at = c->recvd + ok;
		if (!have_mismatch) {
			have_mismatch = true;
			mismatch.conn = c->id;
			mismatch.offset = at;
			mismatch.expected = expected;
			mismatch.got = rbuf[ok];
		}
		c->recvd = at;
		fail(c, at, "mismatch");
		return false;
	}
	c->recvd += want;
	if (want < n || c->recvd > c->sent) {
		fail(c, c->recvd, "extra bytes");
		return false;
	}
	if (c->recvd == c->total)
		mark_end_rt = realtime_ns();
	if (o.wl == W_STREAM && c->recvd == c->total)
		add_sample(net_now_ns() - c->start_ns); /* last byte verified; EOF comes next */
	if ((o.wl == W_PINGPONG || o.wl == W_BURST) && c->recvd == c->limit) {
		add_sample(net_now_ns() - c->unit_start_ns);
		if (c->limit < c->total) {
			c->limit += c->unit;
			return do_send(c);
		}
	}
	return true;
}

/* Set the interest that matches conn's state: always readable, writable while it has bytes that
 * may be sent now and the last write did not take them all. */
static void update_events(struct conn *c)
{
	set_events(c, EPOLLIN | (c->sent < c->limit ? EPOLLOUT : 0u));
}

/* connect() completed (or failed): start sending at once. */
static void on_connected(struct conn *c)
{
	int err = net_sock_error(c->fd);
	if (err) {
		fail(c, 0, "connect: %s", strerror(err));
		return;
	}
	c->state = C_RUNNING;
	c->start_ns = net_now_ns();
	if (!do_send(c))
		return;
	update_events(c);
}

/* Handle the epoll events of one connection. */
static void on_event(struct conn *c, uint32_t ev)
{
	if (c->state == C_CONNECTING) {
		on_connected(c);
		return;
	}
	if (ev & EPOLLOUT) {
		if (!do_send(c))
			return;
	}
	if (ev & (EPOLLIN | EPOLLHUP | EPOLLERR)) {
		if (!do_recv(c))
			return;
	}
	update_events(c);
}

static const struct sockaddr_storage *dst;
static socklen_t dst_len;
static uint64_t crr_next; /* crr: transactions started so far (the next one's payload id) */

/* Open one connection in slot c with payload id `id` (non-blocking connect, registered with epoll);
 * a failure to open it fails that connection. */
static void open_conn(struct conn *c, uint32_t id)
{
	*c = (struct conn){.id = id, .state = C_CONNECTING, .fd = -1, .open_ns = net_now_ns()};
	nactive++;
	c->fd = socket(dst->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (c->fd < 0) {
		fail(c, 0, "socket: %s", strerror(errno));
		return;
	}
	net_set_nodelay(c->fd);
	c->events = EPOLLOUT;
	net_epoll_add(ep, c->fd, EPOLLOUT, c);
	if (connect(c->fd, (const struct sockaddr *)dst, dst_len) < 0 && errno != EINPROGRESS)
		fail(c, 0, "connect: %s", strerror(errno));
}

/* crr: one transaction is a connection that sends one message of msg_size bytes, half-closes,
 * reads the echo back and sees the server close. Each of the --conns slots starts the next
 * transaction as soon as its last one ended (passed or failed), until --transactions were started;
 * each transaction has its own payload (its index is the connection number). */
static void crr_open(struct conn *c)
{
	uint32_t id = (uint32_t)crr_next++;
	open_conn(c, id);
	if (c->state == C_CONNECTING) {
		c->unit = c->total = c->limit = o.msg_size;
	}
}

/* crr: after an event, start the slot's next transaction if its connection ended. */
static void crr_refill(struct conn *c)
{
	while ((c->state == C_DONE || c->state == C_FAILED) && crr_next < o.transactions)
		crr_open(c);
}

/* Open every connection (non-blocking connect) and register it with epoll. */
static void open_conns(const struct sockaddr_storage *ss, socklen_t sslen)
{
	dst = ss;
	dst_len = sslen;
	if (o.wl == W_CRR) {
		for (uint64_t i = 0; i < o.conns && crr_next < o.transactions; i++) {
			crr_open(&conns[i]);
			crr_refill(&conns[i]);
		}
		return;
	}
	for (uint64_t i = 0; i < o.conns; i++) {
		struct conn *c = &conns[i];
		c->id = (uint32_t)i;
		c->state = C_CONNECTING;
		c->unit = o.wl == W_PINGPONG ? o.msg_size
			  : o.wl == W_BURST  ? o.burst_size
					     : o.bytes;
		c->total = o.wl == W_PINGPONG ? o.msg_size * o.round_trips
			   : o.wl == W_BURST  ? o.burst_size * o.bursts
					      : o.bytes;
		c->limit = o.wl == W_STREAM ? c->total : c->unit;
		if (c->unit == 0)
			c->unit = 1; /* stream of 0 bytes: only the half-close */
		nactive++;
		c->fd = socket(ss->ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
		if (c->fd < 0) {
			fail(c, 0, "socket: %s", strerror(errno));
			continue;
		}
		/* Messages go out when written: no Nagle delay on ping-pong requests or burst
		 * tails. */
		net_set_nodelay(c->fd);
		c->events = EPOLLOUT;
		net_epoll_add(ep, c->fd, EPOLLOUT, c);
		if (connect(c->fd, (const struct sockaddr *)ss, sslen) < 0 &&
		    errno != EINPROGRESS) {
			fail(c, 0, "connect: %s", strerror(errno));
			continue;
		}
		/* Completion (even immediate) is reported as EPOLLOUT. */
	}
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

static void on_sigint(int sig)
{
	(void)sig;
	stop_requested = 1;
}

/* stream, after SIGINT: each running connection now ends at the bytes it has written (what it
 * expects back), half-closing at once. */
static void stop_streams(void)
{
	stopped_early = true;
	for (uint64_t i = 0; i < o.conns; i++) {
		struct conn *c = &conns[i];
		if (c->state == C_CONNECTING) {
			finish(c, C_DONE); /* nothing sent, nothing expected */
			c->total = 0;
			continue;
		}
		if (c->state != C_RUNNING)
			continue;
		c->total = c->limit = c->sent;
		if (c->recvd == c->total)
			mark_end_rt = realtime_ns();
		if (do_send(c))
			update_events(c);
	}
}

/* Print the one JSON result object (docs/programs.md) to stdout. */
static void print_result(bool ok, double wall_s)
{
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	bool st = o.wl == W_STREAM, pp = o.wl == W_PINGPONG, bu = o.wl == W_BURST, crr = o.wl == W_CRR;
	uint64_t expected = 0;
	if (stopped_early)
		for (uint64_t i = 0; i < o.conns; i++)
			expected += conns[i].total;
	else
		expected = crr ? o.transactions * o.msg_size
			    : o.conns * (pp   ? o.msg_size * o.round_trips
					 : bu ? o.burst_size * o.bursts
					      : o.bytes);

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
	printf(",\"seed\":%llu,\"timeout_s\":%.17g},", (unsigned long long)o.seed, o.timeout_s);
	printf("\"stopped_early\":%s,", stopped_early ? "true" : "false");
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

	if (have_mismatch)
		printf("\"mismatch\":{\"conn\":%u,\"offset\":%llu,\"expected\":%u,\"got\":%u},",
		       mismatch.conn, (unsigned long long)mismatch.offset, mismatch.expected,
		       mismatch.got);
	else
		printf("\"mismatch\":null,");
	printf("\"errors\":[");
	for (uint64_t i = 0; i < errors_total && i < MAX_LISTED_ERRORS; i++) {
		printf("%s{\"conn\":%u,\"error\":", i ? "," : "", errs[i].conn);
		json_str(errs[i].what);
		printf(",\"offset\":%llu}", (unsigned long long)errs[i].offset);
	}
	printf("],\"errors_total\":%llu,", (unsigned long long)errors_total);
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
	    "                       (default 1000)\n"
	    "  --seed X             payload seed (default 1)\n"
	    "  --timeout SECONDS    whole-run deadline (default 120)\n"
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
	O_HELP
};

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
			  .timeout_s = 120};
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
		case O_TIMEOUT: {
			char *end;
			errno = 0;
			o.timeout_s = strtod(optarg, &end);
			if (errno || *end || end == optarg || !(o.timeout_s > 0) ||
			    o.timeout_s > 1e7)
				net_usage_error(
				    "--timeout: expected a number of seconds > 0, got '%s'",
				    optarg);
			break;
		}
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
		   {"--transactions", o.transactions}};
	for (size_t i = 0; i < sizeof(pos) / sizeof(pos[0]); i++)
		if (pos[i].v == 0)
			net_usage_error("%s must be at least 1", pos[i].name);
	uint64_t per_conn = o.bytes;
	if ((o.wl == W_PINGPONG && __builtin_mul_overflow(o.msg_size, o.round_trips, &per_conn)) ||
	    (o.wl == W_BURST && __builtin_mul_overflow(o.burst_size, o.bursts, &per_conn)) ||
	    per_conn > (1ull << 50))
		net_usage_error("bytes per connection too large (at most 2^50)");
}

int main(int argc, char **argv)
{
	net_prog = "sb-client";
	parse_args(argc, argv);

	struct sockaddr_storage ss;
	socklen_t sslen;
	if (net_parse_addr(o.connect, &ss, &sslen) < 0)
		net_usage_error("--connect: expected ADDR:PORT with a numeric address, got '%s'",
				o.connect);

	signal(SIGPIPE, SIG_IGN);
	if (o.wl == W_STREAM) {
		/* SIGINT: stop sending and verify the echo of what was sent. Repeating it changes
		 * nothing (over SSH the process group's signal and the launcher's forwarded copy both
		 * arrive); SIGTERM still ends the client at once. */
		struct sigaction sa = {.sa_handler = on_sigint};
		sigemptyset(&sa.sa_mask);
		sigaction(SIGINT, &sa, NULL);
	}
	net_raise_nofile();
	payload_init(o.seed);
	wbuf_size = o.wl == W_PINGPONG || o.wl == W_CRR
			? (o.msg_size < (1u << 20) ? o.msg_size : (1u << 20))
			: o.chunk;
	wbuf = malloc(wbuf_size);
	rbuf = malloc(RBUF_BYTES);
	conns = calloc(o.conns, sizeof(*conns));
	if (!wbuf || !rbuf || !conns)
		net_die("out of memory");
	size_t want_samples = o.wl == W_PINGPONG ? o.conns * o.round_trips
			      : o.wl == W_BURST	 ? o.conns * o.bursts
			      : o.wl == W_CRR	 ? o.transactions
						 : o.conns;
	samples_cap = want_samples < (1u << 20) ? want_samples : (1u << 20);
	samples = malloc((samples_cap ? samples_cap : 1) * sizeof(*samples));
	if (!samples)
		net_die("out of memory for latency samples");
	ep = net_epoll_create();

	uint64_t t0 = net_now_ns();
	uint64_t deadline = t0 + (uint64_t)(o.timeout_s * 1e9);
	mark_start_rt = realtime_ns();
	open_conns(&ss, sslen);

	struct epoll_event evs[256];
	while (nactive > 0) {
		if (stop_requested && !stopped_early)
			stop_streams();
		uint64_t now = net_now_ns();
		if (now >= deadline)
			break;
		uint64_t left_ms = (deadline - now + 999999) / 1000000;
		int n = epoll_wait(ep, evs, 256, left_ms > 60000 ? 60000 : (int)left_ms);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			net_die("epoll_wait: %s", strerror(errno));
		}
		for (int i = 0; i < n; i++) {
			struct conn *c = evs[i].data.ptr;
			if (c->state == C_CONNECTING || c->state == C_RUNNING)
				on_event(c, evs[i].events);
			if (o.wl == W_CRR)
				crr_refill(c);
		}
	}
	for (uint64_t i = 0; i < o.conns; i++) {
		struct conn *c = &conns[i];
		if (c->state == C_CONNECTING || c->state == C_RUNNING)
			fail(c, c->recvd, "timeout");
	}
	double wall_s = (double)(net_now_ns() - t0) / 1e9;
	if (!mark_end_rt) /* no connection got all its bytes back: the end is when the client stopped */
		mark_end_rt = realtime_ns();

	bool ok = conns_failed == 0 && errors_total == 0;
	print_result(ok, wall_s);
	if (!ok) {
		const struct error_rec *e = &errs[0];
		fprintf(stderr,
			"%s: %llu of %llu connections failed (first: conn %u: %s at offset %llu)\n",
			net_prog, (unsigned long long)conns_failed,
			(unsigned long long)(o.wl == W_CRR ? o.transactions : o.conns),
			e->conn, e->what, (unsigned long long)e->offset);
		return 1;
	}
	return 0;
}
