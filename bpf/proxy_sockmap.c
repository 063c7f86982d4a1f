// SPDX-License-Identifier: MIT
/* sb-proxy-sockmap: TCP reverse proxy whose data path never leaves the kernel. A libbpf loader for
 * bpf/proxy_sockmap.bpf.c. User space accepts a client, connects to the upstream (--upstream),
 * then hands both sockets to sk_skb stream_verdict programs that redirect every received skb to
 * the egress of the other leg. After that user space only watches for half-close and errors.
 * Command line and JSON lines: docs/programs.md ("Proxies").
 *
 * Maps (all SOCKHASH, keyed by socket cookie, SO_COOKIE here, bpf_get_socket_cookie() there):
 * `clients` and `upstreams` hold the legs and carry the verdict programs; `peer_of` maps the cookie
 * of one leg to the socket of the OTHER leg and carries no program: it is only the redirect target.
 * A socket may sit in several sockmaps; it has one psock, whose programs come from the maps that
 * have programs.
 *
 * Early data in either direction, and why no byte is lost or reordered
 * --------------------------------------------------------------------
 * The client may write the moment connect() returns, long before accept(), and the upstream may
 * write (a greeting) the moment our connect completes. Until a socket is in a map with a verdict,
 * its bytes simply wait in its sk_receive_queue. Two things could go wrong when the verdicts take
 * over, and the order of the steps in pair() rules out both:
 *  1. A verdict runs before its target is in a map: bpf_sk_redirect_hash() fails and the bytes
 *     would be dropped (or, with SK_PASS, wait in user space while later bytes overtake them in
 *     the kernel). So both sockets go into peer_of FIRST. Inserting into a map without programs
 *     creates the psock but leaves sk_data_ready alone: bytes keep waiting in the receive queue.
 *     Only then are the legs added to `upstreams` and `clients`, which installs the verdict
 *     (sk_psock_start_verdict). From the first verdict on, its target is already in peer_of, so
 *     there is no window in which a redirect can fail, whichever side speaks first.
 *  2. Bytes queued before the verdict was installed are only handed to it when the next segment
 *     arrives (the psock's data_ready runs on arrival); a peer that sent everything and waits
 *     would hang. So each leg is kicked once with setsockopt(SO_RCVLOWAT, 1): tcp_set_rcvlowat()
 *     calls tcp_data_ready() under the socket lock, which calls the now-psock sk_data_ready, and
 *     tcp_read_skb() hands every queued skb to the verdict from the head of the queue, in order.
 *     Segments arriving meanwhile wait in the socket backlog until release_sock(); a segment that
 *     arrived before the kick drained the queue itself. (The same design as sb-echo-sockmap.)
 * Both sockets are established and accept()ed/connect()ed, so they have their struct socket: the
 * psock backlog's skb_send_sock() never meets the -EINVAL that made early designs drop data.
 *
 * A socket whose peer already sent FIN (CLOSE_WAIT) cannot be added to a sockmap (EOPNOTSUPP: only
 * ESTABLISHED sockets are), and a full map (--max-conns) refuses too. A client that writes a short
 * request and half-closes at once, or an upstream that greets and half-closes, gets there before
 * pair() runs. Such a leg then has no verdict and its direction is copied in user space (recv/send
 * like sb-proxy-naive), which is safe: a leg in CLOSE_WAIT receives nothing more, and no socket is
 * ever written by both the kernel and user space (the kernel writes leg !s only for direction s).
 * If the failure happens before any verdict was installed both directions go through user space.
 * The summary counts these directions in user_flows.
 *
 * Half-close: a FIN arrives as EPOLLRDHUP on its leg. That direction is then polled on a 1 ms
 * timerfd tick (armed only while some direction is draining) until the other leg has taken every
 * byte the first one received: tcpi_bytes_acked (minus its value at pairing: a connect()ed socket
 * counts its SYN) plus SIOCOUTQ (queued, not yet acked) of the other leg reaches
 * tcpi_bytes_received minus one (the FIN counts one) of this leg. Bytes still in the psock's
 * backlog are in neither, so the FIN is never forwarded ahead of data. Then shutdown(SHUT_WR)
 * forwards the FIN; when both directions ended, both sockets are closed (close() removes them from
 * every map). A direction that makes no progress for 30 s ends the connection as failed. When one
 * leg fails (upstream refuses, a reset) the other is closed with a reset so that its peer sees the
 * failure.
 *
 * Send buffers: the psock backlog worker sends only while the target socket is writeable and
 * retries one jiffy later otherwise, so throughput is bounded by sndbuf per jiffy; like
 * sb-echo-sockmap this proxy defaults to a 32 MiB SO_SNDBUF (SO_SNDBUFFORCE) on both legs.
 *
 * Summary: bytes_in/bytes_out are the bytes forwarded client -> upstream and upstream -> client:
 * what the verdicts redirected (summed per-CPU counters) plus what user space copied;
 * verdict_drops counts skbs dropped because the other leg was already gone, which happens only
 * while a connection is torn down. */
