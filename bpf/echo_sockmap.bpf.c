// SPDX-License-Identifier: (MIT OR GPL-2.0)
/* Kernel side of sb-echo-sockmap: an sk_skb stream_verdict program that sends every byte a
 * connection receives back out of the same socket (egress redirect, flags 0), without the bytes
 * ever reaching user space. Each connection is found by its socket cookie, so any number of
 * connections are echoed at once. An optional stream_parser that accepts whatever is queued lets
 * the same verdict run behind the kernel's strparser (--parser). The loader is bpf/echo_sockmap.c.
 */
#include <linux/bpf.h> /* first: the libbpf headers use its types */

#include <bpf/bpf_helpers.h>

#include "counters.h"
#include "echo_sockmap.h"

char LICENSE[] SEC("license") = "Dual MIT/GPL";

/* Set by the loader before load (--map); the verifier prunes the branch that is not taken. */
const volatile __u32 map_kind = ECHO_MAP_SOCKHASH;

/* cookie -> socket; used with --map sockhash (the default). The loader sets max_entries. The
 * 8-byte value lets user space (bpftool map dump) read entries back: a lookup returns the socket's
 * cookie, so every entry shows key == value. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKHASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u64);
} sock_hash SEC(".maps");

/* slot -> socket; used with --map sockmap, together with slot_of below. */
struct {
	__uint(type, BPF_MAP_TYPE_SOCKMAP);
	__uint(max_entries, 65536);
	__type(key, __u32);
	__type(value, __u64);
} sock_map SEC(".maps");

/* cookie -> slot in sock_map. The loader writes it before it inserts the socket into sock_map, so
 * that the verdict can never run on a socket whose slot it cannot find. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, __u32);
} slot_of SEC(".maps");

/* Accept everything that is queued as one message: with a parser, the verdict still sees every
 * byte in order, only in the strparser's framing. */
SEC("sk_skb/stream_parser")
int echo_parser(struct __sk_buff *skb) { return skb->len; }

/* Redirect the skb to the egress of the socket it arrived on. A failed lookup (the socket is
 * being removed) returns SK_DROP, never SK_PASS: passed bytes would wait in user space while
 * later bytes overtake them in the kernel, so an echo could come back out of order. */
SEC("sk_skb/stream_verdict")
int echo_verdict(struct __sk_buff *skb)
{
	__u64 cookie = bpf_get_socket_cookie(skb);
	__u32 len = skb->len;
	long verdict;

	/* The client's FIN alone arrives as an empty skb. Redirected, the backlog worker's send of
	 * zero bytes returns 0, which it takes for a broken pipe: it sets EPIPE on the socket and
	 * stops transmitting. TCP has already processed the FIN, so the empty skb carries nothing.
	 */
	if (!len)
		return SK_DROP;
	if (map_kind == ECHO_MAP_SOCKMAP) {
		__u32 *slot = bpf_map_lookup_elem(&slot_of, &cookie);
		verdict = slot ? bpf_sk_redirect_map(skb, &sock_map, *slot, 0) : SK_DROP;
	} else {
		verdict = bpf_sk_redirect_hash(skb, &sock_hash, &cookie, 0);
	}
	if (verdict == SK_PASS) {
		counter_add(ECHO_CNT_REDIR_BYTES, len);
		counter_add(ECHO_CNT_REDIR_SKBS, 1);
	} else {
		counter_add(ECHO_CNT_DROP_BYTES, len);
		counter_add(ECHO_CNT_DROP_SKBS, 1);
	}
	return verdict;
}
