// SPDX-License-Identifier: MIT
/* sb-echo-sockmap: TCP echo server whose data path never leaves the kernel. A libbpf loader for
 * bpf/echo_sockmap.bpf.c: an sk_skb stream_verdict program, attached to a SOCKHASH keyed by socket
 * cookie (or a SOCKMAP keyed by slot), redirects every received skb to the egress of the socket
 * it came from. User space accepts, inserts, watches for half-close and closes (and echoes the
 * few clients that had half-closed before they were accepted, see below).
 * Command line and JSON lines: docs/programs.md.
 *
 * Early data, and why no byte is lost whatever the client's timing
 * ----------------------------------------------------------------
 * A client may write the moment connect() returns, long before accept(). Those bytes wait in the
 * socket's sk_receive_queue. Two naive designs lose them:
 *  - Insert after accept() and do nothing else: the verdict runs from the psock's data_ready
 *    callback (sk_psock_verdict_data_ready -> tcp_read_skb), which fires only when a new segment
 *    arrives. Bytes queued before the insertion stay queued until then; a client that sent its
 *    whole request and waits for the echo hangs (here: 549 of 1,000 such clients, 3 x 500 runs).
 *  - Insert earlier, from a sockops program at PASSIVE_ESTABLISHED: the socket then has no
 *    struct socket until accept(). Per the kernel source, sk_psock_verdict_data_ready returns
 *    early without one, and an skb redirected to it makes skb_send_sock() fail with -EINVAL in
 *    the psock backlog worker, which takes that for a hard error: it drops the skb and clears
 *    TX_ENABLED, so every later byte of that connection is dropped as well.
 * Design: insert right after accept() (the socket now has its struct socket), then kick the
 * verdict once with setsockopt(SO_RCVLOWAT, 1). sk_setsockopt() holds the socket lock around
 * tcp_set_rcvlowat(), which calls tcp_data_ready(); with data queued (or a FIN seen) that calls
 * sk->sk_data_ready, by now the psock's, and tcp_read_skb() hands every queued skb to the verdict
 * from the head of the queue, in sequence order. While we hold the socket lock, segments arriving
 * in softirq go to the socket backlog and are processed at release_sock(), after the queue has
 * been drained, so there is exactly one reader and the order holds. If a segment arrives between
 * the insertion and the kick, its own data_ready drains the whole queue first and the kick finds
 * nothing to do. The map update itself also runs under the socket lock.
 * The kernel's own fallback for this case, recv() on the socket (tcp_bpf_recvmsg_parser() calls
 * tcp_data_ready() when sk_receive_queue is not empty), works too (measured) but, reading the
 * source, then writes back the copied_seq it read before the verdict advanced it.
 * Two corner cases:
 *  - A client that also sent its FIN before the insertion: the map accepts only ESTABLISHED
 *    sockets and refuses this one (CLOSE_WAIT, EOPNOTSUPP). None of its bytes went through the
 *    verdict, so user space echoes what is queued, in order, and closes (user_io()).
 *  - The verdict never returns SK_PASS (see the BPF side), so no byte waits in user space while
 *    later bytes overtake it in the kernel; it drops the FIN's empty skb, which the backlog worker
 *    would otherwise turn into EPIPE on the socket.
 * tests/test_sockmap.py checks all of this with clients that write at once, and with clients that
 * write while the server is stopped (SIGSTOP), which widens the window at will.
 *
 * Half-close: the verdict echoes until the client's FIN. On EPOLLRDHUP the connection is polled
 * with TCP_INFO on a 1 ms timerfd tick (armed only while such connections exist) until every
 * received byte was echoed and acknowledged (tcpi_bytes_acked), then closed; close() also removes
 * the socket from the map.
 *
 * Summary: bytes_in/bytes_out are the bytes the verdict redirected (summed per-CPU counters) plus
 * those echoed in user space; errors counts connections that ended with an error or were refused
 * (map full), plus skbs the verdict had to drop. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "counters.h"
#include "echo_sockmap.h"
#include "echo_sockmap.skel.h"
#include "net.h"
#include "sockmap_common.h"

#define SERVER "sockmap"

/* Defaults: the kernel's buffer autotuning (measured best, 1 GiB stream on loopback, 6 runs each,
 * quiet host: autotuned 0.84 GiB/s median, fixed 8 MiB 0.64, 32 MiB 0.68, naive echo 0.77).
 * Why: on loopback one stream's whole echo path runs on one CPU: the client's write raises the
 * receive softirq on its CPU, the verdict queues the psock backlog work on that CPU's kworker
 * (system_wq), and the echo's receive runs there too. The worker sends only while the socket is
 * writeable (wmem < sndbuf/2), else it retries one jiffy later (4 ms at HZ=250). With the
 * autotuned buffer it ran ~155 times per GiB, sending MBs each time; with 32 MiB ~4,800 times,
 * and the extra wakeups cost more on the shared CPU than the jiffy waits (which let the client
 * run). A large --sndbuf did help when other jobs loaded the CPUs (0.51 vs 0.43 GiB/s). Values
 * above net.core.wmem_max are applied with SO_SNDBUFFORCE (this server has CAP_NET_ADMIN). */
