/* SPDX-License-Identifier: MIT */
/* Shared helpers for the splicebench data-path programs: address parsing, the command-line options
 * every server takes, listening sockets, the ready/summary JSON protocol on stdout
 * (docs/programs.md), signal handling through a signalfd, the one-thread epoll loop with its
 * accept handling and timer hook, pipes for splice(), and errors that end the program with one line
 * naming the cause. */
#ifndef SPLICEBENCH_NET_H
#define SPLICEBENCH_NET_H

#include <getopt.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/socket.h>

/* Counters every server reports in its summary line. */
struct net_stats {
	uint64_t connections; /* accepted so far */
	uint64_t active;      /* currently open */
	uint64_t bytes_in;    /* read from clients */
	uint64_t bytes_out;   /* written to clients */
	uint64_t errors;      /* connections that ended with an error */
};

/* Program name used as the prefix of error lines; set once from main(). */
extern const char *net_prog;

/* Print "prog: message" to stderr and exit(1). For failures at run time. */
void net_die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
/* Print "prog: message" (and a hint to use --help) to stderr and exit(2). For bad arguments. */
void net_usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));

/* Parse "HOST:PORT" or "[V6]:PORT" (numeric addresses only, no name lookup). Returns 0 or -1. */
int net_parse_addr(const char *s, struct sockaddr_storage *ss, socklen_t *len);
/* Parse a non-negative decimal integer no larger than max; exits with a usage error naming opt. */
uint64_t net_parse_u64(const char *opt, const char *s, uint64_t max);

/* Create a non-blocking listening TCP socket on addr (SO_REUSEADDR, backlog 65535: the kernel
 * caps it at net.core.somaxconn); exits on error. */
int net_listen(const char *addr);
/* Make fd non-blocking (and close-on-exec); exits on error. */
void net_set_nonblock(int fd);
/* Apply SO_SNDBUF / SO_RCVBUF when non-zero; failures are ignored (the kernel clamps them anyway).
 */
void net_set_bufs(int fd, int sndbuf, int rcvbuf);
/* Raise RLIMIT_NOFILE to its hard limit so that thousands of connections fit. */
void net_raise_nofile(void);
/* Block SIGTERM/SIGINT/SIGPIPE and return a non-blocking signalfd for SIGTERM and SIGINT. */
int net_signalfd(void);

/* Print the ready line for listening socket fd and flush stdout. */
void net_print_ready(const char *server, int fd);
/* Print the summary line (with the CPU time of this process and of its reaped worker processes)
 * and flush stdout. */
void net_print_summary(const char *server, const struct net_stats *st);

/* Monotonic clock in nanoseconds. */
uint64_t net_now_ns(void);