#define _GNU_SOURCE
#include <errno.h>
#include <getopt.h>
#include <linux/sockios.h>
#include <linux/tcp.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "counters.h"
#include "net.h"
#include "proxy.h"
#include "proxy_sockmap.skel.h"
#include "sockmap_common.h"

#define SERVER "proxy-sockmap"

#define CLIENT 0
#define UPSTREAM 1
#define DEFAULT_SNDBUF (32u << 20)
#define DEFAULT_MAX_CONNS 65536u
#define TCP_STATE_CLOSE 7	      /* tcpi_state value; not in the uapi headers */
#define DRAIN_TICK_NS 1000000ll	      /* poll period for draining directions */
#define DRAIN_STALL_NS 30000000000ull /* no progress for this long: give up */
#define USER_BUF 131072		      /* buffer of a direction copied in user space */
#define ROUNDS 16		      /* user-space buffers per direction and turn */

struct conn;

/* One socket of a proxied connection; its address is the epoll tag. */
struct leg {
	struct conn *c;
	int fd;
	uint64_t cookie;
	uint64_t acked_base; /* tcpi_bytes_acked at pairing (1 for the connect()ed leg: its SYN) */
	uint32_t events;     /* current epoll interest */
	bool registered;     /* in the epoll set */
};

/* One direction of a connection, from leg s to leg !s. */
struct flow {
	bool kernel;	      /* forwarded by leg s's verdict; otherwise by user space */
	struct proxy_flow io; /* eof: leg s sent FIN; shut: FIN forwarded (leg !s shut down for
			       * writing); buf, off, len: the user-space copy */
	uint64_t fwd;	      /* kernel: bytes leg !s had taken at the last check */
	uint64_t progress_ns; /* kernel: when fwd last changed */
};

struct conn {
	struct leg leg[2];		      /* CLIENT, UPSTREAM */
	struct flow flow[2];		      /* flow[s]: from leg s to leg !s */
	bool connecting;		      /* upstream connect in progress */
	bool draining;			      /* in the drain list */
	bool dead;			      /* ended; freed after the current batch of events */
	struct conn *prev, *next;	      /* all live connections */
	struct conn *drain_prev, *drain_next; /* connections with a draining direction */
	struct conn *next_dead;
};

static struct {
	struct proxy_sockmap_bpf *skel;
	int clients_fd, upstreams_fd, peer_of_fd;
	bool parser;
	struct net_opts opts;
	uint32_t max_conns;
	struct proxy_upstream up;
	struct net_server srv; /* the timer hook polls draining directions */
	bool accept_pending;   /* the listening socket is readable: accept after this batch */
	struct conn *conns, *drains, *dead;
	struct net_stats st; /* bytes_in/bytes_out: only what user space forwarded */
	uint64_t user_flows; /* directions forwarded in user space (see conn_pair) */
} g = {.srv = {.ep = -1, .lfd = -1, .sfd = -1, .tfd = -1}};

static void usage(FILE *f)
{
	fprintf(
	    f,
	    "usage: sb-proxy-sockmap --upstream ADDR:PORT [options]\n"
	    "  --upstream ADDR:PORT   where every accepted connection is forwarded (required)\n"
	    "  --listen ADDR:PORT     listen address (default 127.0.0.1:0; port 0 = pick one)\n"
	    "  --sndbuf BYTES         SO_SNDBUF on both legs (default %u; 0 = kernel default)\n"
	    "  --rcvbuf BYTES         SO_RCVBUF on both legs (default 0 = kernel default)\n"
	    "  --parser               add a stream_parser (default: verdict only)\n"
	    "  --max-conns N          most concurrent proxied connections (map size, default %u)\n"
	    "  --help\n"
	    "Prints a ready JSON line once listening and a summary JSON line on SIGTERM/SIGINT.\n"
	    "Needs CAP_BPF and CAP_NET_ADMIN (or root).\n",
	    DEFAULT_SNDBUF, DEFAULT_MAX_CONNS);
}

