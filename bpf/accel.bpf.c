// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* Kernel side of sb-accel: SOCKMAP acceleration of unmodified programs on one host, the way
 * Envoy's sockmap socket interface, Kmesh and Merbridge do it. A sockops program attached to a
 * cgroup puts every established TCP socket of that cgroup into accel_hash, keyed by its 4-tuple;
 * an sk_msg program on accel_hash hands each sendmsg of such a socket straight to the receive
 * (ingress) queue of its peer socket, found under the mirrored 4-tuple, skipping TCP/IP. The
 * loader is bpf/accel.c.
 *
 * Correctness: a direction of a connection is redirected from its first byte or never.
 *
 * tcp_bpf's recvmsg reads the psock's ingress queue (where redirected messages land) before the
 * socket's TCP receive queue, so bytes of one direction split between the two paths would be
 * read out of order. The split threatens at the start of a connection:
 *
 * - The active side (connect()) enters the map at ACTIVE_ESTABLISHED, inside connect(), before
 *   its program can send anything; the passive side enters at PASSIVE_ESTABLISHED, when the
 *   server's kernel processes the final ACK of the handshake. That ACK may still be on its way
 *   (another CPU's backlog, ksoftirqd) when connect() returns, and a client that writes at once
 *   then sends while its peer is not in the map yet: the redirect finds nothing. Had that first
 *   message gone by TCP and the next ones by the redirect, the receiver would read them first.
 * - The passive side's peer is always in the map before the passive side can send: the active
 *   socket was inserted before it sent the ACK that created the passive one. A socket that could
 *   not be inserted (map full) never runs this program; its peer then finds nothing and uses TCP.
 *
 * So the sk_msg program decides once per socket, at its first message, and records the decision
 * in socket-local storage (dir_of): REDIRECT when the peer is in the map at that moment, TCP when
 * it is not. Every later message of that socket follows the recorded path. A REDIRECT direction
 * whose peer leaves the map (closed) drops the message (sendmsg fails with an error the program
 * sees) instead of sending it by TCP behind bytes still queued at the peer; a message without
 * storage (allocation failed at the first message) is dropped the same way, since the decision
 * can no longer be known. The two directions of a connection decide independently; each is
 * consistent, which is all the receiver needs.
 *
 * The counters (bpf/counters.h, accel_counter) count the decisions (per direction), messages and
 * bytes redirected, and the failures.
 */
#include <linux/bpf.h> /* first: the libbpf headers use its types */

#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "accel.h"
#include "counters.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

#define AF_INET 2
#define AF_INET6 10

/* 4-tuple -> socket. The loader sets max_entries (--max-conns); sockets leave it when they close. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, struct accel_key);
	__type(value, __u64);
} accel_hash SEC(".maps");

/* The per-socket decision, made at the socket's first message (see the comment at the top). */
struct {
	__uint(type, BPF_MAP_TYPE_SK_STORAGE);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, int);
	__type(value, __u32); /* enum accel_decision */
} dir_of SEC(".maps");

/* An IPv4-mapped IPv6 address (::ffff:a.b.c.d), so that a dual-stack socket and its IPv4 peer
 * get mirrored keys. */
static __always_inline int v4_mapped(const __u32 *ip6)
{
	return ip6[0] == 0 && ip6[1] == 0 && ip6[2] == bpf_htonl(0x0000ffff);
}

/* Fill one side (address, port) of a key; ip6 is used for AF_INET6 unless it is IPv4-mapped. */
static __always_inline void key_side(__u32 *ip, __u32 family, __u32 ip4, const __u32 *ip6)
{
	if (family == AF_INET6 && !v4_mapped(ip6)) {
		ip[0] = ip6[0];
		ip[1] = ip6[1];
		ip[2] = ip6[2];
		ip[3] = ip6[3];
	} else {
		ip[0] = family == AF_INET6 ? ip6[3] : ip4;
	}
}

/* The key's family: AF_INET also for IPv4-mapped IPv6 sockets. */
static __always_inline __u32 key_family(__u32 family, const __u32 *ip6)
{
	return family == AF_INET6 && !v4_mapped(ip6) ? AF_INET6 : AF_INET;
}