#define DEFAULT_SNDBUF 0
#define DEFAULT_RCVBUF 0
#define DEFAULT_MAX_CONNS 65536u
#define TCP_STATE_CLOSE 7	/* tcpi_state value; the kernel enum is not in the uapi headers */
#define DRAIN_TICK_NS 1000000ll /* TCP_INFO poll period for half-closed connections */
#define USER_BUF 65536		/* buffer of a connection echoed in user space */
#define DRAIN_STALL_NS 30000000000ull /* no echo progress for this long: give up */

/* A connection; its address is the epoll tag. */
struct conn {
	int fd;
	uint64_t cookie;
	uint32_t slot; /* --map sockmap only */
	bool in_map;   /* false: echoed in user space (see conn_open) */
	bool eof;      /* user-space echo: the client's FIN was read */
	uint8_t *buf;  /* user-space echo: bytes read and not yet written back */
	size_t have, sent;
	bool draining;	     /* client half-closed; waiting until everything is echoed */
	uint64_t last_acked; /* tcpi_bytes_acked at the last progress */
	uint64_t last_progress_ns;
	struct conn *prev, *next;	      /* all connections */
	struct conn *drain_prev, *drain_next; /* draining connections */
};

static struct {
	struct echo_sockmap_bpf *skel;
	int map_fd;	/* sock_hash or sock_map */
	int slot_of_fd; /* --map sockmap: cookie -> slot */
	int kind;	/* enum echo_map_kind */
	bool parser;
	int sndbuf, rcvbuf;
	uint32_t max_conns;
	unsigned workers;      /* --workers: processes that accept and insert */
	struct net_server srv; /* the timer hook drains half-closed connections */
	int spare_fd;	       /* reserved descriptor for shedding connections at EMFILE */
	bool accept_pending;   /* the listening socket is readable: accept after this batch */
	uint32_t *free_slots;  /* --map sockmap: stack of free slots */
	uint32_t nfree;
	struct conn *conns, *drains;
	struct net_stats st;
} g = {.map_fd = -1,
       .slot_of_fd = -1,
       .srv = {.ep = -1, .lfd = -1, .sfd = -1, .tfd = -1},
       .spare_fd = -1};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sb-echo-sockmap [options]\n"
	    "  --listen ADDR:PORT     listen address (default 127.0.0.1:0; port 0 = pick one)\n"
	    "  --sndbuf BYTES         send buffer of accepted sockets (0 = kernel default, the\n"
	    "                         default; may exceed net.core.wmem_max)\n"
	    "  --rcvbuf BYTES         receive buffer of accepted sockets (0 = kernel default, the\n"
	    "                         default; may exceed net.core.rmem_max)\n"
	    "  --map sockhash|sockmap map holding the connections (default sockhash)\n"
	    "  --parser               add a stream_parser (default: verdict only)\n"
	    "  --max-conns N          map size = most concurrent connections (default %u)\n"
	    "  --workers N            processes that accept and insert, each with its own\n"
	    "                         SO_REUSEPORT listener (default 1; the kernel echoes)\n"
	    "  --help\n"
	    "Prints a ready JSON line once listening and a summary JSON line on SIGTERM/SIGINT.\n"
	    "Needs CAP_BPF and CAP_NET_ADMIN (or root).\n",
	    DEFAULT_MAX_CONNS);
}

