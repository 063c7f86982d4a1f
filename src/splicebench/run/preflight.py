"""Preflight: each host's limits against what the plan needs, before any program is built or started.

What a sample needs is arithmetic on the plan (pure: `needs`); what a host allows is read on the host
itself (`read_limits`: the hard RLIMIT_NOFILE the programs raise their soft limit to, the ephemeral
port range and net.core.somaxconn); `problems` compares the two. RLIMIT_NOFILE is per process: a
program whose connections are spread over worker processes needs what its busiest process holds. A limit that would make samples
fail (open files, ephemeral ports) stops the run with one line per problem naming the host, the
limit, what the scenario needs and what to change; one that only slows connection set-up (an accept
queue shorter than the connections arriving at once) is a warning.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Mapping

from splicebench.errors import HostError, PreflightError
from splicebench.hosts.base import Host
from splicebench.programs import accel
from splicebench.run import fleet
from splicebench.registry import ACCEL_NONE, CLIENT_PROGRAM, PROCESSES, SERVERS, WORKERS, parse_cpu_list
from splicebench.scenario.model import DIRECT
from splicebench.scenario.plan import Plan

# File descriptors a program holds per connection (read off servers/*.c and bpf/*.c): a socket per
# connection for the echo servers, plus its pipe (2 fds) for the splice echo; two sockets for a proxy,
# plus a pipe per direction for the splice proxy. Peers (NGINX, HAProxy) hold two sockets. The io_uring
# programs hold what their epoll twins hold in their splice mode (counted for every mode: the most).
FDS_PER_CONN = {"sb-echo-naive": 1, "sb-echo-splice": 3, "sb-echo-sockmap": 1, "sb-echo-uring": 3,
                "sb-proxy-naive": 2, "sb-proxy-splice": 6, "sb-proxy-sockmap": 2, "sb-proxy-uring": 6,
                CLIENT_PROGRAM: 1}
PEER_FDS_PER_CONN = 2
FD_SLACK = 32  # listeners, epoll, signalfd, timerfd, BPF maps and programs, stdio
# Programs that keep the soft RLIMIT_NOFILE they are started with: NGINX raises it only in worker
# processes with worker_rlimit_nofile, and the peer runs as a single process. HAProxy raises its own
# to what maxconn needs; every program of servers/ and bpf/ raises its own to the hard limit.
KEEPS_SOFT_LIMIT = {"nginx"}
LISTEN_BACKLOG = 65535  # net_listen()'s backlog (servers/net.c); the kernel caps it at somaxconn
SOMAXCONN = "net.core.somaxconn"
# Worker processes (servers' `processes: true`, the SOCKMAP echo server's workers, sb-client's procs) each
# hold their own connections under their own RLIMIT_NOFILE. SO_REUSEPORT spreads a server's connections
# over its workers by hash: measured here within 2 % of the mean (100,000 connections over 8 and 16
# workers); a worker is planned for the mean plus REUSEPORT_SKEW_PERCENT.
REUSEPORT_SKEW_PERCENT = 10
ALWAYS_PROCESSES = {"sb-echo-sockmap"}  # its workers are processes (bpf/echo_sockmap.c)
# How each program that can spans processes: what a scenario sets for it.
SPLITS = {CLIENT_PROGRAM: "workload procs (and threads)", "sb-echo-sockmap": "workers",
          **{p: "workers with processes: true" for p in ("sb-echo-naive", "sb-echo-splice", "sb-proxy-naive",
                                                          "sb-proxy-splice")}}


@dataclass(frozen=True)
class Need:
    """What one program of a sample needs on its host."""

    host: str
    program: str
    conns: int  # connections it holds at once (all its processes)
    fds: int  # open files per process
    ports_to_one_peer: int  # connections it opens from this host to one address (0: it opens none)
    arriving: int  # connections arriving at its listener at once (0: it does not listen)
    cpus: tuple[str, str] | None = None  # (role, CPU list) it is pinned to (the scenario's `cpus`)
    procs: int = 1  # processes that share its connections, each with `fds` open files at most


@dataclass(frozen=True)
class Limits:
    """What a host allows."""

    nofile_hard: int | None  # None: unlimited
    port_range: tuple[int, int]
    somaxconn: int
    nofile_soft: int | None = None  # None: unlimited (what a program that keeps it can open)
    ncpus: int | None = None  # CPUs the programs may run on (nproc); None: not known

    @property
    def ports(self) -> int:
        return self.port_range[1] - self.port_range[0] + 1


def client_procs_conns(conns: int, threads: int, procs: int) -> tuple[int, int]:
    """(processes, most connections one holds) of sb-client: thread i owns connections
    [i * conns / threads, ...), process p runs threads [p * threads / procs, ...) (servers/client.c)."""
    threads = max(1, min(threads, conns))
    procs = max(1, min(procs, threads))
    most = max(conns * ((p + 1) * threads // procs) // threads - conns * (p * threads // procs) // threads
               for p in range(procs))
    return procs, most


def server_procs(program: str, options: Mapping[str, object]) -> int:
    """Processes a server's connections are spread over: its workers when they are processes."""
    if program in ALWAYS_PROCESSES or options.get(PROCESSES):
        return int(options.get(WORKERS, 1))  # type: ignore[call-overload]
    return 1


