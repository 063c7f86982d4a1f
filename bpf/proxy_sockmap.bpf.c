// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* Kernel side of sb-proxy-sockmap: sk_skb stream_verdict programs that send every byte one leg of a
 * proxied connection receives out of the other leg (egress redirect, flags 0), so the payload never
 * reaches user space. The loader is bpf/proxy_sockmap.c; its header comment explains the design.
 *
 * Three SOCKHASHes, all keyed by socket cookie:
 *  - clients:   client legs; client_verdict is attached to it,
 *  - upstreams: upstream legs; upstream_verdict is attached to it,
 *  - peer_of:   cookie of one leg -> the OTHER leg's socket; no program is attached, it only
 *               serves as the redirect target, so one lookup finds where a byte goes.
 * Two verdict programs instead of one only so that each knows its direction for the counters. */
#include <linux/bpf.h>

#include <bpf/bpf_helpers.h> /* needs the types of linux/bpf.h first */

#include "counters.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* The loader sets max_entries of all three (--max-conns; peer_of twice that). */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64); /* an fd on update; user-space lookups return the cookie */
} clients SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64); /* an fd on update; user-space lookups return the cookie */
} upstreams SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 131072);
	__type(key, __u64);
	__type(value, __u64); /* an fd on update; user-space lookups return the cookie */
} peer_of SEC(".maps");

/* Send the skb out of the peer leg. A failed lookup (the peer leg is being closed, which happens
 * only when the connection ends) returns SK_DROP, never SK_PASS: passed bytes would wait in user
 * space while later bytes overtake them in the kernel.
 * An skb without payload (a bare FIN) is dropped, not redirected: the psock backlog worker treats a
 * zero-byte skb_send_sock() as a hard error, reports EPIPE on the TARGET socket and stops sending
 * on it (sk_psock_backlog, "Hard errors break pipe"). The FIN itself is already in the TCP state of
 * this leg; user space forwards it with shutdown() once the data has gone out. */
static __always_inline int forward(struct __sk_buff *skb, __u32 slot)
{
	__u32 len = skb->len;
	if (len == 0)
		return SK_DROP;

	__u64 cookie = bpf_get_socket_cookie(skb);
	long verdict = bpf_sk_redirect_hash(skb, &peer_of, &cookie, 0);

	if (verdict == SK_PASS) {
		counter_add(slot, len);
	} else {
		counter_add(PROXY_CNT_DROP_BYTES, len);
		counter_add(PROXY_CNT_DROP_SKBS, 1);
	}
	return verdict;
}

SEC("sk_skb/stream_verdict")
int client_verdict(struct __sk_buff *skb) { return forward(skb, PROXY_CNT_C2U_BYTES); }

SEC("sk_skb/stream_verdict")
int upstream_verdict(struct __sk_buff *skb) { return forward(skb, PROXY_CNT_U2C_BYTES); }

/* Accept everything that is queued as one message (--parser): the verdicts still see every byte in
 * order, only in the strparser's framing. */
SEC("sk_skb/stream_parser")
int proxy_parser(struct __sk_buff *skb) { return skb->len; }