/* Exit with one line unless this process may load sk_skb programs and this kernel has SOCKMAP. */
static void check_environment(void)
{
	sockmap_check_caps();
	/* The libbpf probes below answer "unsupported" for any failure, EPERM included (root in a
	 * user namespace has the capabilities but not bpf()), so first ask bpf() itself. */
	int fd = bpf_map_create(BPF_MAP_TYPE_ARRAY, NULL, 4, 4, 1, NULL);
	if (fd < 0) {
		if (errno == EPERM || errno == EACCES)
			net_die("bpf() not permitted: " SOCKMAP_NEED_PRIVS);
		net_die("bpf() unavailable: %s (kernel without CONFIG_BPF_SYSCALL?)",
			strerror(errno));
	}
	close(fd);
	enum bpf_map_type mt =
	    g.kind == ECHO_MAP_SOCKMAP ? BPF_MAP_TYPE_SOCKMAP : BPF_MAP_TYPE_SOCKHASH;
	if (libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_SKB, NULL) != 1 ||
	    libbpf_probe_bpf_map_type(mt, NULL) != 1)
		sockmap_die_unsupported(g.parser);
}

/* Open, configure, load and attach the BPF side; exits with one line naming the step on failure. */
static void bpf_setup(void)
{
	sockmap_quiet_libbpf();
	struct echo_sockmap_bpf *s = echo_sockmap_bpf__open();
	if (!s)
		net_die("open BPF object: %s", strerror(errno));
	g.skel = s;
	s->rodata->map_kind = (uint32_t)g.kind;
	/* The map that is not used still exists (the program references both); keep it tiny. */
	bool hash = g.kind == ECHO_MAP_SOCKHASH;
	if (bpf_map__set_max_entries(s->maps.sock_hash, hash ? g.max_conns : 1) ||
	    bpf_map__set_max_entries(s->maps.sock_map, hash ? 1 : g.max_conns) ||
	    bpf_map__set_max_entries(s->maps.slot_of, hash ? 1 : g.max_conns))
		net_die("configure BPF maps: %s", strerror(errno));
	bpf_program__set_autoload(s->progs.echo_parser, g.parser);
	sockmap_check_load(echo_sockmap_bpf__load(s));
	g.map_fd = bpf_map__fd(hash ? s->maps.sock_hash : s->maps.sock_map);
	g.slot_of_fd = bpf_map__fd(s->maps.slot_of);
	if (g.parser)
		sockmap_attach(bpf_program__fd(s->progs.echo_parser), g.map_fd,
			       BPF_SK_SKB_STREAM_PARSER, "stream_parser");
	sockmap_attach(bpf_program__fd(s->progs.echo_verdict), g.map_fd, BPF_SK_SKB_STREAM_VERDICT,
		       "stream_verdict");
}

/* Detach the programs and free every BPF object this process created (nothing is pinned: the
 * kernel frees maps and programs with their last descriptor). */
static void bpf_teardown(void)
{
	if (!g.skel)
		return;
	sockmap_detach(bpf_program__fd(g.skel->progs.echo_verdict), g.map_fd,
		       BPF_SK_SKB_STREAM_VERDICT);
	if (g.parser)
		sockmap_detach(bpf_program__fd(g.skel->progs.echo_parser), g.map_fd,
			       BPF_SK_SKB_STREAM_PARSER);
	echo_sockmap_bpf__destroy(g.skel);
	g.skel = NULL;
}

/* Run drain_tick every DRAIN_TICK_NS (on) or not at all. */
static void timer_set(bool on) { net_server_timer_arm(&g.srv, on); }

/* Close c, forget it, and count an error when failed. Closing removes the socket from the map. */
static void conn_close(struct conn *c, bool failed)
{
	if (c->draining) {
		if (c->drain_prev)
			c->drain_prev->drain_next = c->drain_next;
		else
			g.drains = c->drain_next;
		if (c->drain_next)
			c->drain_next->drain_prev = c->drain_prev;
		if (!g.drains)
			timer_set(false);
	}
	if (c->prev)
		c->prev->next = c->next;
	else
		g.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	close(c->fd);
	if (c->in_map && g.kind == ECHO_MAP_SOCKMAP) {
		/* The sock_map entry went with close(); the slot is free once slot_of forgets it.
		 */
		(void)bpf_map_delete_elem(g.slot_of_fd, &c->cookie);
		g.free_slots[g.nfree++] = c->slot;
	}
	g.st.active--;
	if (failed)
		g.st.errors++;
	free(c->buf);
	free(c);
}