/* Exit with one line unless this process may load sk_skb programs and this kernel has SOCKHASH. */
static void check_environment(void)
{
	sockmap_check_caps();
	int prog = libbpf_probe_bpf_prog_type(BPF_PROG_TYPE_SK_SKB, NULL);
	int map = libbpf_probe_bpf_map_type(BPF_MAP_TYPE_SOCKHASH, NULL);
	if (prog < 0 || map < 0) {
		int err = prog < 0 ? -prog : -map;
		if (err == EPERM || err == EACCES)
			net_die("bpf() not permitted: " SOCKMAP_NEED_PRIVS);
		net_die("cannot probe BPF support: bpf(): %s", strerror(err));
	}
	if (!prog || !map)
		sockmap_die_unsupported(g.parser);
}

/* Open, configure, load and attach the BPF side; exits with one line naming the step on failure. */
static void bpf_setup(void)
{
	sockmap_quiet_libbpf();
	struct proxy_sockmap_bpf *s = proxy_sockmap_bpf__open();
	if (!s)
		net_die("open BPF object: %s", strerror(errno));
	g.skel = s;
	if (bpf_map__set_max_entries(s->maps.clients, g.max_conns) ||
	    bpf_map__set_max_entries(s->maps.upstreams, g.max_conns) ||
	    bpf_map__set_max_entries(s->maps.peer_of, 2 * g.max_conns))
		net_die("configure BPF maps: %s", strerror(errno));
	bpf_program__set_autoload(s->progs.proxy_parser, g.parser);
	sockmap_check_load(proxy_sockmap_bpf__load(s));
	g.clients_fd = bpf_map__fd(s->maps.clients);
	g.upstreams_fd = bpf_map__fd(s->maps.upstreams);
	g.peer_of_fd = bpf_map__fd(s->maps.peer_of);
	if (g.parser) {
		int parser = bpf_program__fd(s->progs.proxy_parser);
		sockmap_attach(parser, g.clients_fd, BPF_SK_SKB_STREAM_PARSER,
			       "stream_parser to clients");
		sockmap_attach(parser, g.upstreams_fd, BPF_SK_SKB_STREAM_PARSER,
			       "stream_parser to upstreams");
	}
	sockmap_attach(bpf_program__fd(s->progs.client_verdict), g.clients_fd,
		       BPF_SK_SKB_STREAM_VERDICT, "stream_verdict to clients");
	sockmap_attach(bpf_program__fd(s->progs.upstream_verdict), g.upstreams_fd,
		       BPF_SK_SKB_STREAM_VERDICT, "stream_verdict to upstreams");
}

/* Detach the programs and free every BPF object this process created (nothing is pinned: the
 * kernel frees maps and programs with their last descriptor). */
static void bpf_teardown(void)
{
	if (!g.skel)
		return;
	struct proxy_sockmap_bpf *s = g.skel;
	sockmap_detach(bpf_program__fd(s->progs.client_verdict), g.clients_fd,
		       BPF_SK_SKB_STREAM_VERDICT);
	sockmap_detach(bpf_program__fd(s->progs.upstream_verdict), g.upstreams_fd,
		       BPF_SK_SKB_STREAM_VERDICT);
	if (g.parser) {
		sockmap_detach(bpf_program__fd(s->progs.proxy_parser), g.clients_fd,
			       BPF_SK_SKB_STREAM_PARSER);
		sockmap_detach(bpf_program__fd(s->progs.proxy_parser), g.upstreams_fd,
			       BPF_SK_SKB_STREAM_PARSER);
	}
	proxy_sockmap_bpf__destroy(s);
	g.skel = NULL;
}

/* proxy_accept's callback: --sndbuf/--rcvbuf on both legs. */
static void set_bufs(int fd) { sockmap_set_bufs(fd, g.opts.sndbuf, g.opts.rcvbuf); }

/* Run drain_tick every DRAIN_TICK_NS (on) or not at all. */
static void timer_set(bool on) { net_server_timer_arm(&g.srv, on); }

/* Set a leg's epoll registration and interest (ADD, MOD or DEL as needed). */
static void leg_events(struct leg *l, bool registered, uint32_t ev)
{
	if (l->registered == registered && (!registered || l->events == ev))
		return;
	struct epoll_event e = {.events = ev, .data.ptr = l};
	int op = !registered ? EPOLL_CTL_DEL : l->registered ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
	if (epoll_ctl(g.srv.ep, op, l->fd, &e) < 0)
		net_die("epoll_ctl: %s", strerror(errno));
	l->registered = registered;
	l->events = ev;
}

