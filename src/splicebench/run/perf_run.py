"""Linux perf around a sample's clients, on the server's host (I/O; results/perf.py parses).

Every sample, where the host can run perf (hosts/facts.perf_status): `perf stat` on the server's
processes and `perf stat -a`, started after the server is ready and before the clients, stopped with
SIGINT (perf prints its counts then) right after them. A profile sample (scenario `profile: true`)
also runs `perf record -a -g -e cpu-clock`; its data file is folded with `perf script` on that host,
fetched and removed there. A host where perf cannot run gets no perf processes, and its samples say
why in perf_note: the run goes on.
"""

from __future__ import annotations

import os
import signal
import tempfile
from dataclasses import dataclass, field
from typing import Any, Mapping

from splicebench.errors import CommandFailed, HostError, ProcError
from splicebench.hosts import facts
from splicebench.hosts.base import Host, Proc
from splicebench.results import perf
from splicebench.results.metrics import Row

STOP_TIMEOUT_S = 30.0  # perf record writes its file after SIGINT
ATTACH_TIMEOUT_S = 10.0
# Exits 0 once every process group named after $1 has a process holding a perf_event descriptor
# (perf has opened its events: counting has begun), 1 after $1 tries 10 ms apart.
_WAIT_ATTACHED = r'''n=$1; shift
while [ "$n" -gt 0 ]; do
  ok=1
  for g in "$@"; do
    found=0
    for p in $(ps -e -o pid=,pgid= | awk -v g="$g" '$2 == g { print $1 }'); do
      if ls -l "/proc/$p/fd" 2>/dev/null | grep -q perf_event; then found=1; fi
    done
    [ "$found" = 1 ] || ok=0
  done
  [ "$ok" = 1 ] && exit 0
  n=$((n - 1)); sleep 0.01
done
exit 1'''


@dataclass
class PerfProcs:
    """The perf processes of one sample, each recorded as soon as it has started."""

    stat: dict[str, Proc] = field(default_factory=dict)  # scope (perf.SCOPES) -> perf stat
    record: Proc | None = None
    record_path: str | None = None  # perf.data on the server's host
    server_pids: list[int] = field(default_factory=list)  # the server's and backend's processes
    notes: list[str] = field(default_factory=list)

    def all(self) -> list[Proc]:
        return [*self.stat.values(), *([self.record] if self.record is not None else [])]

    def kill_running(self) -> None:
        for p in self.all():
            if p.poll() is None:
                p.kill()


class PerfHosts:
    """Which hosts can run perf, and perf's processes for the samples on them."""

    def __init__(self, hosts: Mapping[str, Host], why_not: Mapping[str, str | None] | None = None):
        self.hosts = hosts
        self.why_not: dict[str, str | None] = dict(why_not or {})

    def reason(self, host: str) -> str | None:
        """Why perf cannot run on `host`, or None (probed once per host)."""
        if host not in self.why_not:
            self.why_not[host] = facts.perf_status(self.hosts[host])
        return self.why_not[host]

    def start(self, host_name: str, procs: PerfProcs, server_pid: int, *, profile: bool, name: str,
              deadman_s: float, backend_pid: int | None = None) -> None:
        """Start perf stat (server's processes, host-wide) and, for a profile sample, perf record on
        host_name, and wait until they count. Problems are notes, never a failed sample."""
        why = self.reason(host_name)
        if why:
            procs.notes.append(why)
            return
        host = self.hosts[host_name]
        try:
            ps = host.run(["ps", "-e", "-o", "pid=,ppid="], timeout=30).stdout
            pids = perf.descendants(ps, [server_pid])
            procs.server_pids = perf.descendants(ps, [server_pid, *([backend_pid] if backend_pid else [])])
            procs.stat["server"] = host.start(perf.stat_argv(pids), deadman_s=deadman_s)
            procs.stat["host"] = host.start(perf.stat_argv(None), deadman_s=deadman_s)
            if profile:
                procs.record_path = f"{host.workdir()}/perf-{name}.data"
                procs.record = host.start(perf.record_argv(procs.record_path), deadman_s=deadman_s)
            groups = [str(p.pid) for p in procs.all()]
            tries = str(int(ATTACH_TIMEOUT_S * 100))
            r = host.run(["sh", "-c", _WAIT_ATTACHED, "sh", tries, *groups], check=False,
                         timeout=ATTACH_TIMEOUT_S + 30)
            if r.returncode != 0:
                procs.notes.append(f"perf did not start counting within {ATTACH_TIMEOUT_S:g} s"
                                   + _stderr_of(procs.all()))
        except (CommandFailed, HostError, ProcError, OSError) as e:
            procs.notes.append(f"perf could not be started: {e}")

    def stop(self, procs: PerfProcs) -> None:
        """SIGINT to every perf process (they print or write what they counted), then wait."""
        for p in procs.all():
            if p.poll() is None:
                p.signal(signal.SIGINT)
        for p in procs.all():
            if p.wait(STOP_TIMEOUT_S) is None:
                p.kill()
                procs.notes.append(f"{' '.join(p.argv[:2])} did not exit within {STOP_TIMEOUT_S:g} s of "
                                   "SIGINT; killed")

    def collect(self, host_name: str, row: Row, procs: PerfProcs, interrupted: bool) -> dict[str, Any]:
        """perf's outputs as raw files ({suffix: text or bytes}); the perf stat columns and perf_note
        into the row. The perf.data of a profile sample is fetched, folded and removed from its host."""
        raw: dict[str, Any] = {}
        counts = {}
        for scope, p in procs.stat.items():
            raw[f"perf-stat-{scope}.txt"] = p.stderr()
            try:
                counts[scope] = perf.parse_stat(p.stderr())
            except ValueError as e:
                procs.notes.append(f"perf stat ({scope}): {e}" + _stderr_of([p]))
        if counts:
            row.update(perf.stat_row(counts, row.values.get("bytes_verified")))
        if procs.record_path is not None and not interrupted:
            raw.update(self._fetch_profile(self.hosts[host_name], procs))
        if procs.record_path is not None:
            try:
                self.hosts[host_name].run(["rm", "-f", "--", procs.record_path], check=False, timeout=30)
            except (HostError, OSError):
                pass
        if procs.notes:
            row.set(perf_note="; ".join(dict.fromkeys(procs.notes)))
        return raw

    def _fetch_profile(self, host: Host, procs: PerfProcs) -> dict[str, Any]:
        """perf.data (bytes) and its folded stacks (text) from host, or a note saying why not."""
        assert procs.record_path is not None
        path = procs.record_path
        try:
            if procs.record is not None and procs.record.poll() not in (0, -signal.SIGINT):
                procs.notes.append(f"perf record {_exit_text(procs.record.poll())}" + _stderr_of([procs.record]))
            script = host.run(perf.script_argv(path), timeout=600)
            with tempfile.TemporaryDirectory(prefix="splicebench-perf-") as d:
                local = os.path.join(d, "perf.data")
                host.get(path, local)
                with open(local, "rb") as f:
                    data = f.read()
        except (CommandFailed, HostError, OSError) as e:
            procs.notes.append(f"profile not recorded: {e}")
            return {}
        folded = perf.fold(script.stdout, procs.server_pids or None)
        return {"perf.data": data, "profile.folded": perf.format_folded(folded)}


def _exit_text(code: int | None) -> str:
    return "was still running" if code is None else f"ended with status {code}"


def _stderr_of(procs: list[Proc]) -> str:
    for p in procs:
        lines = [ln.strip() for ln in p.stderr().splitlines() if ln.strip()]
        if lines:
            return f" (stderr: {lines[-1]})"
    return ""
