/* SPDX-License-Identifier: MIT */
/* The per-CPU counters of the SOCKMAP programs, for both kernel sides (bpf/echo_sockmap.bpf.c,
 * bpf/proxy_sockmap.bpf.c, bpf/accel.bpf.c) and their loaders: each program's slot indices, in plain C types so that
 * both the BPF target and the host compiler accept them, and, compiled for the BPF target only, the
 * `counters` PERCPU_ARRAY and counter_add(). Each .bpf.c includes it once and so has its own map;
 * its loader sums a slot over CPUs with sockmap_read_counter() (bpf/sockmap_common.h). */
#ifndef SPLICEBENCH_COUNTERS_H
#define SPLICEBENCH_COUNTERS_H

/* Slots of sb-echo-sockmap's counters. */
enum echo_counter {
	ECHO_CNT_REDIR_BYTES = 0, /* bytes handed to the echo redirect */
	ECHO_CNT_REDIR_SKBS,	  /* skbs handed to the echo redirect */
	ECHO_CNT_DROP_BYTES,	  /* bytes dropped: the socket was not found in the map */
	ECHO_CNT_DROP_SKBS,	  /* skbs dropped for the same reason */
	ECHO_CNT_MAX,
};

/* Slots of sb-proxy-sockmap's counters. */
enum proxy_counter {
	PROXY_CNT_C2U_BYTES = 0, /* client -> upstream bytes handed to the redirect */
	PROXY_CNT_U2C_BYTES,	 /* upstream -> client bytes handed to the redirect */
	PROXY_CNT_DROP_BYTES,	 /* bytes dropped: the peer socket was no longer in peer_of */
	PROXY_CNT_DROP_SKBS,	 /* skbs dropped for the same reason */
	PROXY_CNT_MAX,
};

/* Slots of sb-accel's counters (bpf/accel.bpf.c explains the decision they count). */
enum accel_counter {
	ACCEL_CNT_SOCKS = 0,	   /* established sockets inserted into accel_hash */
	ACCEL_CNT_INSERT_FAIL,	   /* established sockets that could not be inserted (map full) */
	ACCEL_CNT_DIRS_REDIR,	   /* directions redirected from their first byte */
	ACCEL_CNT_DIRS_TCP_EARLY,  /* directions on TCP: loopback peer not in the map at the first send */
	ACCEL_CNT_DIRS_TCP_REMOTE, /* directions on TCP: non-loopback peer not in this map */
	ACCEL_CNT_MSGS,		   /* messages (sendmsg verdicts) redirected */
	ACCEL_CNT_BYTES,	   /* bytes redirected */
	ACCEL_CNT_REDIR_FAIL,	   /* messages dropped: a redirected direction lost its peer */
	ACCEL_CNT_NO_STORAGE,	   /* messages dropped: no socket storage for the decision */
	ACCEL_CNT_MAX,
};

/* Slots of the `counters` map: enough for any of the programs. */
#define COUNTERS_MAX2(a, b) ((a) > (b) ? (a) : (b))
#define COUNTERS_SLOTS COUNTERS_MAX2(COUNTERS_MAX2(ECHO_CNT_MAX, PROXY_CNT_MAX), ACCEL_CNT_MAX)

#ifdef __bpf__
#include <linux/bpf.h> /* first: the libbpf headers use its types */

#include <bpf/bpf_helpers.h>

/* One __u64 per slot and CPU: a program only adds to its own CPU's copy, so no atomics. */
struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, COUNTERS_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

/* Add n to slot `slot` of this CPU's counters (a slot outside the map is ignored). */
static __always_inline void counter_add(__u32 slot, __u64 n)
{
	__u64 *c = bpf_map_lookup_elem(&counters, &slot);
	if (c)
		*c += n; /* per-CPU slot: no other writer */
}
#endif

#endif