static void drain_list(struct conn *c, bool on)
{
	if (on == c->draining)
		return;
	if (on) {
		c->drain_prev = NULL;
		c->drain_next = g.drains;
		if (g.drains)
			g.drains->drain_prev = c;
		g.drains = c;
		timer_set(true);
	} else {
		if (c->drain_prev)
			c->drain_prev->drain_next = c->drain_next;
		else
			g.drains = c->drain_next;
		if (c->drain_next)
			c->drain_next->drain_prev = c->drain_prev;
		if (!g.drains)
			timer_set(false);
	}
	c->draining = on;
}

/* End a connection: close both legs (abortive ones with a reset; close() also removes them from
 * every map) and free it after this batch. */
static void conn_end(struct conn *c, bool abort_client, bool abort_upstream, bool failed)
{
	drain_list(c, false);
	if (c->prev)
		c->prev->next = c->next;
	else
		g.conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	for (int s = 0; s < 2; s++) {
		if ((s == CLIENT && abort_client) || (s == UPSTREAM && abort_upstream))
			proxy_abort(c->leg[s].fd);
		else
			close(c->leg[s].fd);
	}
	for (int s = 0; s < 2; s++)
		free(c->flow[s].io.buf);
	c->dead = true;
	c->next_dead = g.dead;
	g.dead = c;
	g.st.active--;
	if (failed)
		g.st.errors++;
	net_accept_resume(&g.srv); /* descriptors are free again */
}

/* Free the connections that ended (after a batch of events, and at exit). */
static void free_dead(void)
{
	while (g.dead) {
		struct conn *c = g.dead;
		g.dead = c->next_dead;
		free(c);
	}
}

/* Leg s failed: close it, reset the other leg so that its peer sees the failure. */
static void conn_fail(struct conn *c, int s) { conn_end(c, s != CLIENT, s != UPSTREAM, true); }

/* Kernel direction s (leg s sent FIN): has leg !s taken every byte leg s received? Returns 1 when
 * done, 0 while bytes are on the way, -1 when leg !s broke, -2 when nothing moved for
 * DRAIN_STALL_NS. */
static int flow_state(struct conn *c, int s, uint64_t now)
{
	struct flow *f = &c->flow[s];
	struct tcp_info in, out;
	int outq = 0;
	if (sockmap_tcp_info(c->leg[s].fd, &in) < 0)
		return -2;
	/* acked before SIOCOUTQ: a byte acked in between is then counted at most once. */
	if (sockmap_tcp_info(c->leg[!s].fd, &out) < 0 || out.tcpi_state == TCP_STATE_CLOSE ||
	    ioctl(c->leg[!s].fd, SIOCOUTQ, &outq) < 0)
		return -1;
	uint64_t want = in.tcpi_bytes_received ? in.tcpi_bytes_received - 1 : 0;
	uint64_t got = out.tcpi_bytes_acked - c->leg[!s].acked_base + (uint64_t)outq;
	if (got >= want)
		return 1;
	if (got != f->fwd) {
		f->fwd = got;
		f->progress_ns = now;
	} else if (now - f->progress_ns > DRAIN_STALL_NS) {
		return -2;
	}
	return 0;
}

/* User direction s: copy from leg s to leg !s until one would block, EOF is forwarded or ROUNDS
 * buffers went through. Returns false if the connection failed (it is then ended). */
static bool pump_user(struct conn *c, int s)
{
	enum proxy_copy_result r =
	    proxy_copy(&c->flow[s].io, c->leg[s].fd, c->leg[!s].fd, USER_BUF, ROUNDS,
		       s == CLIENT ? &g.st.bytes_in : &g.st.bytes_out, NULL);
	if (r == PROXY_COPY_OK)
		return true;
	conn_fail(c, r == PROXY_COPY_IN_FAILED ? s : !s);
	return false;
}

/* Move user directions along, forward FINs of kernel directions that are drained, end the
 * connection when both directions ended, and keep the drain list and the epoll interest in step.
 * Returns false when the connection ended. */