def _per_process(total: int, procs: int) -> int:
    """The most connections one of `procs` SO_REUSEPORT workers is planned to hold."""
    return total if procs == 1 else min(total, -(-total * (100 + REUSEPORT_SKEW_PERCENT) // (100 * procs)))


def needs(plan: Plan) -> list[Need]:
    """The largest need of each (host, program) over the plan's samples."""
    out: dict[tuple[str, str], Need] = {}

    def add(n: Need) -> None:
        old = out.get((n.host, n.program))  # the same program has one placement in a scenario
        if old is None or (n.fds, n.ports_to_one_peer, n.arriving) > (old.fds, old.ports_to_one_peer, old.arriving):
            out[(n.host, n.program)] = n

    for s in plan.samples:
        conns = int(dict(s.cell.workload).get("conns", 1))
        per_host: dict[str, int] = {}
        for h in s.client_hosts:
            per_host[h] = per_host.get(h, 0) + 1
        # --source-addrs N: each of N loopback addresses has its own ephemeral ports to the server.
        sources = max(1, int(dict(s.cell.workload).get("source_addrs", 0)))
        wl = dict(s.cell.workload)
        cprocs, most = client_procs_conns(conns, int(wl.get("threads", 1)), int(wl.get("procs", 1)))
        # latency-under-load: beside each ping-pong client a bulk client (a process of its own) holds
        # bulk_conns streams to the same server at the same time.
        bulk = int(wl.get("bulk_conns", 0))
        for h, clients in per_host.items():  # clients on one host share its ports to the server
            add(Need(h, CLIENT_PROGRAM, conns + bulk, max(most, bulk) + FD_SLACK,
                     -(-clients * (conns + bulk) // sources), 0,
                     ("client", s.client_cpus) if s.client_cpus else None, cprocs))
        total = (conns + bulk) * len(s.client_hosts)
        kind = s.server_kind
        per_conn = PEER_FDS_PER_CONN if kind.peer else FDS_PER_CONN[kind.program]
        # A proxy opens one upstream connection per client connection, spread over upstream_sources.
        upstream = -(-total // int(dict(s.server_options).get("upstream_sources", 1))) if s.backend is not None else 0
        role = "backend" if plan.scenario.backend is not None and s.server.label == DIRECT else "server"
        opts = dict(s.server_options)
        sprocs = 1 if kind.peer else server_procs(kind.program, opts)
        # Each worker has its own listener (SO_REUSEPORT) and accept queue.
        listeners = 1 if kind.peer else int(opts.get(WORKERS, 1))
        add(Need(s.server_host, kind.program, total, per_conn * _per_process(total, sprocs) + FD_SLACK, upstream,
                 _per_process(total, listeners), (role, s.server_cpus) if s.server_cpus else None, sprocs))
        if s.backend is not None and s.backend_host is not None:
            bprog = SERVERS[s.backend].program
            bopts = dict(s.backend_options)
            bprocs = server_procs(bprog, bopts)
            add(Need(s.backend_host, bprog, total, FDS_PER_CONN[bprog] * _per_process(total, bprocs) + FD_SLACK,
                     0, _per_process(total, int(bopts.get(WORKERS, 1))),
                     ("backend", s.backend_cpus) if s.backend_cpus else None, bprocs))
    return sorted(out.values(), key=lambda n: (n.host, n.program))


def read_limits(host: Host) -> Limits:
    """The limits of `host`, read there (as the programs will run: under the host's sudo if any)."""
    r = host.run(["sh", "-c", "ulimit -Hn; ulimit -Sn; cat /proc/sys/net/ipv4/ip_local_port_range "
                              "/proc/sys/net/core/somaxconn; nproc"], timeout=30)
    words = r.stdout.split()
    try:
        hard, soft = (None if w == "unlimited" else int(w) for w in words[:2])
        return Limits(hard, (int(words[2]), int(words[3])), int(words[4]), soft, int(words[5]))
    except (ValueError, IndexError):
        raise HostError(f"host {host.name}: cannot read its limits (ulimit -Hn/-Sn, "
                        f"ip_local_port_range, somaxconn, nproc): got {r.stdout.strip()!r}") from None


def problems(wants: list[Need], limits: Mapping[str, Limits]) -> tuple[list[str], list[str]]:
    """(errors, warnings): one line each, naming host, limit, need and what to change."""
    errors, warnings = [], []
    for n in wants:
        lim = limits[n.host]
        soft = n.program in KEEPS_SOFT_LIMIT
        nofile, which, cmd = (lim.nofile_soft, "soft", "ulimit -n") if soft else (lim.nofile_hard, "hard", "ulimit -Hn")
        if nofile is not None and n.fds > nofile:
            each = f" in each of {n.procs} processes" if n.procs > 1 else ""
            more = f", or spread it over more processes ({SPLITS[n.program]})" if n.program in SPLITS else ""
            errors.append(f"host {n.host}: {n.program} needs {n.fds:,} open files{each} for {n.conns:,} connections, "
                          f"its RLIMIT_NOFILE {which} limit is {nofile:,}: raise it (nofile in "
                          f"/etc/security/limits.conf, or {cmd} as root) or lower conns{more}")
        if n.ports_to_one_peer > lim.ports:
            spread = " (or spread sb-client over more source_addrs)" if n.program == CLIENT_PROGRAM else ""
            errors.append(f"host {n.host}: {n.program} opens {n.ports_to_one_peer:,} connections to one address, "
                          f"the ephemeral port range {lim.port_range[0]}-{lim.port_range[1]} has {lim.ports:,} "
                          f"ports: widen net.ipv4.ip_local_port_range or lower conns{spread}")
        if n.cpus is not None and lim.ncpus is not None:
            over = [c for c in parse_cpu_list(n.cpus[1]) if c >= lim.ncpus]
            if over:
                errors.append(f"host {n.host}: {n.program} is placed on CPU {over[0]} (cpus.{n.cpus[0]}: "
                              f"{n.cpus[1]}), the host has {lim.ncpus} CPU(s) (0-{lim.ncpus - 1}): change "
                              f"cpus.{n.cpus[0]}")
        backlog = min(LISTEN_BACKLOG, lim.somaxconn)
        if n.arriving > backlog:
            warnings.append(f"host {n.host}: {n.arriving:,} connections arrive at {n.program} at once, its accept "
                            f"queue holds {backlog:,} (net.core.somaxconn {lim.somaxconn:,}): connection set-up "
                            f"may wait for SYN retries; raise net.core.somaxconn to avoid it")
    return errors, warnings


def accel_problems(plan: Plan, hosts: Mapping[str, Host]) -> list[str]:
    """One line per host of an accelerated sample (accelerate: sk_msg) without a cgroup2 mount."""
    names = sorted({h for s in plan.samples if s.accelerate != ACCEL_NONE for h in s.hosts()})
    if not names:
        return []
    found = fleet.for_each_host([hosts[n] for n in names],
                                lambda h: h.run(["cat", "/proc/self/mountinfo"], timeout=30).stdout)
    out = []
    for name, text in found.items():
        if isinstance(text, Exception):
            out.append(f"host {name}: cannot read /proc/self/mountinfo: {str(text).splitlines()[0]}")
        elif accel.cgroup2_mount(text) is None:
            out.append(f"host {name}: accelerate sk_msg needs a cgroup2 mount, /proc/self/mountinfo has none: "
                       f"mount one (mount -t cgroup2 none DIR) or run with accelerate: [none]")
    return out


def check(plan: Plan, hosts: Mapping[str, Host], log: Callable[[str], None]) -> dict[str, Limits]:
    """Read every host's limits (in parallel), log the warnings, raise PreflightError listing every
    error (or the UserError of the hosts whose limits could not be read)."""
    read = fleet.for_each_host(list(hosts.values()), read_limits)
    err = fleet.failures(read, "reading the limits")
    if err:
        raise err
    limits = {name: lim for name, lim in read.items() if isinstance(lim, Limits)}
    # The scenario's own net.core.somaxconn is what the listeners will get (set before the first sample).
    somaxconn = dict(plan.scenario.sysctls).get(SOMAXCONN, "")
    during = {name: replace(lim, somaxconn=int(somaxconn)) for name, lim in limits.items()} \
        if str(somaxconn).isdigit() else limits
    errors, warnings = problems(needs(plan), during)
    errors += accel_problems(plan, hosts)
    for w in warnings:
        log(f"warning: {w}")
    if errors:
        raise PreflightError("the scenario does not fit these hosts' limits (nothing was run):\n"
                             + "\n".join(errors))
    return limits
