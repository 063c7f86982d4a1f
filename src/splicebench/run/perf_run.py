"""Linux perf for a profile sample, on the server's host (I/O; results/perf.py folds).

The per-sample counts (system calls, context switches, migrations) need no perf process: the CPU
sampler counts them (servers/cpustat.c, results/cpu.perf_counts). A profile sample (scenario
`profile: true`) runs `perf record -a -g -e cpu-clock` with a workload that prints a ready line and
sleeps: perf enables its events before it lets the workload run, so the line says that recording has
begun (waited for like any program's ready line). SIGINT after the clients stops both; the data file
is folded with `perf script` on that host, fetched and removed there. A host where perf cannot
profile (hosts/facts.perf_status) gets no perf process, and its profile sample says why in perf_note:
the run goes on.
"""

from __future__ import annotations

import os
import signal
import tempfile
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from splicebench.errors import CommandFailed, HostError, ProcError
from splicebench.hosts import facts
from splicebench.hosts.base import Host, Proc
from splicebench.results import perf
from splicebench.results.metrics import Row

STOP_TIMEOUT_S = 30.0  # perf record writes its file after SIGINT
ATTACH_TIMEOUT_S = 10.0
# perf record ends by SIGINT, or by the SIGTERM it sends its workload after one (negative: a signal;
# 128 + signal: a shell's way of saying the same)
_STOPPED = frozenset({0, -signal.SIGINT, -signal.SIGTERM, 128 + signal.SIGINT, 128 + signal.SIGTERM})


@dataclass
class PerfProcs:
    """The perf process of one sample, recorded as soon as it has started."""

    record: Proc | None = None
    record_path: str | None = None  # perf.data on the server's host
    notes: list[str] = field(default_factory=list)

    def kill_running(self) -> None:
        if self.record is not None and self.record.poll() is None:
            self.record.kill()


class PerfHosts:
    """Which hosts can profile with perf, and perf's process for the profile samples on them."""

    def __init__(self, hosts: Mapping[str, Host], why_not: Mapping[str, str | None] | None = None):
        self.hosts = hosts
        self.why_not: dict[str, str | None] = dict(why_not or {})

    def reason(self, host: str) -> str | None:
        """Why perf cannot profile on `host`, or None (probed once per host)."""
        if host not in self.why_not:
            self.why_not[host] = facts.perf_status(self.hosts[host])
        return self.why_not[host]

    def start(self, host_name: str, procs: PerfProcs, *, name: str, deadman_s: float) -> None:
        """Start perf record on host_name and wait until it records. Problems are notes, never a
        failed sample."""
        why = self.reason(host_name)
        if why:
            procs.notes.append(why)
            return
        host = self.hosts[host_name]
        try:
            procs.record_path = f"{host.workdir()}/perf-{name}.data"
            procs.record = host.start(perf.record_argv(procs.record_path, deadman_s), deadman_s=deadman_s)
            procs.record.wait_json_event("ready", ATTACH_TIMEOUT_S)
        except ProcError as e:
            procs.notes.append(f"perf record did not start recording within {ATTACH_TIMEOUT_S:g} s: {e}")
        except (CommandFailed, HostError, OSError) as e:
            procs.notes.append(f"perf could not be started: {e}")

    def stop(self, procs: PerfProcs) -> None:
        """SIGINT to perf record (it writes what it recorded), then wait."""
        p = procs.record
        if p is None:
            return
        if p.poll() is None:
            p.signal(signal.SIGINT)
        if p.wait(STOP_TIMEOUT_S) is None:
            p.kill()
            procs.notes.append(f"perf record did not exit within {STOP_TIMEOUT_S:g} s of SIGINT; killed")

    def collect(self, host_name: str, row: Row, procs: PerfProcs, interrupted: bool,
                server_pids: Iterable[int] = ()) -> dict[str, Any]:
        """The profile's raw files ({suffix: text or bytes}) and perf_note into the row. The
        perf.data of a profile sample is fetched, folded (server_pids: the sample's own server
        processes) and removed from its host."""
        raw: dict[str, Any] = {}
        if procs.record_path is not None and not interrupted:
            raw.update(self._fetch_profile(self.hosts[host_name], procs, list(server_pids)))
        if procs.record_path is not None:
            try:
                self.hosts[host_name].run(["rm", "-f", "--", procs.record_path], check=False, timeout=30)
            except (HostError, OSError):
                pass
        if procs.notes:
            old = row.values.get("perf_note")
            row.set(perf_note="; ".join(dict.fromkeys([*([old] if old else []), *procs.notes])))
        return raw

    def _fetch_profile(self, host: Host, procs: PerfProcs, server_pids: list[int]) -> dict[str, Any]:
        """perf.data (bytes) and its folded stacks (text) from host, or a note saying why not."""
        assert procs.record_path is not None
        path = procs.record_path
        try:
            code = procs.record.poll() if procs.record is not None else None
            if code not in _STOPPED:
                procs.notes.append(f"perf record {_exit_text(code)}" + _stderr_of(procs.record))
            script = host.run(perf.script_argv(path), timeout=600)
            with tempfile.TemporaryDirectory(prefix="splicebench-perf-") as d:
                local = os.path.join(d, "perf.data")
                host.get(path, local)
                with open(local, "rb") as f:
                    data = f.read()
        except (CommandFailed, HostError, OSError) as e:
            procs.notes.append(f"profile not recorded: {e}")
            return {}
        folded = perf.fold(script.stdout, server_pids or None)
        return {"perf.data": data, "profile.folded": perf.format_folded(folded)}


def _exit_text(code: int | None) -> str:
    return "was still running" if code is None else f"ended with status {code}"


def _stderr_of(p: Proc | None) -> str:
    lines = [ln.strip() for ln in (p.stderr() if p is not None else "").splitlines() if ln.strip()]
    return f" (stderr: {lines[-1]})" if lines else ""


def hold_tracepoints(hosts: Mapping[str, Host], samplers: Mapping[str, str], deadman_s: float,
                     held: list[Proc]) -> None:
    """`sb-cpustat --hold` on each host (name -> its sampler's path) for the whole run: while one
    perf event of the system-call tracepoint stays open there, a sample's sampler neither registers
    the tracepoint's probe at its start nor waits out its unregistering at its exit (about 40-60 ms
    per sample here). Only an optimisation: a host where it cannot start is left without one. Each
    process goes into `held` as soon as it has started (release_tracepoints stops them)."""
    for name, program in samplers.items():
        try:
            held.append(hosts[name].start([program, "--hold"], deadman_s=deadman_s))
        except (HostError, ProcError, OSError):
            pass
    for p in held:
        try:
            p.wait_json_event("ready", ATTACH_TIMEOUT_S)
        except ProcError:
            pass


def release_tracepoints(held: list[Proc]) -> None:
    """Stop what hold_tracepoints started (its exit unregisters the probe: tens of ms)."""
    for p in held:
        if p.poll() is None:
            p.signal(signal.SIGTERM)
    for p in held:
        if p.wait(STOP_TIMEOUT_S) is None:
            p.kill()

