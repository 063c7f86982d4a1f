// SPDX-License-Identifier: MIT
/* Helpers shared by the reverse proxies and the per-connection handling of the user-space ones;
 * contracts in proxy.h. */
#define _GNU_SOURCE
#include "proxy.h"

#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

void proxy_parse_upstream(const char *s, struct proxy_upstream *up)
{
	if (net_parse_addr(s, &up->addr, &up->len) < 0)
		net_usage_error("--upstream: expected ADDR:PORT with a numeric address, got '%s'",
				s);
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)&up->addr;
	const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)&up->addr;
	if ((up->addr.ss_family == AF_INET ? a4->sin_port : a6->sin6_port) == 0)
		net_usage_error("--upstream: port 0 is not a destination, got '%s'", s);
	up->text = s;
}

/* --upstream-sources into up->sources; after the upstream (it must be loopback IPv4). */
static void parse_sources(const char *arg, struct proxy_upstream *up)
{
	const struct sockaddr_in *a4 = (const struct sockaddr_in *)&up->addr;
	if (up->addr.ss_family != AF_INET || (ntohl(a4->sin_addr.s_addr) >> 24) != 127)
		net_usage_error("--upstream-sources needs an upstream on loopback IPv4 (127.0.0.0/8), "
				"got '%s'",
				up->text);
	up->sources = (uint32_t)net_parse_u64("--upstream-sources", arg, 65536);
	if (up->sources == 0)
		net_usage_error("--upstream-sources must be at least 1");
}

void proxy_require_upstream(const char *s, struct proxy_upstream *up)
{
	if (!s)
		net_usage_error("--upstream ADDR:PORT is required");
	proxy_parse_upstream(s, up);
}

bool proxy_opt(struct proxy *p, int val, const char *arg)
{
	if (val == 'u')
		p->upstream_arg = arg;
	else if (val == 'w')
		p->workers = net_parse_workers(arg);
	else if (val == 'P')
		p->processes = true;
	else if (val == 's')
		p->sources_arg = arg;
	else
		return false;
	return true;
}

void proxy_opts_done(struct proxy *p)
{
	proxy_require_upstream(p->upstream_arg, &p->up);
	if (p->sources_arg)
		parse_sources(p->sources_arg, &p->up);
}

void proxy_upstream_failed(struct proxy_upstream *up, int err)
{
	up->errors++;
	if (up->warned)
		return;
	up->warned = true;
	net_warn("cannot connect to upstream %s: %s (further failures are only counted in "
		 "upstream_errors)",
		 up->text, strerror(err));
}

int proxy_connect(const struct proxy_upstream *up, void (*prep)(int fd), bool *done)
{
	int fd = socket(up->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM)
			return -1;
		net_die("socket: %s", strerror(errno));
	}
	prep(fd);
	if (up->sources) {
		/* Round robin over the source addresses (per thread: workers share no state). The
		 * port is picked at connect() from that address's own ephemeral range. */
		static __thread uint32_t next;
		int one = 1;
		(void)setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof(one));
		struct sockaddr_in src = {.sin_family = AF_INET};
		src.sin_addr.s_addr = htonl(0x7f000001u + next++ % up->sources);
		if (bind(fd, (struct sockaddr *)&src, sizeof(src)) < 0) {
			int err = errno;
			close(fd);
			errno = err;
			return -1;
		}
	}
	/* TCP_NODELAY on both legs, as NGINX (tcp_nodelay on) and HAProxy do: a forwarded tail
	 * must not wait for an ACK of the previous segment, which would add a delayed-ACK timeout
	 * to ping-pong. */
	net_set_nodelay(fd);
	if (connect(fd, (const struct sockaddr *)&up->addr, up->len) == 0) {
		*done = true;
		return fd;
	}
	if (errno == EINPROGRESS) {
		*done = false;
		return fd;
	}
	int err = errno;
	close(fd);
	errno = err;
	return -1;
}

int proxy_connected(struct proxy_upstream *up, int fd, uint32_t ev, uint32_t fail_events)
{
	int err = net_sock_error(fd);
	if (err == 0 && !(ev & EPOLLOUT))
		return 0;
	if (err != 0 || (ev & fail_events)) {
		proxy_upstream_failed(up, err ? err : EIO);
		return -1;
	}
	return 1;
}

