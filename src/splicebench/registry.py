"""What can be run: the echo servers, their options, and the load client's workloads (pure).

A table, not code paths: adding a server is adding one `ServerKind` to `SERVERS` (a proxy or an
off-the-shelf daemon can subclass ServerKind and override `argv`). Scenario validation, the JSON
Schema and plan building all read these tables, so they cannot disagree.

Program contract: docs/programs.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Mapping

from splicebench.units import format_size


@dataclass(frozen=True)
class Option:
    """One option of a program: how a scenario spells its value and how argv receives it."""

    flag: str
    kind: str  # 'size' | 'int' | 'bool' | 'choice'
    help: str
    choices: tuple[str, ...] = ()
    minimum: int = 0
    maximum: int | None = None  # the largest value the program accepts (its usage error above it)

    def to_args(self, value: Any) -> list[str]:
        """argv words for a validated value (sizes and ints as plain integers)."""
        if self.kind == "bool":
            return [self.flag] if value else []
        return [self.flag, str(value)]

    def describe_allowed(self) -> str:
        """What a scenario may write here, for error messages and the schema."""
        if self.kind == "bool":
            return "true or false"
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "size":
            return f"a size >= {format_size(self.minimum)} like '64KiB'" if self.minimum else "a size like '64KiB'"
        return f"an integer >= {self.minimum}"


ECHO, PROXY = "echo", "proxy"

# Bounds the programs enforce (net_parse_u64's max argument in servers/*.c and bpf/*.c); validation
# refuses larger values before anything runs, and tests/test_limits.py asks each program for them.
INT_MAX = 2**31 - 1
SOCKMAP_BUF_MAX = INT_MAX // 2  # the SOCKMAP loaders' net_parse_opts(..., INT32_MAX / 2, ...)
BUF_MAX = 1 << 30  # --buf, --pipe-size
URING_ENTRIES_MAX = 1 << 15  # sb-echo-uring/sb-proxy-uring --queue-depth, --buffers (the kernel's ring limits)
MAX_CONNS_MAX = 1 << 24  # --max-conns (bpf/sockmap_common.c)
DEFAULT_MAX_CONNS = 65536  # the SOCKMAP loaders' map size without --max-conns
SEED_MAX = 2**64 - 1
PAYLOAD_MAX = 1 << 50  # sb-client: bytes per connection (--bytes, or the product of the two below)
# The client's per-connection payload of these workloads is a product, bounded by PAYLOAD_MAX.
PAYLOAD_FACTORS: dict[str, tuple[str, str]] = {"pingpong": ("msg_size", "round_trips"),
                                               "latency-under-load": ("msg_size", "round_trips"),
                                               "burst": ("burst_size", "bursts")}
# Peers: programs/peers.py refuses config values beyond these, and every peer is configured for
# PEER_MAX_CONNS connections at once (HAProxy maxconn; NGINX worker_connections is twice that).
PEER_WORKERS_MAX = 64
PEER_BUFFER_MAX = 64 << 20
PEER_SOCKBUF_MAX = 1 << 30
PEER_MAX_CONNS = 4096

COMMON_SERVER_OPTIONS: dict[str, Option] = {
    "sndbuf": Option("--sndbuf", "size", "SO_SNDBUF on accepted sockets (0 = kernel default)", maximum=INT_MAX),
    "rcvbuf": Option("--rcvbuf", "size", "SO_RCVBUF on accepted sockets (0 = kernel default)", maximum=INT_MAX),
}

# Options that an echo server and its proxy counterpart share.
_PIPE_SIZE = Option("--pipe-size", "size", "pipe size (capped to fs.pipe-max-size)", minimum=4096,
                    maximum=BUF_MAX)
_PARSER = Option("--parser", "bool", "add a stream_parser program")
_MAX_CONNS = Option("--max-conns", "int", f"map size (default {DEFAULT_MAX_CONNS})", minimum=1,
                    maximum=MAX_CONNS_MAX)
WORKERS_MAX = 256  # NET_WORKERS_MAX (servers/net.h)
# Worker threads of the user-space servers and proxies (net_workers_run in servers/net.c). The SOCKMAP
# loaders have none: the kernel moves their bytes, the loader only inserts sockets.
WORKERS = "workers"
_UPSTREAM_SOURCES = Option("--upstream-sources", "int", "bind upstream connection k to 127.0.0.1 + (k mod N): "
                           "each address has its own ephemeral ports to a loopback backend", minimum=1,
                           maximum=65536)
_WORKERS = Option("--workers", "int", "threads, each with its own SO_REUSEPORT listener and epoll loop "
                  "(default 1)", minimum=1, maximum=WORKERS_MAX)
# Worker processes instead of threads (net_workers_run): each has its own RLIMIT_NOFILE, so that N of them
# hold N times the connections one process may (C100K under a hard limit of 20,000 descriptors).
PROCESSES = "processes"
_PROCESSES = Option("--processes", "bool", "the workers are processes, each with its own RLIMIT_NOFILE "
                    "(default: threads)")
# The SOCKMAP echo server's workers are always processes: each accepts and inserts the sockets of its own
# SO_REUSEPORT listener (and holds their descriptors), the kernel moves the bytes.
_SOCKMAP_WORKERS = Option("--workers", "int", "processes that accept and insert, each with its own SO_REUSEPORT "
                          "listener (default 1)", minimum=1, maximum=WORKERS_MAX)


# Options of the peers (NGINX, HAProxy); peers.py turns them into config directives.
PEER_OPTIONS: dict[str, Option] = {
    "workers": Option("", "int", "NGINX worker processes / HAProxy threads (default 1)", minimum=1,
                      maximum=PEER_WORKERS_MAX),
    "buffer": Option("", "size", "NGINX proxy_buffer_size / HAProxy tune.bufsize (default 128KiB)",
                     minimum=1024, maximum=PEER_BUFFER_MAX),
}


# SOCKMAP acceleration (scenario `accelerate`, bpf/accel.c): every program of a sample runs in a
# cgroup whose established TCP sockets are short-circuited by sockops + sk_msg (redirect to the peer's
# ingress queue). ACCEL_NONE runs the programs as they are.
ACCEL_NONE = "none"
ACCEL_SK_MSG = "sk_msg"
ACCEL_MODES = (ACCEL_NONE, ACCEL_SK_MSG)
ACCEL_PROGRAM = "sb-accel"
# Why a program cannot be correct with its sockets in the acceleration's sockmap. Measured on Linux
# 6.18: the splice echo server, the splice proxy, the io_uring echo in splice mode, HAProxy with
# forced splice and both SOCKMAP servers returned 0 bytes (the client timed out); HAProxy splice-auto
# passed 64-byte ping-pong but a 10 MiB stream ended after 6.4 MiB, once it started splicing.
# tcp_splice_read() reads only the TCP receive queue, never the psock's ingress queue where
# redirected bytes wait (the fix, "sockmap: Fix reading with splice(2)", was not merged).
# IORING_OP_SPLICE (the io_uring programs' splice mode, echo and proxy) goes through the same
# tcp_splice_read().
ACCEL_SPLICE = "splice() reads only the TCP receive queue, never the bytes the sk_msg redirect queues " \
               "on the socket (the transfer hangs)"
# io_uring's IORING_OP_SEND_ZC ended in -EOPNOTSUPP on the io_uring proxy's upstream leg (a socket it
# connect()s inside the cgroup) under acceleration, measured on 6.18: 0 bytes reached the backend, the
# client saw a reset. The io_uring echo server in send-zc mode, which sends only on accepted sockets,
# was byte-exact both ways, so only the proxy's mode is refused.
ACCEL_SEND_ZC = "IORING_OP_SEND_ZC fails (EOPNOTSUPP) on the upstream connection once it is in the sockmap " \
                "(the proxy resets the client)"
ACCEL_SK_SKB = "its own sk_skb verdict sees only bytes that arrive by TCP, the sk_msg redirect bypasses it " \
               "(the transfer hangs)"


@dataclass(frozen=True)
class ServerKind:
    """A server program: its name in scenarios, its binary and its own options."""

    name: str
    program: str
    description: str
    options: Mapping[str, Option] = field(default_factory=dict)
    built: bool = True  # True: `program` is a file in the build directory; False: found on PATH
    role: str = ECHO  # ECHO: answers the client itself; PROXY: forwards to a backend (--upstream)
    peer: bool = False  # an off-the-shelf proxy (NGINX, HAProxy) that peers.py configures and runs
    sockbuf_max: int = INT_MAX  # the largest --sndbuf/--rcvbuf the program accepts
    privileged: bool = False  # loads BPF programs: needs root (or CAP_BPF + CAP_NET_ADMIN)
    # Why it cannot run with `accelerate: sk_msg` (None: it can), for every option value or, in
    # accel_refused_options, only with option == value: ((option, value, reason), ...).
    accel_refusal: str | None = None
    accel_refused_options: tuple[tuple[str, Any, str], ...] = ()

    def accel_conflict(self, options: Mapping[str, Any]) -> str | None:
        """Why this program with these options cannot be correct under SOCKMAP acceleration, or None."""
        if self.accel_refusal:
            return self.accel_refusal
        for key, value, reason in self.accel_refused_options:
            if options.get(key) == value:
                return f"{key} {value}: {reason}"
        return None

    def all_options(self) -> dict[str, Option]:
        common = {k: replace(o, maximum=self.sockbuf_max) for k, o in COMMON_SERVER_OPTIONS.items()}
        return {**common, **self.options}

    def argv(self, program_path: str, listen: str, options: Mapping[str, Any],
             upstream: str | None = None) -> list[str]:
        """Full argv for this server listening on `listen` ('ADDR:PORT') with validated options
        (a proxy also gets --upstream ADDR:PORT)."""
        args = [program_path, "--listen", listen]
        if upstream is not None:
            args += ["--upstream", upstream]
        known = self.all_options()
        for key in sorted(options):
            args += known[key].to_args(options[key])
        return args


# sb-echo-uring's and sb-proxy-uring's options (servers/uring.c).
URING_OPTIONS = {
    "mode": Option("--mode", "choice", "io_uring technique (default recv-send)",
                   choices=("recv-send", "splice", "send-zc")),
    "queue_depth": Option("--queue-depth", "int", "submission queue entries (default 256; the "
                          "kernel rounds up to a power of two)", minimum=1, maximum=URING_ENTRIES_MAX),
    "buffers": Option("--buffers", "int", "provided buffers (default 256, rounded up to a power of two; "
                      "the proxy has that many per direction)", minimum=1, maximum=URING_ENTRIES_MAX),
    "buffer_size": Option("--buffer-size", "size", "size of each provided buffer (default 64KiB); "
                          "splice: the pipe size (default 1MiB)", minimum=1, maximum=BUF_MAX),
}

SERVERS: dict[str, ServerKind] = {
    s.name: s
    for s in (
        ServerKind(
            "naive",
            "sb-echo-naive",
            "read()/write() echo, epoll, one thread per worker",
            {"buf": Option("--buf", "size", "read buffer size", minimum=1, maximum=BUF_MAX), WORKERS: _WORKERS,
             PROCESSES: _PROCESSES},
        ),
        ServerKind(
            "splice",
            "sb-echo-splice",
            "socket -> pipe -> same socket with splice(), epoll, one thread per worker",
            {"pipe_size": _PIPE_SIZE, WORKERS: _WORKERS, PROCESSES: _PROCESSES},
            accel_refusal=ACCEL_SPLICE,
        ),
        ServerKind(
            "sockmap",
            "sb-echo-sockmap",
            "eBPF SOCKMAP: sk_skb stream_verdict redirects each socket's data back to itself",
            {
                "map": Option("--map", "choice", "map type", choices=("sockhash", "sockmap")),
                "parser": _PARSER,
                "max_conns": _MAX_CONNS,
                WORKERS: _SOCKMAP_WORKERS,
            },
            sockbuf_max=SOCKMAP_BUF_MAX,
            privileged=True,
            accel_refusal=ACCEL_SK_SKB,
        ),
        ServerKind(
            "uring",
            "sb-echo-uring",
            "io_uring, one thread, one ring: multishot receive into provided buffers + send "
            "(mode recv-send), IORING_OP_SPLICE (splice) or IORING_OP_SEND_ZC (send-zc)",
            URING_OPTIONS,
            accel_refused_options=(("mode", "splice", ACCEL_SPLICE),),
        ),
        # Reverse proxies (docs/programs.md, "Proxies"): a scenario with a `backend` section runs
        # them in front of that echo server, next to a direct row (client -> backend).
        ServerKind(
            "proxy-naive",
            "sb-proxy-naive",
            "reverse proxy: recv()/send() through a buffer per direction, epoll, one thread per worker",
            {"buf": Option("--buf", "size", "buffer per direction", minimum=1, maximum=BUF_MAX), WORKERS: _WORKERS,
             PROCESSES: _PROCESSES, "upstream_sources": _UPSTREAM_SOURCES},
            role=PROXY,
        ),
        ServerKind(
            "proxy-splice",
            "sb-proxy-splice",
            "reverse proxy: socket -> pipe -> socket with splice(), a pipe per direction",
            {"pipe_size": _PIPE_SIZE, WORKERS: _WORKERS, PROCESSES: _PROCESSES,
             "upstream_sources": _UPSTREAM_SOURCES},
            role=PROXY,
            accel_refusal=ACCEL_SPLICE,
        ),
        ServerKind(
            "proxy-sockmap",
            "sb-proxy-sockmap",
            "reverse proxy: eBPF sk_skb verdicts redirect each leg's data to the other leg",
            {
                "parser": _PARSER,
                "max_conns": _MAX_CONNS,
            },
            role=PROXY,
            sockbuf_max=SOCKMAP_BUF_MAX,
            privileged=True,
            accel_refusal=ACCEL_SK_SKB,
        ),
        ServerKind(
            "proxy-uring",
            "sb-proxy-uring",
            "reverse proxy on io_uring, one thread, one ring: multishot receive into provided buffers "
            "+ send (mode recv-send), IORING_OP_SPLICE (splice) or IORING_OP_SEND_ZC (send-zc)",
            URING_OPTIONS,
            role=PROXY,
            accel_refused_options=(("mode", "splice", ACCEL_SPLICE), ("mode", "send-zc", ACCEL_SEND_ZC)),
        ),
        # Peers: the user-space proxies people run today, configured from templates by peers.py.
        *(
            ServerKind(name, program, description, PEER_OPTIONS, built=False, role=PROXY, peer=True,
                       sockbuf_max=PEER_SOCKBUF_MAX, accel_refusal=refusal)
            for name, program, description, refusal in (
                ("nginx", "nginx", "NGINX stream proxy (one worker)", None),
                ("haproxy", "haproxy", "HAProxy mode tcp, no splice (one thread)", None),
                ("haproxy-splice-auto", "haproxy", "HAProxy mode tcp, option splice-auto", ACCEL_SPLICE),
                ("haproxy-splice", "haproxy", "HAProxy mode tcp, option splice-request + splice-response",
                 ACCEL_SPLICE),
            )
        ),
    )
}


@dataclass(frozen=True)
class WorkloadField:
    """One parameter of the load client."""

    name: str
    flag: str
    kind: str  # 'size' | 'int'
    default: int
    minimum: int
    help: str
    maximum: int  # sb-client's bound (servers/client.c)

    def describe_allowed(self) -> str:
        if self.kind == "size":
            return f"a size >= {format_size(self.minimum)} like '64KiB'"
        return f"an integer >= {self.minimum}"


CLIENT_PROGRAM = "sb-client"
CLIENT_THREADS_MAX = 1024  # THREADS_MAX (servers/client.c)
SOURCE_ADDRS_MAX = 65536  # SOURCE_ADDRS_MAX (servers/client.c)
CLIENT_PROCS_MAX = 256  # PROCS_MAX (servers/client.c)
STALL_MAX_S = 10_000_000  # parse_seconds' bound (servers/client.c)
# The CPU sampler run beside the servers during each sample (servers/cpustat.c, results/cpu.py).
SAMPLER_PROGRAM = "sb-cpustat"
SAMPLER_INTERVAL_US = 2000  # about 80 us of CPU per reading here (half of it the perf counts): 4 % of one CPU

WORKLOAD_FIELDS: dict[str, WorkloadField] = {
    f.name: f
    for f in (
        WorkloadField("conns", "--conns", "int", 1, 1, "concurrent connections per client", 1_000_000),
        WorkloadField("bytes", "--bytes", "size", 100 << 20, 1, "stream: bytes per connection", PAYLOAD_MAX),
        WorkloadField("chunk", "--chunk", "size", 128 << 10, 1, "stream: write size", 64 << 20),
        WorkloadField("msg_size", "--msg-size", "size", 64, 1, "pingpong, crr, latency-under-load: message size",
                      1 << 30),
        WorkloadField("round_trips", "--round-trips", "int", 1000, 1,
                      "pingpong: round trips per connection; latency-under-load: per connection in each half",
                      1 << 40),
        WorkloadField("burst_size", "--burst-size", "size", 1 << 20, 1, "burst: bytes per burst", 1 << 40),
        WorkloadField("bursts", "--bursts", "int", 10, 1, "burst: bursts per connection", 1 << 40),
        WorkloadField("threads", "--threads", "int", 1, 1, "client threads sharing the connections, each its "
                      "own epoll loop (at most conns are used)", CLIENT_THREADS_MAX),
        WorkloadField("source_addrs", "--source-addrs", "int", 0, 0, "bind connection c to 127.0.0.1 + (c mod N) "
                      "so that each address has its own ephemeral ports (loopback only; 0 = no bind)",
                      SOURCE_ADDRS_MAX),
        WorkloadField("procs", "--procs", "int", 1, 1, "client processes the threads run in, each with its own "
                      "RLIMIT_NOFILE (at most threads are used)", CLIENT_PROCS_MAX),
        WorkloadField("stall", "--stall", "int", 10, 0, "seconds a connection may move no byte before it fails as "
                      "stalled (0 = off); connections set up by the 100,000 wait their turn longer", STALL_MAX_S),
        WorkloadField("hold", "--hold", "int", 0, 0, "1: every connection stays open once its last byte came back "
                      "until all have (stream, pingpong, burst: all conns open at once)", 1),
        WorkloadField("bulk_conns", "--conns", "int", 4, 1,
                      "latency-under-load: bulk streams through the server during the loaded half", 1_000_000),
        WorkloadField("transactions", "--transactions", "int", 1000, 1,
                      "crr: connections per client in all, each one request and its response (conns of "
                      "them at a time)", 2**32 - 1),
    )
}

# Which client parameters apply to which workload type (conns applies to all).
CLIENT_FIELDS = ("threads", "source_addrs", "procs", "stall")  # how the client runs, for every workload type
WORKLOADS: dict[str, tuple[str, ...]] = {
    "stream": ("conns", "bytes", "chunk", *CLIENT_FIELDS, "hold"),
    "pingpong": ("conns", "msg_size", "round_trips", *CLIENT_FIELDS, "hold"),
    "burst": ("conns", "burst_size", "bursts", *CLIENT_FIELDS, "hold"),
    # connect, request, response, close (netperf TCP_CRR): connections per second
    "crr": ("conns", "msg_size", "transactions", *CLIENT_FIELDS),
    # ping-pong alone, then again while bulk_conns streams (chunk-sized writes) run: p50/p99 both ways
    "latency-under-load": ("conns", "msg_size", "round_trips", "bulk_conns", "chunk", *CLIENT_FIELDS),
}
LOADED = "latency-under-load"
LOAD_CLIENT_SEED_OFFSET = 1  # the bulk client's payload seed: the scenario's seed + this


def client_args(workload: str, params: Mapping[str, int], seed: int, timeout_s: float) -> list[str]:
    """sb-client arguments after `--connect ADDR:PORT`, for validated parameters (latency-under-load:
    its ping-pong client's; load_client_args gives its bulk client's)."""
    if workload == LOADED:
        return client_args("pingpong", params, seed, timeout_s)
    args = ["--workload", workload]
    for name in WORKLOADS[workload]:
        value = params.get(name, WORKLOAD_FIELDS[name].default)  # latency-under-load has no hold
        if name == "threads":
            value = min(value, params["conns"])  # a thread needs a connection
        if name == "procs":
            value = min(value, params.get("threads", 1), params["conns"])  # a process runs threads
        if (name in CLIENT_FIELDS or name == "hold") and value == WORKLOAD_FIELDS[name].default:
            continue  # the client's own default: the command line stays as short as before
        args += [WORKLOAD_FIELDS[name].flag, str(value)]
    args += ["--seed", str(seed), "--timeout", _num(timeout_s)]
    return args


def load_client_args(params: Mapping[str, int], seed: int, timeout_s: float) -> list[str]:
    """latency-under-load: the bulk client's arguments (streams that run until SIGINT)."""
    return ["--workload", "stream", "--conns", str(params["bulk_conns"]), "--bytes", str(PAYLOAD_MAX),
            "--chunk", str(params["chunk"]), "--seed", str((seed + LOAD_CLIENT_SEED_OFFSET) % (SEED_MAX + 1)),
            "--timeout", _num(timeout_s)]


