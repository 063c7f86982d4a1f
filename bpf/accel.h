/* SPDX-License-Identifier: MIT */
/* Shared between bpf/accel.bpf.c (kernel side) and bpf/accel.c (loader): the key of accel_hash
 * and the per-socket decision (its counters are in bpf/counters.h). Plain C types only, so that
 * both the BPF target and the host compiler accept them. */
#ifndef SPLICEBENCH_ACCEL_H
#define SPLICEBENCH_ACCEL_H

/* A socket's 4-tuple as seen from the socket: addresses in network byte order (IPv4 in [0], the
 * rest zero; IPv4-mapped IPv6 addresses are stored as IPv4), ports in host byte order. */
struct accel_key {
	unsigned int family; /* AF_INET or AF_INET6 */
	unsigned int lip[4];
	unsigned int rip[4];
	unsigned int lport;
	unsigned int rport;
};

/* The decision a socket's first message records for all its messages (dir_of). */
enum accel_decision {
	ACCEL_UNDECIDED = 0, /* no message sent yet */
	ACCEL_REDIRECT = 1,  /* every message goes to the peer's ingress queue */
	ACCEL_TCP = 2,	     /* every message goes by TCP */
};

#endif