/* Print "prog: warning: message" to stderr. */
void net_warn(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Command line
 * ------------ */

/* getopt_long over the long options lo (no short options, getopt's own messages off). Returns the
 * next option's val, or -1 once the options end and no positional argument follows. A missing
 * value, an unknown option or a positional argument exits with a usage error naming it. */
int net_getopt(int argc, char **argv, const struct option *lo);

/* The options every server and proxy takes (docs/programs.md, "Common options"). */
struct net_opts {
	const char *listen; /* --listen ADDR:PORT */
	int sndbuf, rcvbuf; /* --sndbuf/--rcvbuf BYTES, 0 = kernel default */
};

/* Parse argv (net_getopt) into *o, whose fields hold the defaults on entry: --listen, --sndbuf and
 * --rcvbuf (each at most buf_max), --help (usage(stdout), then exit 0), and the program's own long
 * options `own` (ended by a zero entry, at most 16; their vals must be below 256), whose vals and
 * values go to own_opt. Bad arguments exit with a usage error. */
void net_parse_opts(int argc, char **argv, const struct option *own,
		    void (*own_opt)(int val, const char *arg), void (*usage)(FILE *f), int buf_max,
		    struct net_opts *o);

/* Sockets and pipes
 * ----------------- */

/* TCP_NODELAY on fd (errors ignored): forwarded or echoed tails go out at once instead of waiting
 * for the ACK of the previous segment (Nagle). */
void net_set_nodelay(int fd);
/* The pending error of a socket (SO_ERROR), 0 if none. */
int net_sock_error(int fd);

/* /proc/sys/fs/pipe-max-size, or 0 when it cannot be read. */
size_t net_pipe_max_size(void);
/* Check a --pipe-size value (usage error when 0) and return it capped to pipe-max-size. */
size_t net_pipe_size(size_t requested);
/* Create a non-blocking, close-on-exec pipe (fds[0] read end, fds[1] write end) of size bytes.
 * Returns its capacity in bytes, or 0 with errno set when no pipe could be made. When the kernel
 * refuses the size (usually EPERM: the user's pipes exceed fs.pipe-user-pages-soft) the pipe keeps
 * its default size, *refused counts it (atomically: worker threads may share the counter) and the
 * first refusal is reported on stderr. */
size_t net_pipe(int fds[2], size_t size, uint64_t *refused);
/* At exit: say on stderr how many pipes kept the default size, when any did. */
void net_pipe_report(uint64_t refused);

/* Event loop
 * ---------- */

/* epoll_create1(EPOLL_CLOEXEC); exits on error. */
int net_epoll_create(void);
/* Register fd with ep for events, data.ptr tag; exits on error. */
void net_epoll_add(int ep, int fd, uint32_t events, void *tag);
/* Change the interest of fd (registered with data.ptr tag) from *cur to ev with EPOLL_CTL_MOD and
 * store it in *cur; no system call when they are equal. Exits on error. */
void net_epoll_mod(int ep, int fd, void *tag, uint32_t *cur, uint32_t ev);
/* Like net_epoll_mod for a descriptor registered only while it waits for something: *cur 0 means
 * not registered (EPOLL_CTL_ADD), ev 0 removes it (EPOLL_CTL_DEL); a socket shut down both ways
 * reports EPOLLHUP forever and must not spin the loop. Exits on error. */
void net_epoll_set(int ep, int fd, void *tag, uint32_t *cur, uint32_t ev);

/* A server's listening socket, signalfd and epoll set (one thread, level-triggered), and its
 * optional timer hook (net_server_timer). */
struct net_server {
	int ep;		    /* epoll instance */
	int lfd;	    /* listening socket, registered with data.ptr listen_tag */
	int sfd;	    /* signalfd for SIGTERM/SIGINT, registered with data.ptr signal_tag */
	void *listen_tag;   /* epoll tags of lfd and sfd; net_server_open sets them */
	void *signal_tag;   /* (callers that register lfd themselves set listen_tag) */
	bool accept_paused; /* lfd has no interest: descriptors or memory ran out */
	bool accept_warned; /* the first accept (or per-connection pipe) failure was reported */
	void (*on_timer)(void); /* the timer hook; NULL: none */
	int tfd;		/* its timerfd, registered with data.ptr &tfd */
	long long timer_ns;	/* its period */
	bool timer_armed;	/* tfd is ticking */
};

/* Start a server: signalfd (net_signalfd), RLIMIT_NOFILE raised, listen on addr (net_listen), an
 * epoll set with both, then the ready line for `server` on stdout. Exits on error. */
void net_server_open(struct net_server *s, const char *addr, const char *server);
/* Serve until SIGTERM or SIGINT: hand the listening socket's events to on_listen() and every
 * other event to on_event(data.ptr, events), in the order epoll_wait reported them. After a batch
 * of events in which the timer hook's timerfd (net_server_timer) reported expirations, call
 * s->on_timer() once, after every other event of that batch, whether or not the hook was disarmed
 * meanwhile (expirations are consumed; missed ones do not add calls). Then call after_batch() when
 * it is not NULL. Returns as soon as a signal was read: neither the rest of that batch, nor the
 * timer hook, nor after_batch() runs. */
void net_server_run(struct net_server *s, void (*on_listen)(void),
		    void (*on_event)(void *tag, uint32_t events), void (*after_batch)(void));
/* Give s a timer hook for net_server_run: on_timer() runs every interval_ns (> 0) while the
 * hook is armed (net_server_timer_arm); it starts disarmed. Needs s->ep; exits on error. */
void net_server_timer(struct net_server *s, void (*on_timer)(void), long long interval_ns);
/* Arm (on: the first tick interval_ns from now, then periodic) or disarm the timer hook; nothing
 * changes when it already is (arming an armed hook keeps its phase). Exits on error. */
void net_server_timer_arm(struct net_server *s, bool on);
/* Accept one pending connection (non-blocking, close-on-exec). Returns its descriptor, or -1 when
 * there is nothing to accept now: none pending (also after EINTR or ECONNABORTED), or descriptors
 * or memory ran out, in which case the first time is reported on stderr and, while active > 0
 * connections may free one, accepting pauses (the connection waits in the backlog; level-triggered,
 * the loop would spin otherwise) until net_accept_resume. Exits on any other error. */
int net_accept(struct net_server *s, uint64_t active);
/* Stop (no events) or resume (EPOLLIN) accepting on s->lfd. Exits on error. */
void net_accept_pause(struct net_server *s, bool pause);
/* A connection was closed: resume accepting if it was paused, a descriptor is free again. */
void net_accept_resume(struct net_server *s);
/* Print the summary line like net_print_summary with the JSON fragment extra (",\"key\":value..."
 * or "") after the errors field. Flushes stdout. */
void net_print_summary_extra(const char *server, const struct net_stats *st, const char *extra);

/* Workers
 * -------
 * A server given --workers N runs N workers, each with its own listening socket on the same port
 * (SO_REUSEPORT: the kernel spreads new connections over them), its own epoll set and its own
 * connections; nothing is shared between them but the read-only options. N = 1 is the one-thread
 * server of old: no extra thread or process, no SO_REUSEPORT. The workers are threads, or with
 * --processes processes forked after the listeners (and anything else set up before
 * net_workers_run, such as BPF objects) exist: each then has its own RLIMIT_NOFILE, so that N of
 * them hold N times the connections one process may. A program keeps its per-connection state in
 * thread-local variables (__thread) and gives net_workers_run a serve() that runs one worker;
 * counters that workers share go in net_shared memory. */

#define NET_WORKERS_MAX 256

/* One worker of a server (in shared memory when the workers are processes). */
struct net_worker {
	unsigned index;
	int lfd;	      /* its listening socket */
	int ep;		      /* its epoll set (made before the ready line: it is ready then) */
	int stopfd;	      /* readable once the server is to stop: the signalfd (N = 1, or a
			       * worker process, which gets SIGTERM from the server's main process)
			       * or an eventfd the main thread writes on SIGTERM/SIGINT */
	struct net_stats st;  /* its counters; serve() copies them here before it returns */
	double cpu_user_s;    /* its CPU time (RUSAGE_THREAD, or RUSAGE_SELF for a process), taken */
	double cpu_sys_s;     /* when serve() returned */
	void (*serve)(struct net_worker *w);
	unsigned long th;     /* its pthread_t (threads, N > 1) */
	int pid;	      /* its process id (processes, N > 1) */
};

/* Parse a --workers value (1..NET_WORKERS_MAX); usage error otherwise. */
unsigned net_parse_workers(const char *arg);
/* Zeroed memory that worker processes share with the main process (MAP_SHARED, anonymous; it
 * stays mapped until the process exits). Exits on error. */
void *net_shared(size_t size);
/* Listen on addr with n workers, print the ready line for `server`, run serve(w) for each worker
 * (in n threads, or in n processes when procs, or in this thread when n is 1) until SIGTERM or
 * SIGINT, and return the workers (their counters and CPU time filled in) after all have stopped.
 * Worker processes die with the main process (PR_SET_PDEATHSIG), are stopped with SIGTERM and
 * reaped by it; one that ends before it is stopped ends the server with one line naming it.
 * RLIMIT_NOFILE is raised first. Exits on error. */
struct net_worker *net_workers_run(const char *addr, const char *server, unsigned n, bool procs,
				   void (*serve)(struct net_worker *w));
/* The serve() of a server whose worker state is s and st (thread-local): attach s to w
 * (net_server_attach), run it (net_server_run with the callbacks), then copy *st to w->st. */
void net_worker_serve(struct net_worker *w, struct net_server *s, const struct net_stats *st,
		      void (*on_listen)(void), void (*on_event)(void *tag, uint32_t events),
		      void (*after_batch)(void));
/* A whole echo server's run: net_workers_run, then (before_summary, when not NULL, and) the
 * summary line for `server` with the workers' sum and their "workers" array. */
void net_workers_main(const char *addr, const char *server, unsigned n, bool procs,
		      void (*serve)(struct net_worker *w), void (*before_summary)(void));
/* Set up s for worker w: its listening socket, its stop descriptor (as the signal tag) and its
 * epoll set, registering both there; no ready line (net_workers_run printed it). */
void net_server_attach(struct net_server *s, const struct net_worker *w);
/* The sum of the n workers' counters. */
struct net_stats net_workers_total(const struct net_worker *w, unsigned n);
/* Write the JSON fragment ",\"workers\":[{\"connections\":..,\"bytes_in\":..,\"cpu_user_s\":..,
 * \"cpu_sys_s\":..},...]" for the n workers into buf (len bytes; truncated output exits). */
void net_workers_json(const struct net_worker *w, unsigned n, char *buf, size_t len);

#endif
