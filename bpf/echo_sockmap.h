/* SPDX-License-Identifier: MIT */
/* Shared between bpf/echo_sockmap.bpf.c (kernel side) and bpf/echo_sockmap.c (loader): which map
 * the verdict program redirects through (its counters are in bpf/counters.h). Plain C types only,
 * so that both the BPF target and the host compiler accept it. */
#ifndef SPLICEBENCH_ECHO_SOCKMAP_H
#define SPLICEBENCH_ECHO_SOCKMAP_H

/* Value of the read-only `map_kind` set by the loader before load. */
enum echo_map_kind {
	ECHO_MAP_SOCKHASH = 0, /* sock_hash keyed by socket cookie */
	ECHO_MAP_SOCKMAP = 1,  /* sock_map keyed by slot; slot_of maps cookie -> slot */
};

#endif