static bool conn_check(struct conn *c, uint64_t now)
{
	bool pending = false;
	for (int s = 0; s < 2; s++) {
		struct flow *f = &c->flow[s];
		if (!f->kernel) {
			if (!pump_user(c, s))
				return false;
			continue;
		}
		if (!f->io.eof || f->io.shut)
			continue;
		int st = flow_state(c, s, now);
		if (st == -1) {
			conn_fail(c, !s);
			return false;
		}
		if (st == -2) {
			conn_end(c, true, true, true);
			return false;
		}
		if (st == 1) {
			(void)shutdown(c->leg[!s].fd, SHUT_WR);
			f->io.shut = true;
		} else {
			pending = true;
		}
	}
	if (c->flow[CLIENT].io.shut && c->flow[UPSTREAM].io.shut) {
		conn_end(c, false, false, false); /* both FINs forwarded */
		return false;
	}
	drain_list(c, pending);
	for (int s = 0; s < 2; s++) {
		const struct flow *from = &c->flow[s], *to = &c->flow[!s];
		uint32_t ev = 0;
		/* Kernel source: EPOLLRDHUP until its FIN. User source: EPOLLIN while its buffer is
		 * empty. User destination: EPOLLOUT while bytes for it wait. */
		if (!from->io.eof)
			ev |= from->kernel		     ? EPOLLRDHUP
			      : from->io.off == from->io.len ? EPOLLIN
							     : 0u;
		if (!to->kernel && to->io.off < to->io.len)
			ev |= EPOLLOUT;
		/* A leg that sent FIN and got ours reports EPOLLHUP for good: take it out. */
		leg_events(&c->leg[s], !(from->io.eof && to->io.shut), ev);
	}
	return true;
}

/* The upstream connect completed: put both legs into the maps in the order explained at the top,
 * kick the verdicts for bytes that arrived earlier, and start watching for FINs. A leg that cannot
 * go into the maps leaves its direction to user space (see the top). */
static void conn_pair(struct conn *c)
{
	c->connecting = false;
	for (int s = 0; s < 2; s++) {
		struct leg *l = &c->leg[s];
		struct tcp_info ti;
		if (sockmap_cookie(l->fd, &l->cookie) < 0 || sockmap_tcp_info(l->fd, &ti) < 0) {
			conn_fail(c, s);
			return;
		}
		l->acked_base = ti.tcpi_bytes_acked;
	}
	int cfd = c->leg[CLIENT].fd, ufd = c->leg[UPSTREAM].fd;
	/* peer_of first: once a leg is in clients/upstreams its verdict may run at once, and its
	 * redirect target must be there already. Entries of a failed attempt stay until close();
	 * without a verdict they only give the socket an idle psock. */
	c->flow[UPSTREAM].kernel = !sockmap_insert(g.peer_of_fd, &c->leg[CLIENT].cookie, ufd) &&
				   !sockmap_insert(g.peer_of_fd, &c->leg[UPSTREAM].cookie, cfd) &&
				   !sockmap_insert(g.upstreams_fd, &c->leg[UPSTREAM].cookie, ufd);
	c->flow[CLIENT].kernel =
	    c->flow[UPSTREAM].kernel && !sockmap_insert(g.clients_fd, &c->leg[CLIENT].cookie, cfd);
	/* The kick (see the top): hands bytes queued before the verdict existed to it, in order. */
	for (int s = 0; s < 2; s++) {
		if (!c->flow[s].kernel) {
			g.user_flows++;
			continue;
		}
		if (sockmap_kick(c->leg[s].fd) < 0) {
			conn_fail(c, s);
			return;
		}
	}
	uint64_t now = net_now_ns();
	c->flow[CLIENT].progress_ns = c->flow[UPSTREAM].progress_ns = now;
	(void)conn_check(c, now);
}

/* Handle the epoll events of leg tag. */
static void leg_event(void *tag, uint32_t ev)
{
	struct leg *l = tag;
	struct conn *c = l->c;
	int s = l == &c->leg[CLIENT] ? CLIENT : UPSTREAM;
	if (c->dead)
		return; /* ended earlier in this batch */
	if (c->connecting) {
		int done = proxy_connected(&g.up, l->fd, ev, EPOLLERR);
		if (done < 0)
			conn_fail(c, UPSTREAM);
		else if (done > 0)
			conn_pair(c);
		return;
	}
	/* A reset sets sk_err (EPOLLERR). EPOLLHUP alone is an orderly end: after our FIN and the
	 * peer's, the socket is already TCP_CLOSE (its time-wait twin took over). */
	if (ev & EPOLLERR) {
		conn_fail(c, s);
		return;
	}
	uint64_t now = net_now_ns();
	struct flow *f = &c->flow[s];
	if (f->kernel && (ev & (EPOLLRDHUP | EPOLLHUP)) && !f->io.eof) {
		f->io.eof = true;
		f->progress_ns = now;
	}
	(void)conn_check(c, now);
}