/* Whether a key's remote address is a loopback address (127.0.0.0/8 or ::1). */
static __always_inline int remote_loopback(const struct accel_key *k)
{
	if (k->family == AF_INET)
		return (bpf_ntohl(k->rip[0]) >> 24) == 127;
	return k->rip[0] == 0 && k->rip[1] == 0 && k->rip[2] == 0 && k->rip[3] == bpf_htonl(1);
}

/* Put every established TCP socket of the cgroup into accel_hash under its own 4-tuple.
 * remote_port holds the port in network byte order in its upper 16 bits (on little- and
 * big-endian kernels alike, after bpf_ntohl the port is the low 16 bits). */
SEC("sockops")
int accel_sockops(struct bpf_sock_ops *skops)
{
	if (skops->op != BPF_SOCK_OPS_ACTIVE_ESTABLISHED_CB &&
	    skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	__u32 family = skops->family;
	if (family != AF_INET && family != AF_INET6)
		return 1;
	struct accel_key k = {};
	__u32 lip6[4] = {skops->local_ip6[0], skops->local_ip6[1], skops->local_ip6[2],
			 skops->local_ip6[3]};
	__u32 rip6[4] = {skops->remote_ip6[0], skops->remote_ip6[1], skops->remote_ip6[2],
			 skops->remote_ip6[3]};
	k.family = key_family(family, rip6);
	key_side(k.lip, family, skops->local_ip4, lip6);
	key_side(k.rip, family, skops->remote_ip4, rip6);
	k.lport = skops->local_port;
	k.rport = bpf_ntohl(skops->remote_port) & 0xffff;
	if (bpf_sock_hash_update(skops, &accel_hash, &k, BPF_NOEXIST) == 0)
		counter_add(ACCEL_CNT_SOCKS, 1);
	else
		counter_add(ACCEL_CNT_INSERT_FAIL, 1);
	return 1;
}

/* Every sendmsg of a socket in accel_hash: redirect to the peer's ingress queue, or pass to TCP,
 * as decided at the socket's first message (the comment at the top). */
SEC("sk_msg")
int accel_msg(struct sk_msg_md *msg)
{
	struct bpf_sock *sk = msg->sk;
	if (!sk)
		return SK_PASS; /* not reached: every socket here is a full socket */
	__u32 *decision = bpf_sk_storage_get(&dir_of, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
	if (!decision) {
		counter_add(ACCEL_CNT_NO_STORAGE, 1);
		return SK_DROP;
	}
	if (*decision == ACCEL_TCP)
		return SK_PASS;
	/* The peer's key: this socket's 4-tuple mirrored. */
	__u32 family = msg->family;
	struct accel_key k = {};
	__u32 lip6[4] = {msg->local_ip6[0], msg->local_ip6[1], msg->local_ip6[2],
			 msg->local_ip6[3]};
	__u32 rip6[4] = {msg->remote_ip6[0], msg->remote_ip6[1], msg->remote_ip6[2],
			 msg->remote_ip6[3]};
	k.family = key_family(family, rip6);
	key_side(k.lip, family, msg->remote_ip4, rip6);
	key_side(k.rip, family, msg->local_ip4, lip6);
	k.lport = bpf_ntohl(msg->remote_port) & 0xffff;
	k.rport = msg->local_port;
	__u32 size = msg->size;
	long verdict = bpf_msg_redirect_hash(msg, &accel_hash, &k, BPF_F_INGRESS);
	if (*decision == ACCEL_UNDECIDED) {
		if (verdict == SK_PASS) {
			*decision = ACCEL_REDIRECT;
			counter_add(ACCEL_CNT_DIRS_REDIR, 1);
		} else {
			*decision = ACCEL_TCP;
			/* this socket's remote is the peer's address: k.lip holds it */
			struct accel_key mine = {.family = k.family};
			mine.rip[0] = k.lip[0];
			mine.rip[1] = k.lip[1];
			mine.rip[2] = k.lip[2];
			mine.rip[3] = k.lip[3];
			counter_add(remote_loopback(&mine) ? ACCEL_CNT_DIRS_TCP_EARLY
							   : ACCEL_CNT_DIRS_TCP_REMOTE,
				    1);
			return SK_PASS;
		}
	}
	if (verdict != SK_PASS) {
		counter_add(ACCEL_CNT_REDIR_FAIL, 1);
		return SK_DROP;
	}
	counter_add(ACCEL_CNT_MSGS, 1);
	counter_add(ACCEL_CNT_BYTES, size);
	return SK_PASS;
}
