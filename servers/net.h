/* SPDX-License-Identifier: MIT */
/* Shared helpers for the splicebench data-path programs: address parsing, listening sockets, the
 * ready/summary JSON protocol on stdout (docs/programs.md), signal handling through a signalfd, and
 * errors that end the program with one line naming the cause. */
#ifndef SPLICEBENCH_NET_H
#define SPLICEBENCH_NET_H

#include <stddef.h>
#include <stdint.h>
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

/* Create a non-blocking listening TCP socket on addr (SO_REUSEADDR, backlog 4096); exits on error. */
int net_listen(const char *addr);
/* Make fd non-blocking (and close-on-exec); exits on error. */
void net_set_nonblock(int fd);
/* Apply SO_SNDBUF / SO_RCVBUF when non-zero; failures are ignored (the kernel clamps them anyway). */
void net_set_bufs(int fd, int sndbuf, int rcvbuf);
/* Raise RLIMIT_NOFILE to its hard limit so that thousands of connections fit. */
void net_raise_nofile(void);
/* Block SIGTERM/SIGINT/SIGPIPE and return a non-blocking signalfd for SIGTERM and SIGINT. */
int net_signalfd(void);

/* Print the ready line for listening socket fd and flush stdout. */
void net_print_ready(const char *server, int fd);
/* Print the summary line (with this process's CPU time) and flush stdout. */
void net_print_summary(const char *server, const struct net_stats *st);

/* Monotonic clock in nanoseconds. */
uint64_t net_now_ns(void);

#endif