/* The timer hook: check every connection with a draining direction (conn_check). */
static void drain_tick(void)
{
	uint64_t now = net_now_ns();
	for (struct conn *c = g.drains, *next; c; c = next) {
		next = c->drain_next;
		(void)conn_check(c, now);
	}
}

/* Accept every pending connection and start its upstream connect. */
static void accept_all(void)
{
	int fd, ufd;
	bool done;
	while ((fd = proxy_accept(&g.srv, &g.up, &g.st, set_bufs, &ufd, &done)) >= 0) {
		struct conn *c = calloc(1, sizeof(*c));
		if (!c)
			net_die("out of memory");
		for (int s = 0; s < 2; s++) {
			c->leg[s].c = c;
		}
		c->leg[CLIENT].fd = fd;
		c->leg[UPSTREAM].fd = ufd;
		c->next = g.conns;
		if (g.conns)
			g.conns->prev = c;
		g.conns = c;
		g.st.active++;
		c->connecting = true;
		if (done)
			conn_pair(c);
		else
			leg_events(&c->leg[UPSTREAM], true, EPOLLOUT);
	}
}

/* The listening socket is readable: note it; accept_all runs after the batch of events. */
static void on_listen(void) { g.accept_pending = true; }

/* After each batch of events (and after drain_tick): accept what is pending, then free the
 * connections that ended. */
static void after_batch(void)
{
	if (g.accept_pending) {
		g.accept_pending = false;
		accept_all();
	}
	free_dead();
}

static const char *upstream;

/* --upstream, --parser and --max-conns; the common options are net_parse_opts's. */
static void own_opt(int val, const char *arg)
{
	switch (val) {
	case 'u':
		upstream = arg;
		break;
	case 'p':
		g.parser = true;
		break;
	case 'n':
		g.max_conns = sockmap_parse_max_conns(arg);
		break;
	}
}

int main(int argc, char **argv)
{
	static const struct option own[] = {
	    {"upstream", required_argument, NULL, 'u'},
	    {"parser", no_argument, NULL, 'p'},
	    {"max-conns", required_argument, NULL, 'n'},
	    {NULL, 0, NULL, 0},
	};
	net_prog = "sb-proxy-sockmap";
	g.opts = (struct net_opts){.listen = "127.0.0.1:0", .sndbuf = DEFAULT_SNDBUF};
	g.max_conns = DEFAULT_MAX_CONNS;
	/* The kernel doubles a buffer size: keep the double within an int. */
	net_parse_opts(argc, argv, own, own_opt, usage, INT32_MAX / 2, &g.opts);
	proxy_require_upstream(upstream, &g.up);

	check_environment();
	net_raise_nofile();
	struct net_server *srv = &g.srv;
	/* Before anything needs cleaning up: signals then wait in the fd. */
	srv->sfd = net_signalfd();
	bpf_setup();
	srv->lfd = net_listen(g.opts.listen);
	srv->ep = net_epoll_create();
	srv->listen_tag = &srv->lfd;
	srv->signal_tag = &srv->sfd;
	net_epoll_add(srv->ep, srv->lfd, EPOLLIN, srv->listen_tag);
	net_epoll_add(srv->ep, srv->sfd, EPOLLIN, srv->signal_tag);
	net_server_timer(srv, drain_tick, DRAIN_TICK_NS);
	net_print_ready(SERVER, srv->lfd);
	net_server_run(srv, on_listen, leg_event, after_batch);

	/* Counters first (the maps go with the skeleton), then the connections, then the programs.
	 */
	struct net_stats st = g.st;
	int counters = bpf_map__fd(g.skel->maps.counters);
	st.bytes_in += sockmap_read_counter(counters, PROXY_CNT_C2U_BYTES);
	st.bytes_out += sockmap_read_counter(counters, PROXY_CNT_U2C_BYTES);
	char extra[96];
	snprintf(extra, sizeof(extra), ",\"verdict_drops\":%llu,\"user_flows\":%llu",
		 (unsigned long long)sockmap_read_counter(counters, PROXY_CNT_DROP_SKBS),
		 (unsigned long long)g.user_flows);
	while (g.conns)
		conn_end(g.conns, false, false, false);
	free_dead();
	close(srv->lfd);
	bpf_teardown();
	proxy_print_summary(SERVER, &st, &g.up, extra);
	return 0;
}
