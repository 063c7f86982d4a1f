/* SPDX-License-Identifier: MIT */
/* Shared between bpf/proxy_sockmap.bpf.c (kernel side) and bpf/proxy_sockmap.c (loader): the slots
 * of the per-CPU counter array. Plain C types only, so that both the BPF target and the host
 * compiler accept it. */
#ifndef SPLICEBENCH_PROXY_SOCKMAP_H
#define SPLICEBENCH_PROXY_SOCKMAP_H

/* Slots of the `counters` PERCPU_ARRAY; the loader sums them over CPUs. */
enum proxy_counter {
	PROXY_CNT_C2U_BYTES = 0, /* client -> upstream bytes handed to the redirect */
	PROXY_CNT_U2C_BYTES,	 /* upstream -> client bytes handed to the redirect */
	PROXY_CNT_DROP_BYTES,	 /* bytes dropped: the peer socket was no longer in peer_of */
	PROXY_CNT_DROP_SKBS,	 /* skbs dropped for the same reason */
	PROXY_CNT_MAX,
};

#endif