/* User-space echo for a connection that could not enter the map: read, write back in order,
 * close after the client's FIN once everything is written. */
static void user_io(struct conn *c)
{
	bool want_out = false;
	for (;;) {
		if (c->sent < c->have) {
			ssize_t n = write(c->fd, c->buf + c->sent, c->have - c->sent);
			if (n < 0 && errno == EINTR)
				continue;
			if (n < 0 && errno == EAGAIN) {
				want_out = true;
				break;
			}
			if (n < 0) {
				conn_close(c, true);
				return;
			}
			c->sent += (size_t)n;
			g.st.bytes_out += (uint64_t)n;
			continue;
		}
		c->have = c->sent = 0;
		if (c->eof) {
			conn_close(c, false);
			return;
		}
		ssize_t n = read(c->fd, c->buf, USER_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && errno == EAGAIN)
			break;
		if (n < 0) {
			conn_close(c, true);
			return;
		}
		if (n == 0)
			c->eof = true;
		c->have = (size_t)n;
		g.st.bytes_in += (uint64_t)n;
	}
	struct epoll_event ev = {.events = want_out ? EPOLLOUT : EPOLLIN, .data.ptr = c};
	if (epoll_ctl(g.srv.ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		net_die("epoll_ctl(MOD): %s", strerror(errno));
}

/* Put a freshly accepted socket into the map and start echoing, including bytes it already holds.
 */
static void conn_open(int fd)
{
	g.st.connections++;
	sockmap_set_bufs(fd, g.sndbuf, g.rcvbuf);
	/* As the other servers: an echo of a small message leaves at once, not after Nagle. */
	net_set_nodelay(fd);
	uint64_t cookie = 0;
	if (sockmap_cookie(fd, &cookie) < 0) {
		g.st.errors++;
		close(fd);
		return;
	}
	struct conn *c = calloc(1, sizeof(*c));
	if (!c)
		net_die("out of memory");
	c->fd = fd;
	c->cookie = cookie;
	int err;
	if (g.kind == ECHO_MAP_SOCKMAP) {
		if (!g.nfree) {
			errno = ENOSPC;
			err = -1;
		} else {
			c->slot = g.free_slots[--g.nfree];
			/* slot_of first: once the socket is in sock_map the verdict may run at
			 * once. */
			err = bpf_map_update_elem(g.slot_of_fd, &cookie, &c->slot, BPF_NOEXIST);
			if (!err)
				err = sockmap_insert(g.map_fd, &c->slot, fd);
			if (err) {
				(void)bpf_map_delete_elem(g.slot_of_fd, &cookie);
				g.free_slots[g.nfree++] = c->slot;
			}
		}
	} else {
		err = sockmap_insert(g.map_fd, &cookie, fd);
	}
	if (err && errno != EOPNOTSUPP) {
		/* Map full (--max-conns) or the socket cannot be added: refuse this connection
		 * only. */
		g.st.errors++;
		close(fd);
		free(c);
		return;
	}
	c->next = g.conns;
	if (g.conns)
		g.conns->prev = c;
	g.conns = c;
	g.st.active++;
	if (err) {
		/* EOPNOTSUPP: the map takes only ESTABLISHED sockets, and this client sent its FIN
		 * before we got here (CLOSE_WAIT). Nothing of it went through the verdict, so user
		 * space echoes what is queued, in order, and closes. */
		c->buf = malloc(USER_BUF);
		if (!c->buf)
			net_die("out of memory");
		net_epoll_add(g.srv.ep, fd, EPOLLIN, c);
		user_io(c);
		return;
	}
	c->in_map = true;
	/* The kick (see the comment at the top): hands already queued bytes to the verdict. */
	if (sockmap_kick(fd) < 0) {
		conn_close(c, true);
		return;
	}
	/* No EPOLLIN: the verdict consumes all data, and psock wakeups after every skb would only
	 * cost wakeups. EPOLLRDHUP reports the client's FIN; EPOLLERR/EPOLLHUP come regardless. */
	net_epoll_add(g.srv.ep, fd, EPOLLRDHUP, c);
}

/* Accept every pending connection (conn_open), shedding one at EMFILE/ENFILE with the spare
 * descriptor. */
static void accept_all(void)
{
	for (;;) {
		int fd = accept4(g.srv.lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		if (fd >= 0) {
			conn_open(fd);
			continue;
		}
		switch (errno) {
		case EINTR:
		case ECONNABORTED:
		case EPROTO:
			continue;
		case EAGAIN:
			return;
		case EMFILE:
		case ENFILE:
			/* Out of descriptors: accept with the spare one and shed the connection, so
			 * the listener does not stay readable forever. */
			g.st.errors++;
			close(g.spare_fd);
			fd = accept(g.srv.lfd, NULL, NULL);
			if (fd >= 0)
				close(fd);
			g.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
			return;
		default:
			net_die("accept: %s", strerror(errno));
		}
	}
}

/* Echoed everything the client sent? The client's FIN counts one in bytes_received. Returns
 * 1 when done, 0 while bytes are still on the way, -1 on a broken connection. */
static int drain_state(struct conn *c, uint64_t now)
{
	struct tcp_info ti;
	if (sockmap_tcp_info(c->fd, &ti) < 0 || ti.tcpi_state == TCP_STATE_CLOSE)
		return -1;
	uint64_t want = ti.tcpi_bytes_received ? ti.tcpi_bytes_received - 1 : 0;
	if (ti.tcpi_bytes_acked >= want)
		return 1;
	if (ti.tcpi_bytes_acked != c->last_acked) {
		c->last_acked = ti.tcpi_bytes_acked;
		c->last_progress_ns = now;
	} else if (now - c->last_progress_ns > DRAIN_STALL_NS) {
		return -1;
	}
	return 0;
}

/* The client half-closed: finish the echo, then close (from the timer tick if not done yet). */
static void conn_rdhup(struct conn *c)
{
	uint64_t now = net_now_ns();
	c->last_progress_ns = now;
	int st = drain_state(c, now);
	if (st != 0) {
		conn_close(c, st < 0);
		return;
	}
	/* Stop the level-triggered RDHUP; errors and hangups are still reported. */
	struct epoll_event ev = {.events = 0, .data.ptr = c};
	if (epoll_ctl(g.srv.ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
		net_die("epoll_ctl(MOD): %s", strerror(errno));
	c->draining = true;
	c->drain_prev = NULL;
	c->drain_next = g.drains;
	if (g.drains)
		g.drains->drain_prev = c;
	g.drains = c;
	timer_set(true);
}

/* The timer hook: close the draining connections that are done or broken. */
static void drain_tick(void)
{
	uint64_t now = net_now_ns();
	for (struct conn *c = g.drains, *next; c; c = next) {
		next = c->drain_next;
		int st = drain_state(c, now);
		if (st != 0)
			conn_close(c, st < 0);
	}
}

/* Handle the epoll events of connection tag. */
static void conn_event(void *tag, uint32_t events)
{
	struct conn *c = tag;
	if (!c->in_map) {
		if (events & EPOLLERR)
			conn_close(c, true);
		else
			user_io(c);
		return;
	}
	if (events & EPOLLERR) {
		conn_close(c, true);
	} else if (events & EPOLLHUP) {
		/* Both directions shut without error: only when the peer reset or everything ended.
		 */
		struct tcp_info ti;
		conn_close(c, sockmap_tcp_info(c->fd, &ti) < 0 || ti.tcpi_state == TCP_STATE_CLOSE);
	} else if ((events & EPOLLRDHUP) && !c->draining) {
		conn_rdhup(c);
	}
}

/* The listening socket is readable: note it; accept_all runs after the batch of events (see
 * after_batch). */
static void on_listen(void) { g.accept_pending = true; }

/* After each batch of events (and after drain_tick): accept what is pending. A connection appears
 * at most once per batch and may be freed while handled, so its pointer is not looked at again;
 * accepts, like the timer hook, run after the batch. */
static void after_batch(void)
{
	if (!g.accept_pending)
		return;
	g.accept_pending = false;
	accept_all();
}

/* --map, --parser, --max-conns, --workers; the common options are net_parse_opts's. */
static void own_opt(int val, const char *arg)
{
	switch (val) {
	case 'm':
		if (!strcmp(arg, "sockhash"))
			g.kind = ECHO_MAP_SOCKHASH;
		else if (!strcmp(arg, "sockmap"))
			g.kind = ECHO_MAP_SOCKMAP;
		else
			net_usage_error("--map: expected sockhash or sockmap, got '%s'", arg);
		break;
	case 'p':
		g.parser = true;
		break;
	case 'n':
		g.max_conns = sockmap_parse_max_conns(arg);
		break;
	case 'w':
		g.workers = net_parse_workers(arg);
		break;
	}
}

/* One worker: accept, insert and watch its listener's connections until the server stops, then
 * close them (which takes them out of the map). A worker process gets slots of its own (--map
 * sockmap): [index * max_conns / n, (index + 1) * max_conns / n); socket cookies (sockhash) are
 * unique host-wide, so the workers' keys never collide. */
static void serve(struct net_worker *w)
{
	if (g.kind == ECHO_MAP_SOCKMAP) {
		uint32_t lo = (uint32_t)((uint64_t)g.max_conns * w->index / g.workers);
		uint32_t hi = (uint32_t)((uint64_t)g.max_conns * (w->index + 1) / g.workers);
		g.free_slots = malloc(sizeof(*g.free_slots) * (hi - lo ? hi - lo : 1));
		if (!g.free_slots)
			net_die("out of memory");
		for (uint32_t i = hi; i > lo; i--)
			g.free_slots[g.nfree++] = i - 1;
	}
	g.spare_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
	net_server_attach(&g.srv, w);
	net_server_timer(&g.srv, drain_tick, DRAIN_TICK_NS);
	net_server_run(&g.srv, on_listen, conn_event, after_batch);
	w->st = g.st;
	while (g.conns)
		conn_close(g.conns, false);
}

int main(int argc, char **argv)
{
	net_prog = "sb-echo-sockmap";
	static const struct option own[] = {
	    {"map", required_argument, 0, 'm'},
	    {"parser", no_argument, 0, 'p'},
	    {"max-conns", required_argument, 0, 'n'},
	    {"workers", required_argument, 0, 'w'},
	    {0, 0, 0, 0},
	};
	struct net_opts opts = {
	    .listen = "127.0.0.1:0", .sndbuf = DEFAULT_SNDBUF, .rcvbuf = DEFAULT_RCVBUF};
	g.max_conns = DEFAULT_MAX_CONNS;
	g.kind = ECHO_MAP_SOCKHASH;
	g.workers = 1;
	net_parse_opts(argc, argv, own, own_opt, usage, INT32_MAX / 2, &opts);
	g.sndbuf = opts.sndbuf;
	g.rcvbuf = opts.rcvbuf;
	if (g.kind == ECHO_MAP_SOCKMAP && g.workers > g.max_conns)
		net_usage_error("--workers %u is more than --max-conns %u: a worker needs a slot",
				g.workers, g.max_conns);

	check_environment();
	net_raise_nofile();
	/* Before anything needs cleaning up: signals then wait in the fd. */
	g.srv.sfd = net_signalfd();
	bpf_setup();
	/* The worker processes fork here: they inherit the loaded maps and programs. */
	struct net_worker *w = net_workers_run(opts.listen, SERVER, g.workers, true, serve);

	/* The workers' counters, then the kernel's (the maps go with the skeleton), then the
	 * programs. */
	struct net_stats st = net_workers_total(w, g.workers);
	int counters = bpf_map__fd(g.skel->maps.counters);
	uint64_t redirected = sockmap_read_counter(counters, ECHO_CNT_REDIR_BYTES);
	st.bytes_in += redirected;
	st.bytes_out += redirected;
	st.errors += sockmap_read_counter(counters, ECHO_CNT_DROP_SKBS);
	bpf_teardown();
	char extra[128 * NET_WORKERS_MAX];
	net_workers_json(w, g.workers, extra, sizeof(extra));
	net_print_summary_extra(SERVER, &st, extra);
	return 0;
}