void proxy_abort(int fd)
{
	struct linger lg = {.l_onoff = 1, .l_linger = 0};
	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

enum proxy_copy_result proxy_copy(struct proxy_flow *f, int in, int out, size_t bufsize, int rounds,
				  uint64_t *nread, uint64_t *nwritten)
{
	for (int round = 0; round < rounds;) {
		if (f->off < f->len) {
			ssize_t w = send(out, f->buf + f->off, f->len - f->off, MSG_NOSIGNAL);
			if (w < 0) {
				if (errno == EINTR)
					continue;
				if (errno == EAGAIN)
					return PROXY_COPY_OK;
				return PROXY_COPY_OUT_FAILED;
			}
			f->off += (size_t)w;
			if (nwritten)
				*nwritten += (uint64_t)w;
			if (f->off < f->len)
				continue; /* partial write: the next one says EAGAIN or goes on */
			f->off = f->len = 0;
		}
		if (f->eof) {
			if (!f->shut) {
				/* Everything read before the FIN was written: forward the FIN. */
				(void)shutdown(out, SHUT_WR);
				f->shut = true;
			}
			return PROXY_COPY_OK;
		}
		if (!f->buf && !(f->buf = malloc(bufsize)))
			net_die("out of memory for a %zu-byte connection buffer", bufsize);
		ssize_t r = recv(in, f->buf, bufsize, 0);
		if (r > 0) {
			f->len = (size_t)r;
			if (nread)
				*nread += (uint64_t)r;
			round++;
		} else if (r == 0) {
			f->eof = true;
		} else if (errno == EAGAIN) {
			return PROXY_COPY_OK;
		} else if (errno != EINTR) {
			return PROXY_COPY_IN_FAILED;
		}
	}
	return PROXY_COPY_OK;
}

int proxy_accept(struct net_server *s, struct proxy_upstream *up, struct net_stats *st,
		 void (*prep)(int fd), int *ufd, bool *done)
{
	int fd;
	while ((fd = net_accept(s, st->active)) >= 0) {
		prep(fd);
		net_set_nodelay(fd);
		st->connections++;
		*ufd = proxy_connect(up, prep, done);
		if (*ufd >= 0)
			return fd;
		proxy_upstream_failed(up, errno);
		st->errors++;
		proxy_abort(fd);
	}
	return -1;
}

void proxy_print_summary(const char *server, const struct net_stats *st,
			 const struct proxy_upstream *up, const char *extra)
{
	static char fields[256 + 128 * NET_WORKERS_MAX];
	snprintf(fields, sizeof(fields), ",\"upstream_errors\":%llu%s",
		 (unsigned long long)up->errors, extra);
	net_print_summary_extra(server, st, fields);
}

/* User-space proxies
 * ------------------ */

/* The proxy this thread serves (its worker's copy); net_server_run's callbacks take no argument.
 */
static __thread struct proxy *cur;
/* The workers' copies of the proxy that proxy_run was given. */
static struct proxy *copies;

/* Set a leg's epoll interest: registered while there is something to wait for, removed when not. */
static void set_events(struct proxy_leg *l, uint32_t ev)
{
	net_epoll_set(cur->srv.ep, l->fd, l, &l->events, ev);
}

/* End a connection: close both legs (abortive ones with a reset), release the data path's
 * resources, free it after this batch. */
static void conn_end(struct proxy_conn *c, bool abort_client, bool abort_upstream, bool failed)
{
	for (int s = 0; s < 2; s++) {
		if ((s == PROXY_CLIENT && abort_client) || (s == PROXY_UPSTREAM && abort_upstream))
			proxy_abort(c->leg[s].fd);
		else
			close(c->leg[s].fd);
	}
	if (cur->ops->close)
		cur->ops->close(c);
	c->dead = true;
	c->next_dead = cur->dead;
	cur->dead = c;
	cur->st.active--;
	if (failed)
		cur->st.errors++;
	net_accept_resume(&cur->srv); /* descriptors are free again */
}

/* Leg s failed: close it, reset the other leg so that its peer sees the failure. */
static void conn_fail(struct proxy_conn *c, int s)
{
	conn_end(c, s != PROXY_CLIENT, s != PROXY_UPSTREAM, true);
}

/* Pump direction s with the data path. Returns false if the connection failed (it is then
 * ended). */
static bool pump(struct proxy_conn *c, int s)
{
	enum proxy_copy_result r = cur->ops->pump(c, s);
	if (r == PROXY_COPY_OK)
		return true;
	conn_fail(c, r == PROXY_COPY_IN_FAILED ? s : !s);
	return false;
}

/* Recompute both legs' interest after pumping. */
static void update_events(struct proxy_conn *c)
{
	for (int s = 0; s < 2; s++)
		set_events(&c->leg[s], cur->ops->interest(c, s));
}

/* Handle the epoll events of one leg. */
static void on_leg(void *tag, uint32_t ev)
{
	struct proxy_leg *l = tag;
	struct proxy_conn *c = l->c;
	if (c->dead)
		return; /* ended earlier in this batch */
	if (c->connecting) {
		int done = proxy_connected(&cur->up, l->fd, ev, EPOLLERR | EPOLLHUP);
		if (done < 0)
			conn_fail(c, PROXY_UPSTREAM);
		if (done <= 0)
			return;
		c->connecting = false;
	}
	if (!pump(c, PROXY_CLIENT) || !pump(c, PROXY_UPSTREAM))
		return;
	if (cur->ops->shut(c, PROXY_CLIENT) && cur->ops->shut(c, PROXY_UPSTREAM))
		conn_end(c, false, false, false); /* both FINs forwarded */
	else
		update_events(c);
}

/* --sndbuf/--rcvbuf on a leg. */
static void set_bufs(int fd) { net_set_bufs(fd, cur->opts.sndbuf, cur->opts.rcvbuf); }

/* Accept every pending connection, set up its data path and start its upstream connect. */
static void on_listen(void)
{
	int fd, ufd;
	bool done;
	while ((fd = proxy_accept(&cur->srv, &cur->up, &cur->st, set_bufs, &ufd, &done)) >= 0) {
		struct proxy_conn *c = calloc(1, cur->ops->conn_size);
		if (!c)
			net_die("out of memory");
		if (cur->ops->open && cur->ops->open(c) < 0) {
			free(c);
			cur->st.errors++;
			proxy_abort(fd);
			close(ufd);
			continue;
		}
		for (int s = 0; s < 2; s++)
			c->leg[s].c = c;
		c->leg[PROXY_CLIENT].fd = fd;
		c->leg[PROXY_UPSTREAM].fd = ufd;
		cur->st.active++;
		if (done) {
			update_events(c);
		} else {
			c->connecting = true;
			set_events(&c->leg[PROXY_UPSTREAM], EPOLLOUT);
		}
	}
}

/* Free the connections that ended in this batch of events. */
static void free_dead(void)
{
	while (cur->dead) {
		struct proxy_conn *c = cur->dead;
		cur->dead = c->next_dead;
		free(c);
	}
}

struct proxy *proxy_current(void) { return cur; }

/* One worker: serve its copy of the proxy on its listener until the proxy stops. */
static void serve(struct net_worker *w)
{
	cur = &copies[w->index];
	net_server_attach(&cur->srv, w);
	net_server_run(&cur->srv, on_listen, on_leg, free_dead);
	w->st = cur->st;
}

void proxy_run(struct proxy *p)
{
	unsigned n = p->workers ? p->workers : 1;
	/* Worker processes leave their upstream counters where the main process reads them. */
	copies = p->processes ? net_shared(n * sizeof(*copies)) : calloc(n, sizeof(*copies));
	if (!copies)
		net_die("out of memory");
	for (unsigned i = 0; i < n; i++)
		copies[i] = *p;
	p->wk = net_workers_run(p->opts.listen, p->server, n, p->processes, serve);
	p->st = net_workers_total(p->wk, n);
	for (unsigned i = 0; i < n; i++)
		p->up.errors += copies[i].up.errors;
	if (!p->processes)
		free(copies);
	copies = NULL;
}
