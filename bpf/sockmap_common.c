// SPDX-License-Identifier: MIT
/* Helpers shared by the SOCKMAP loaders; contracts in sockmap_common.h. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/capability.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <bpf/libbpf.h>

#include "net.h"
#include "sockmap_common.h"

#ifndef CAP_BPF
#define CAP_BPF 39
#endif
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

/* True when the effective capability set holds cap. */
static bool have_cap(int cap)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3, .pid = 0};
	struct __user_cap_data_struct data[2];
	memset(data, 0, sizeof(data));
	if (syscall(SYS_capget, &hdr, data) < 0)
		return false;
	return data[cap / 32].effective & (1u << (cap % 32));
}

void sockmap_check_caps(void)
{
	if (!have_cap(CAP_NET_ADMIN) || !(have_cap(CAP_BPF) || have_cap(CAP_SYS_ADMIN)))
		net_die("missing CAP_BPF/CAP_NET_ADMIN: " SOCKMAP_NEED_PRIVS);
}

void sockmap_die_unsupported(bool parser)
{
	net_die("this kernel has no SOCKMAP support (needs CONFIG_BPF_SYSCALL and "
		"CONFIG_NET_SOCK_MSG%s)",
		parser ? " and CONFIG_BPF_STREAM_PARSER" : "");
}

/* libbpf messages: warnings and errors only; debug output would break the one-line contract. */
static int libbpf_print(enum libbpf_print_level level, const char *fmt, va_list ap)
{
	if (level == LIBBPF_DEBUG)
		return 0;
	return vfprintf(stderr, fmt, ap);
}

void sockmap_quiet_libbpf(void) { libbpf_set_print(libbpf_print); }

void sockmap_check_load(int err)
{
	if (!err)
		return;
	if (err == -EPERM || err == -EACCES)
		net_die("load BPF programs: %s: " SOCKMAP_NEED_PRIVS, strerror(-err));
	net_die("load BPF programs: %s", strerror(-err));
}

void sockmap_attach(int prog_fd, int map_fd, enum bpf_attach_type type, const char *what)
{
	if (bpf_prog_attach(prog_fd, map_fd, type, 0) < 0)
		net_die("attach %s: %s%s", what, strerror(errno),
			type == BPF_SK_SKB_STREAM_PARSER && errno == EOPNOTSUPP
			    ? " (kernel without CONFIG_BPF_STREAM_PARSER)"
			    : "");
}

void sockmap_detach(int prog_fd, int map_fd, enum bpf_attach_type type)
{
	(void)bpf_prog_detach2(prog_fd, map_fd, type);
}

uint64_t sockmap_read_counter(int counters_fd, uint32_t slot)
{
	int ncpu = libbpf_num_possible_cpus();
	if (ncpu <= 0)
		return 0;
	uint64_t *v = calloc((size_t)ncpu, sizeof(*v));
	uint64_t sum = 0;
	if (v && bpf_map_lookup_elem(counters_fd, &slot, v) == 0)
		for (int i = 0; i < ncpu; i++)
			sum += v[i];
	free(v);
	return sum;
}

void sockmap_set_bufs(int fd, int sndbuf, int rcvbuf)
{
	if (sndbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_SNDBUFFORCE, &sndbuf, sizeof(int)) < 0)
		net_set_bufs(fd, sndbuf, 0);
	if (rcvbuf > 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, &rcvbuf, sizeof(int)) < 0)
		net_set_bufs(fd, 0, rcvbuf);
}

int sockmap_cookie(int fd, uint64_t *cookie)
{
	socklen_t len = sizeof(*cookie);
	return getsockopt(fd, SOL_SOCKET, SO_COOKIE, cookie, &len);
}

int sockmap_insert(int map_fd, const void *key, int sock_fd)
{
	uint64_t val = (uint64_t)sock_fd;
	return bpf_map_update_elem(map_fd, key, &val, BPF_NOEXIST);
}

int sockmap_kick(int fd)
{
	int one = 1;
	return setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, &one, sizeof(one));
}

int sockmap_tcp_info(int fd, struct tcp_info *ti)
{
	socklen_t len = sizeof(*ti);
	memset(ti, 0, sizeof(*ti));
	return getsockopt(fd, IPPROTO_TCP, TCP_INFO, ti, &len);
}

uint32_t sockmap_parse_max_conns(const char *arg)
{
	uint32_t n = (uint32_t)net_parse_u64("--max-conns", arg, 1u << 24);
	if (!n)
		net_usage_error("--max-conns: must be at least 1");
	return n;
}
