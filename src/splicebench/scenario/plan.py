"""Scenario -> ordered samples: which host runs which program with which arguments (pure).

Order: matrix cells one after another; inside a cell, the warm-up rounds then the measured rounds,
and inside a round every server once in scenario order (ABCABC...), so slow drifts of the machine
(thermal, other load) spread over all servers instead of biasing one.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from splicebench.registry import (ACCEL_NONE, ACCEL_PROGRAM, CLIENT_PROGRAM, LOADED, SERVERS, client_args,
                                  load_client_args, payload_bytes,
                                  pinned)
from splicebench.scenario.model import DIRECT, Cell, Scenario, ServerConfig, options_for

WARMUP = "warmup"
MEASURED = "measured"
PROFILE = "profile"  # recorded with perf record after the measured rounds; never in the statistics

# Grace beyond the client's own deadline before the runner kills it.
CLIENT_GRACE_S = 15.0
# How long a server may take to print its ready line, and to exit after SIGTERM.
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
# latency-under-load: how long the bulk streams run before the loaded ping-pong client starts.
LOAD_RAMP_S = 0.3


@dataclass(frozen=True)
class Sample:
    """One execution: a server started, one client per client host run against it, the server stopped."""

    seq: int  # 0-based position in the execution order
    id: str
    cell: Cell
    server: ServerConfig
    phase: str  # WARMUP, MEASURED or PROFILE
    workload: str  # stream | pingpong | burst
    repetition: int  # 1-based within its phase
    round: int  # 1-based round within its cell (warm-up rounds first)
    server_host: str
    client_hosts: tuple[str, ...]
    listen: str  # ADDR:PORT the server listens on (port 0: the kernel picks)
    server_options: tuple[tuple[str, Any], ...]  # the server's options with the cell's overrides
    client_args: tuple[str, ...]  # sb-client arguments after --connect ADDR:PORT
    client_timeout_s: float  # the runner's deadline for each client process
    # latency-under-load: the bulk client's arguments (after --connect); client_args are then the
    # ping-pong client's, run once alone and once while the bulk client streams.
    load_args: tuple[str, ...] = ()
    # Proxy samples: the echo server behind the proxy, started first on backend_host.
    backend: str | None = None  # its server kind
    backend_host: str | None = None
    backend_listen: str = "127.0.0.1:0"
    backend_options: tuple[tuple[str, Any], ...] = ()
    # The host the results name (the proxy's host also for a proxy scenario's direct row, whose
    # backend may run elsewhere); None = server_host.
    row_host: str | None = None
    # CPU placement (the scenario's `cpus`): CPU lists for the server (the direct row's server is the
    # backend program: the backend's list), the backend and the clients; None = not pinned.
    server_cpus: str | None = None
    backend_cpus: str | None = None
    client_cpus: str | None = None

    @property
    def server_kind(self):
        return SERVERS[self.server.kind]

    @property
    def accelerate(self) -> str:
        """registry.ACCEL_MODES: how every program of the sample runs."""
        return self.server.accelerate

    def hosts(self) -> list[str]:
        """Every host a program of this sample runs on: clients, server, backend (in that order)."""
        extra = (self.backend_host,) if self.backend_host else ()
        return list(dict.fromkeys((*self.client_hosts, self.server_host, *extra)))

    def server_argv(self, program_path: str, upstream: str | None = None) -> list[str]:
        return pinned(self.server_kind.argv(program_path, self.listen, dict(self.server_options), upstream),
                      self.server_cpus)

    def backend_argv(self, program_path: str) -> list[str]:
        assert self.backend is not None
        return pinned(SERVERS[self.backend].argv(program_path, self.backend_listen, dict(self.backend_options)),
                      self.backend_cpus)

    def client_argv(self, program_path: str, connect: str, args: tuple[str, ...] | None = None) -> list[str]:
        """A client's argv: client_args, or `args` (latency-under-load's bulk client: load_args)."""
        cpus = ["--cpus", self.client_cpus] if self.client_cpus else []
        return [program_path, "--connect", connect, *(self.client_args if args is None else args), *cpus]

    def params(self) -> dict[str, Any]:
        """Workload parameters and server options of this sample, for the results table."""
        return {**dict(self.cell.workload), **dict(self.server_options)}


@dataclass(frozen=True)
class Plan:
    scenario: Scenario
    samples: tuple[Sample, ...]

    def programs(self) -> dict[str, set[str]]:
        """host name -> names of built programs it needs."""
        need: dict[str, set[str]] = {}
        for s in self.samples:
            if s.server_kind.built:
                need.setdefault(s.server_host, set()).add(s.server_kind.program)
            if s.backend is not None and s.backend_host is not None:
                need.setdefault(s.backend_host, set()).add(SERVERS[s.backend].program)
            for h in s.client_hosts:
                need.setdefault(h, set()).add(CLIENT_PROGRAM)
            if s.accelerate != ACCEL_NONE:
                for h in s.hosts():
                    need.setdefault(h, set()).add(ACCEL_PROGRAM)
        return need

    def hosts(self) -> list[str]:
        backend = self.scenario.backend
        extra = (backend.host,) if backend is not None and backend.host else ()
        return list(dict.fromkeys(h for p in self.scenario.placements for h in (p.server, *p.clients, *extra)))


def build_plan(scenario: Scenario) -> Plan:
    """All samples of a scenario in execution order.

    With several placements, each round runs every server at every placement in turn."""
    several = len(scenario.placements) > 1
    # The client's own deadline is whole seconds (its --timeout); ours adds a grace period.
    client_deadline = max(1, math.ceil(scenario.timeout_s))
    cpus = dict(scenario.cpus)
    samples: list[Sample] = []
    for cell in scenario.cells():
        wl = dict(cell.workload)
        cargs = tuple(client_args(scenario.workload_type, wl, scenario.seed, client_deadline))
        # The bulk client runs while both ping-pong clients do: it gets their deadlines together.
        largs = tuple(load_client_args(wl, scenario.seed, 2 * client_deadline + LOAD_RAMP_S)) \
            if scenario.workload_type == LOADED else ()
        rounds = [(WARMUP, r + 1) for r in range(scenario.warmup)] + [
            (MEASURED, r + 1) for r in range(scenario.measured)
        ] + ([(PROFILE, 1)] if scenario.profile else [])
        for rnd, (phase, rep) in enumerate(rounds, start=1):
            for placement, server in ((p, s) for p in scenario.placements for s in scenario.servers):
                seq = len(samples)
                where = f"-{placement.server}" if several else ""
                sid = f"{seq + 1:04d}-c{cell.index}-{server.label}{where}-{phase[0]}{rep}"
                # A proxy scenario: the proxies run at placement.server, the backend at its own host
                # (default: the same), and the direct row is the backend itself.
                bk = scenario.backend
                bhost = (bk.host or placement.server) if bk is not None else None
                run_host = bhost if bk is not None and server.base_label == DIRECT else placement.server
                proxy = bk is not None and server.base_label != DIRECT
                # Clients only on the server's own host: loopback (some hosts have no other way in).
                same = all(h == run_host for h in placement.clients)
                opts = options_for(server.kind, {**dict(server.options), **dict(cell.server_overrides)})
                samples.append(
                    Sample(
                        seq=seq,
                        id=sid,
                        cell=cell,
                        server=server,
                        phase=phase,
                        workload=scenario.workload_type,
                        repetition=rep,
                        round=rnd,
                        server_host=run_host,
                        client_hosts=placement.clients,
                        listen="127.0.0.1:0" if same else "0.0.0.0:0",
                        server_options=tuple(sorted(opts.items())),
                        client_args=cargs,
                        client_timeout_s=client_deadline + CLIENT_GRACE_S,
                        load_args=largs,
                        backend=bk.kind if proxy else None,
                        backend_host=bhost if proxy else None,
                        backend_listen="127.0.0.1:0" if bhost == placement.server else "0.0.0.0:0",
                        backend_options=tuple(sorted(options_for(bk.kind, {**dict(bk.options),
                                                                           **dict(cell.server_overrides)}).items()))
                        if proxy else (),
                        row_host=placement.server,
                        server_cpus=cpus.get("backend" if bk is not None and not proxy else "server"),
                        backend_cpus=cpus.get("backend") if proxy else None,
                        client_cpus=cpus.get("client"),
                    )
                )
    return Plan(scenario, tuple(samples))


def expected_bytes(scenario: Scenario, sample: Sample) -> int:
    """Payload bytes the sample's clients send in all (each echoed back once)."""
    wl = dict(sample.cell.workload)
    if scenario.workload_type == "crr":  # one message on each of `transactions` connections
        return wl["msg_size"] * wl["transactions"] * len(sample.client_hosts)
    return payload_bytes(scenario.workload_type, wl) * wl["conns"] * len(sample.client_hosts)