# CPU placement (a scenario's `cpus`): which program runs where. Servers, proxies, peers and backends are
# started under taskset; sb-client pins its threads itself (--cpus), thread t on the (t mod n)-th CPU.
CPU_ROLES = ("server", "backend", "client")
CPU_MAX = 1023  # the largest CPU number sb-client's cpu_set_t holds (CPU_SETSIZE 1024)


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """'0,2-3' -> (0, 2, 3), in the order written; ValueError on anything else or a CPU above CPU_MAX."""
    out: list[int] = []
    for part in text.split(","):
        lo, dash, hi = part.strip().partition("-")
        if not lo.isdigit() or (dash and not hi.isdigit()):
            raise ValueError(text)
        a, b = int(lo), int(hi) if dash else int(lo)
        if b < a or b > CPU_MAX:
            raise ValueError(text)
        out += [c for c in range(a, b + 1) if c not in out]
    return tuple(out)


def pinned(argv: list[str], cpus: str | None) -> list[str]:
    """argv run on the CPUs of list `cpus` (taskset -c), or argv itself when cpus is None."""
    return ["taskset", "-c", cpus, *argv] if cpus else list(argv)


# A program started inside a cgroup (programs/accel.py in_cgroup): a shell given the cgroup directory
# as $1 writes its own pid into its cgroup.procs, then execs the program's argv (same pid). Only
# positional parameters, never interpolated.
CGROUP_ENTER = 'echo $$ >"$1/cgroup.procs" || exit 126; shift; exec "$@"'
CGROUP_ENTER_NAME = "sb-cgroup"


def program_argv(argv: list[str]) -> list[str]:
    """The program's own argv past the wrappers that exec it in the same process, in any order:
    taskset -c CPUS (pinned) and the cgroup's shell (CGROUP_ENTER)."""
    while True:
        if len(argv) > 3 and argv[:2] == ["taskset", "-c"]:
            argv = argv[3:]
        elif len(argv) > 5 and argv[:4] == ["sh", "-c", CGROUP_ENTER, CGROUP_ENTER_NAME]:
            argv = argv[5:]
        else:
            return list(argv)


def program_name(argv: list[str]) -> str:
    """The program an argv runs (past taskset and the cgroup's shell): its file name."""
    words = program_argv(argv)
    return words[0].rsplit("/", 1)[-1] if words else ""


def payload_bytes(workload: str, params: Mapping[str, int]) -> int:
    """Bytes each connection sends (and expects back)."""
    if workload == "crr":
        return params["msg_size"]
    if workload == "stream":
        return params["bytes"]
    if workload in ("pingpong", LOADED):
        return params["msg_size"] * params["round_trips"]
    return params["burst_size"] * params["bursts"]


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))
