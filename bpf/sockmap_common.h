/* SPDX-License-Identifier: MIT */
/* Shared by the SOCKMAP loaders (bpf/echo_sockmap.c, bpf/proxy_sockmap.c): the privilege and
 * kernel-support checks with their one-line errors, quiet libbpf output, loading and attaching
 * sk_skb programs, per-CPU counters, socket cookies, map insertion and the kick that hands queued
 * bytes to a freshly installed verdict. Everything takes descriptors and values, never a skeleton,
 * so that each loader keeps its own BPF object. Errors that end the program use net_die(). */
#ifndef SPLICEBENCH_SOCKMAP_COMMON_H
#define SPLICEBENCH_SOCKMAP_COMMON_H

#include <linux/tcp.h>
#include <stdbool.h>
#include <stdint.h>

#include <bpf/bpf.h>

/* The hint appended to every "not permitted" error. */
#define SOCKMAP_NEED_PRIVS                                                                         \
	"run as root or grant CAP_BPF and CAP_NET_ADMIN (setcap cap_bpf,cap_net_admin+ep)"

/* Exit with "missing CAP_BPF/CAP_NET_ADMIN: ..." unless the effective capability set holds
 * CAP_NET_ADMIN and CAP_BPF (or CAP_SYS_ADMIN). Root in a user namespace passes: callers still
 * have to ask bpf() itself. */
void sockmap_check_caps(void);

/* Exit with the one line saying this kernel has no SOCKMAP support; parser adds the stream parser
 * option to the kernel options it names. */
void sockmap_die_unsupported(bool parser) __attribute__((noreturn));

/* Route libbpf's messages to stderr, warnings and errors only: debug output would break the
 * one-line error contract of docs/programs.md. Call before opening a BPF object. */
void sockmap_quiet_libbpf(void);

/* err is the result of a skeleton's __load(): return when 0, else exit with "load BPF programs:
 * ..." (plus the privilege hint for EPERM/EACCES). */
void sockmap_check_load(int err);

/* Attach program prog_fd to the sockmap/sockhash map_fd as type (BPF_SK_SKB_STREAM_VERDICT or
 * _PARSER) with the raw command (libbpf 1.1 has no bpf_program__attach_sockmap). On failure exit
 * with "attach <what>: <error>", naming the missing kernel option when a parser gets EOPNOTSUPP. */
void sockmap_attach(int prog_fd, int map_fd, enum bpf_attach_type type, const char *what);

/* Detach program prog_fd of type from map_fd; errors are ignored (teardown, the kernel frees
 * what is left with the last descriptor). */
void sockmap_detach(int prog_fd, int map_fd, enum bpf_attach_type type);

/* Sum slot `slot` of the PERCPU_ARRAY counters_fd (uint64_t values) over all possible CPUs.
 * Returns 0 when the map cannot be read. */
uint64_t sockmap_read_counter(int counters_fd, uint32_t slot);

/* Apply sndbuf/rcvbuf (0 = leave the kernel's autotuning alone) to socket fd. Sizes above
 * net.core.{w,r}mem_max need the FORCE variants (CAP_NET_ADMIN, which a loader has anyway); when
 * those fail, fall back to the plain options (net_set_bufs). */
void sockmap_set_bufs(int fd, int sndbuf, int rcvbuf);

/* Store the socket cookie of fd (SO_COOKIE, what bpf_get_socket_cookie() returns on the BPF side)
 * in *cookie. Returns 0, or -1 with errno set. */
int sockmap_cookie(int fd, uint64_t *cookie);

/* Insert socket sock_fd into the sockmap/sockhash map_fd under key (a cookie for a SOCKHASH, a
 * slot for a SOCKMAP), failing if the key is taken (BPF_NOEXIST). Returns 0, or a negative value
 * with errno set (EOPNOTSUPP: the socket is not ESTABLISHED; ENOSPC or E2BIG: map full). */
int sockmap_insert(int map_fd, const void *key, int sock_fd);

/* The kick: setsockopt(SO_RCVLOWAT, 1) on fd, which runs the now-installed verdict over every
 * byte queued before it existed, in order (the design comment at the top of bpf/echo_sockmap.c
 * explains why this is needed and why it is safe). Call right after the socket entered a map with
 * a verdict. Returns 0, or -1 with errno set. */
int sockmap_kick(int fd);

/* TCP_INFO of fd into *ti (zeroed first). Returns 0, or -1 with errno set. */
int sockmap_tcp_info(int fd, struct tcp_info *ti);

/* The value of --max-conns: a decimal from 1 to 2^24; anything else exits with a usage error. */
uint32_t sockmap_parse_max_conns(const char *arg);

#endif
