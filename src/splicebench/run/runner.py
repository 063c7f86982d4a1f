"""Executes a plan sample by sample, never losing one, never leaving a process behind (I/O).

For each sample: start the server and the CPU sampler (sb-cpustat) on the server's host, wait for
their ready lines, run one client per client host, stop the sampler, check that the server is
still alive, stop it with SIGTERM and collect its summary line. The CPU figures cover the window
between the clients' start and end marks (results/cpu.py), not the orchestrator's round trips. Every sample ends up as one row,
whatever happened: 'ok', 'failed' (with the reason), 'interrupted' (Ctrl-C or SIGTERM) or
'skipped' (not run because the run was interrupted or stopped on a failure).

Processes are stopped in a `finally` with Ctrl-C deferred, so a second Ctrl-C cannot cut the
clean-up short.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

from splicebench.programs import accel, peers
from splicebench.errors import HostError, ProcError
from splicebench.hosts.base import describe_exit, Host, Proc
from splicebench.run.fleet import start_together
from splicebench.results import cpu, perf
from splicebench.run import perf_run
from splicebench.results.metrics import (Row, byte_balance, client_failure, client_metrics, loaded_metrics, parse_client_output,
                                         server_events, server_metrics)
from splicebench.scenario.model import Cell
from splicebench.scenario.plan import (LOAD_RAMP_S, MEASURED, PROFILE, READY_TIMEOUT_S, STOP_TIMEOUT_S, WARMUP, Plan,
                                      Sample)
from splicebench.registry import (ACCEL_NONE, ACCEL_PROGRAM, CLIENT_PROGRAM, COMMON_SERVER_OPTIONS,
                                  SAMPLER_INTERVAL_US, SAMPLER_PROGRAM, SERVERS, WORKERS, WORKLOAD_FIELDS,
                                  program_name)
from splicebench.util.files import utc_now_iso
from splicebench.util.signals import Interrupt, deferred_interrupts, interrupt_on_terminate

USAGE_EXIT = 2  # a program's exit status for a command line it refuses (docs/programs.md)
USAGE_PREFIX = "usage error: "  # RunOutcome.reason of a run stopped by one

OK, FAILED, INTERRUPTED, SKIPPED = "ok", "failed", "interrupted", "skipped"
UNLOADED, BULK = "unloaded", "bulk"  # latency-under-load: the roles of its other clients


@dataclass
class RunOutcome:
    rows: list[dict[str, Any]] = field(default_factory=list)
    status: str = "complete"  # complete | stopped (stop_on_failure) | interrupted
    reason: str = ""
    # Adaptive repetitions: planned samples not run because their cell had enough (no row).
    not_needed: list[str] = field(default_factory=list)


class Runner:
    """Runs samples on hosts whose programs are in `bin_dirs[host]`."""

    def __init__(self, hosts: Mapping[str, Host], bin_dirs: Mapping[str, str], *, run_id: str,
                 clk_tck: Mapping[str, int] | None = None, progress=None,
                 on_sample: Callable[[Sample, dict[str, Any], dict[str, str | bytes]], None] | None = None,
                 before_cell: Callable[[Cell], None] | None = None,
                 before_measured: Callable[[], None] | None = None,
                 perf_why_not: Mapping[str, str | None] | None = None):
        self.hosts = hosts
        self.bin_dirs = bin_dirs
        self.run_id = run_id
        self.clk_tck = dict(clk_tck or {})
        self.progress = progress
        # Called after each sample with (sample, row, raw files {name: text}); the row is complete
        # except for 'raw_files', which the callback may fill in.
        self.on_sample = on_sample
        # host -> why perf cannot run there (None: it can); hosts not listed are probed when first used.
        self.perf = perf_run.PerfHosts(hosts, perf_why_not)
        # Called before the first sample of each cell run (host_settings: the cell's sysctls).
        self.before_cell = before_cell
        # Called once, before the first sample that is not a warm-up (commands.run: the report's
        # libraries finish loading; the warm-up round may share the CPU with them, nothing measured does).
        self.before_measured = before_measured

    def run(self, plan: Plan) -> RunOutcome:
        hosts = {s.server_host for s in plan.samples}
        held: list[Proc] = []
        try:
            perf_run.hold_tracepoints(
                self.hosts, {h: self._program(h, SAMPLER_PROGRAM) for h in sorted(hosts)},
                sum(s.client_timeout_s + READY_TIMEOUT_S + STOP_TIMEOUT_S + 60 for s in plan.samples), held)
            return self._run(plan)
        finally:
            with deferred_interrupts():
                perf_run.release_tracepoints(held)

    def _run(self, plan: Plan) -> RunOutcome:
        outcome = RunOutcome()
        phase_totals = {WARMUP: plan.scenario.warmup, MEASURED: plan.scenario.measured, PROFILE: 1}
        stop_reason = ""
        not_needed: set[str] = set()
        cell_ready: int | None = None
        with interrupt_on_terminate():
            for i, sample in enumerate(plan.samples):
                if sample.id in not_needed:
                    continue
                if stop_reason:
                    row = self.skipped_row(sample, stop_reason)
                    self._emit(sample, row, {})
                    outcome.rows.append(row)
                    continue
                try:
                    if self.before_measured and sample.phase != WARMUP:
                        self.before_measured()
                        self.before_measured = None
                    if self.before_cell and cell_ready != sample.cell.index:
                        self.before_cell(sample.cell)
                        cell_ready = sample.cell.index
                    if self.progress:
                        self.progress.start(sample, phase_totals[sample.phase])
                    row, raw, interrupted, usage = self._run_sample(sample, plan)
                except KeyboardInterrupt as e:
                    sig = str(e) if isinstance(e, Interrupt) else "SIGINT"
                    row = self._base_row(sample).set(status=INTERRUPTED, error=f"interrupted ({sig})").as_dict()
                    raw, interrupted, usage = {}, True, None
                with deferred_interrupts():
                    self._emit(sample, row, raw)
                    outcome.rows.append(row)
                    if self.progress:
                        self.progress.end(row["status"], row)
                if interrupted:
                    outcome.status = "interrupted"
                    outcome.reason = row["error"]
                    stop_reason = "not run: the run was interrupted"
                elif row["status"] == FAILED and usage:
                    # The same command line for every sample: no data-path result, stop at once.
                    outcome.status = "stopped"
                    outcome.reason = USAGE_PREFIX + usage
                    stop_reason = f"not run: stopped after sample {sample.id}: {usage}"
                elif row["status"] == FAILED and plan.scenario.stop_on_failure:
                    outcome.status = "stopped"
                    outcome.reason = f"stop_on_failure: sample {sample.id} failed"
                    stop_reason = f"not run: stopped after sample {sample.id} failed (stop_on_failure)"
                elif sample.phase == MEASURED and plan.scenario.target_ci_width is not None \
                        and _ends_round(plan, i) and _cell_has_enough(plan.scenario, outcome.rows, sample):
                    rest = [s.id for s in plan.samples[i + 1:]
                            if s.cell.index == sample.cell.index and s.phase != PROFILE]
                    not_needed.update(rest)
                    outcome.not_needed.extend(rest)
        if self.progress and stop_reason:
            self.progress.skipped(sum(1 for r in outcome.rows if r["status"] == SKIPPED), stop_reason[9:])
        return outcome

    # -----------------------------------------------------------------------------------------

    def _emit(self, sample: Sample, row: dict[str, Any], raw: dict[str, Any]) -> None:
        if self.on_sample:
            self.on_sample(sample, row, raw)

    def _base_row(self, sample: Sample) -> Row:
        r = Row().set(
            run_id=self.run_id, sample_id=sample.id, seq=sample.seq, cell=sample.cell.index,
            cell_label=sample.cell.label, round=sample.round, phase=sample.phase, repetition=sample.repetition,
            server=sample.server.label, server_kind=sample.server.kind,
            server_host=sample.row_host or sample.server_host,
            client_hosts="+".join(sample.client_hosts), accelerate=sample.accelerate,
        )
        r.set(workload=sample.workload)
        for k, v in sample.params().items():
            r.set(**{k if k in WORKLOAD_FIELDS or k in COMMON_SERVER_OPTIONS else f"opt_{k}": v})
        if WORKERS in dict(sample.cell.values):  # the matrix's value, for the sweep (metrics.PARAM_COLUMNS)
            r.set(workers=dict(sample.cell.values)[WORKERS])
        return r

    def skipped_row(self, sample: Sample, reason: str) -> dict[str, Any]:
        return self._base_row(sample).set(status=SKIPPED, error=reason).as_dict()

    def _program(self, host: str, name: str, built: bool = True) -> str:
        return f"{self.bin_dirs[host]}/{name}" if built else name

    def _run_sample(self, sample: Sample, plan: Plan) -> tuple[dict[str, Any], dict[str, Any], bool, str | None]:
        """Run one sample from start to end: (row, raw outputs {file suffix: text}, interrupted, the usage
        error of a program that refused its command line or None).

        A problem of the sample (a program that fails, a host command that fails) is recorded in the
        row's status and error instead of raised; Ctrl-C or SIGTERM ends it as 'interrupted'. When
        it returns, no program of the sample is running, and whatever they printed is in raw."""
        row = self._base_row(sample)
        row.set(started_at=utc_now_iso())
        t_start = time.monotonic()
        errors: list[str] = []
        interrupted = False
        procs = _SampleProcs()
        try:
            self._execute(sample, row, procs, errors)
        except KeyboardInterrupt as e:
            interrupted = True
            sig = str(e) if isinstance(e, Interrupt) else "SIGINT"
            errors.insert(0, f"interrupted ({sig or 'SIGINT'})")
        except (ProcError, HostError, OSError, ValueError) as e:
            errors.append(str(e))
        finally:
            with deferred_interrupts():
                procs.kill_running()
        # Collect what the programs printed, whatever happened above.
        raw = self._collect_server(row, procs, errors, interrupted)
        raw.update(self._collect_clients(row, procs, errors, interrupted))
        if errors and not interrupted and sample.backend is None and (extra := byte_balance(row.values)):
            errors.append(extra)
        raw.update(_collect_sampler(row, procs, raw))
        raw.update(self.perf.collect(sample.server_host, row, procs.perf, interrupted, procs.watched_pids))
        raw.update(_collect_accel(row, procs, errors, interrupted))
        status = INTERRUPTED if interrupted else (FAILED if errors else OK)
        row.set(status=status, error="; ".join(errors), duration_s=time.monotonic() - t_start)
        return row.as_dict(), raw, interrupted, procs.usage_error()

    def _execute(self, sample: Sample, row: Row, procs: _SampleProcs, errors: list[str]) -> None:
        """The sample's programs in order: backend (proxy samples), server, clients (measured), then
        the server and the backend stopped with SIGTERM.

        Each program is put into procs as soon as it starts, so the caller can kill what is left
        whatever this raises. What went wrong while stopping them is appended to errors; a sample
        that cannot go on raises ProcError, HostError, OSError or ValueError; Ctrl-C and SIGTERM
        raise KeyboardInterrupt."""
        deadman = sample.client_timeout_s + READY_TIMEOUT_S + STOP_TIMEOUT_S + 60
        self._start_accel(sample, procs, deadman + STOP_TIMEOUT_S * 3)
        upstream = self._start_backend(sample, procs, deadman)
        ready = self._start_server(sample, procs, upstream, deadman)
        self._measure(sample, row, procs, ready)
        assert procs.server is not None
        errors.extend(_stop(procs.server, "server"))
        row.set(server_exit=procs.server.poll())
        if procs.backend is not None:
            errors.extend(_stop(procs.backend, "backend"))
        for hname, loader in procs.accel.items():  # after the programs in its cgroup
            errors.extend(_stop(loader, f"{ACCEL_PROGRAM} on {hname}"))

    def _start_accel(self, sample: Sample, procs: _SampleProcs, deadman: float) -> None:
        """For an accelerated sample, start the SOCKMAP acceleration loader on every host of the
        sample (into procs.accel) and wait for each one's cgroup (procs.cgroups); the sample's
        programs are then started inside them (procs.wrap)."""
        if sample.accelerate == ACCEL_NONE:
            return
        wl = dict(sample.cell.workload)  # latency-under-load: the bulk streams are connected at the same time
        conns = (int(wl.get("conns", 1)) + int(wl.get("bulk_conns", 0))) * len(sample.client_hosts)
        for hname in sample.hosts():
            argv = accel.loader_argv(self._program(hname, ACCEL_PROGRAM), conns)
            procs.accel[hname] = self.hosts[hname].start(argv, deadman_s=deadman)
        for hname, loader in procs.accel.items():
            cgroup = loader.wait_json_event("ready", READY_TIMEOUT_S).get("cgroup")
            if not isinstance(cgroup, str) or not cgroup.startswith("/"):
                raise ProcError(f"{ACCEL_PROGRAM} on {hname}: ready line has no cgroup")
            procs.cgroups[hname] = cgroup

    def _start_backend(self, sample: Sample, procs: _SampleProcs, deadman: float) -> tuple[str, int] | None:
        """For a proxy sample, start its backend (into procs.backend) and wait for its ready line:
        the (address, port) the proxy forwards to, as seen from the proxy's host. None otherwise."""
        if sample.backend is None or sample.backend_host is None:
            return None
        bhost = self.hosts[sample.backend_host]
        procs.backend = bhost.start(procs.wrap(
            sample.backend_host, sample.backend_argv(self._program(sample.backend_host, SERVERS[sample.backend].program))),
            deadman_s=deadman)
        bready = procs.backend.wait_json_event("ready", READY_TIMEOUT_S)
        procs.backend_ready = bready
        baddr = str(bready.get("addr") or "127.0.0.1") if sample.backend_host == sample.server_host \
            else bhost.address
        return baddr, int(bready["port"])

    def _start_server(self, sample: Sample, procs: _SampleProcs, upstream: tuple[str, int] | None,
                      deadman: float) -> dict[str, Any]:
        """Start the sample's server (into procs.server; NGINX/HAProxy through peers.py, pointed at
        upstream) and wait for its ready line, which is returned; ProcError if it has no valid port."""
        kind = sample.server_kind
        shost = self.hosts[sample.server_host]
        if kind.peer:
            assert upstream is not None
            procs.server = peers.start(kind.name, shost, listen_host=sample.listen.rsplit(":", 1)[0],
                                       upstream_host=upstream[0], upstream_port=upstream[1],
                                       options=dict(sample.server_options), deadman_s=deadman,
                                       cpus=sample.server_cpus,
                                       ready_timeout=READY_TIMEOUT_S,
                                       wrap=lambda argv: procs.wrap(sample.server_host, argv))
        else:
            procs.server = shost.start(procs.wrap(sample.server_host, sample.server_argv(
                self._program(sample.server_host, kind.program, kind.built),
                peers.host_port(*upstream) if upstream else None)), deadman_s=deadman)
            # Where the started pid is the server's own (its ready line will say so), the CPU
            # sampler starts now, beside the server's own start, instead of after its ready line.
            if procs.server.pid_is_program:
                self._start_sampler(sample, procs, _watched(procs, procs.server.pid))
        ready = procs.server.wait_json_event("ready", READY_TIMEOUT_S)
        port = ready.get("port")
        if not isinstance(port, int) or not 0 < port < 65536:
            raise ProcError(f"server ready line has no valid port: {ready}")
        return ready

    def _measure(self, sample: Sample, row: Row, procs: _SampleProcs, ready: dict[str, Any]) -> None:
        """Run the clients with the CPU sampler running on the server's host (watching the server
        and, for a proxy sample, the backend): started with a built server, or right before the
        clients for NGINX/HAProxy (whose ready line names the pid to watch), and stopped right
        after them. The CPU columns are computed from its readings when the sample is collected."""
        assert procs.server is not None
        pids = _watched(procs, ready.get("pid") if isinstance(ready.get("pid"), int) else procs.server.pid)
        if procs.sampler is not None and procs.sampler_pids != pids:  # started for another pid: again
            procs.sampler.kill()
            procs.sampler = None
        if procs.sampler is None:
            self._start_sampler(sample, procs, pids)
        assert procs.sampler is not None
        procs.sampler.wait_json_event("ready", READY_TIMEOUT_S)
        try:
            if sample.phase == PROFILE:
                self.perf.start(sample.server_host, procs.perf, name=f"{self.run_id}-{sample.id}",
                                deadman_s=sample.client_timeout_s + 60)
            self._run_clients(sample, procs, ready)
        finally:
            errors = _stop(procs.sampler, "CPU sampler") if procs.sampler.poll() is None else []
            procs.sampler_errors.extend(errors)
            self.perf.stop(procs.perf)

    def _start_sampler(self, sample: Sample, procs: _SampleProcs, pids: list[int]) -> None:
        """Start the CPU sampler on the server's host, watching `pids` (into procs.sampler)."""
        argv = [self._program(sample.server_host, SAMPLER_PROGRAM), "--interval-us", str(SAMPLER_INTERVAL_US)]
        for pid in pids:
            argv += ["--pid", str(pid)]
        procs.sampler = self.hosts[sample.server_host].start(argv, deadman_s=sample.client_timeout_s + 60)
        procs.sampler_pids = pids

    def _run_clients(self, sample: Sample, procs: _SampleProcs, ready: dict[str, Any]) -> None:
        """Start one client per client host, together (into procs.clients), pointed at the server's
        ready address, and wait for them until the sample's client timeout; a client still running
        then is killed. Their exit codes (None: killed at the timeout) go into procs.client_exit.
        latency-under-load: _run_loaded instead."""
        if sample.load_args:
            self._run_loaded(sample, procs, ready)
            return
        self._start_clients(sample, procs, ready, sample.client_args, "")
        self._wait_clients(procs, range(len(procs.clients)), time.monotonic() + sample.client_timeout_s)

    def _start_clients(self, sample: Sample, procs: _SampleProcs, ready: dict[str, Any], args: tuple[str, ...],
                       role: str, timeout_s: float | None = None) -> range:
        """One client with `args` per client host, started together, appended to procs.clients
        with `role`; the range of their indices there."""
        shost = self.hosts[sample.server_host]
        port = ready["port"]
        starts = []
        for hname in sample.client_hosts:
            addr = str(ready.get("addr") or "127.0.0.1") if hname == sample.server_host else shost.address
            connect = f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"
            argv = procs.wrap(hname, sample.client_argv(self._program(hname, CLIENT_PROGRAM), connect, args))
            starts.append((self.hosts[hname], argv, {"deadman_s": (timeout_s or sample.client_timeout_s) + 30}))
        # Client hosts start together (SSH hosts within milliseconds: gated, then released).
        first = len(procs.clients)
        procs.clients += list(zip(sample.client_hosts, start_together(starts)))
        procs.client_roles += [role] * len(starts)
        return range(first, len(procs.clients))

    @staticmethod
    def _wait_clients(procs: _SampleProcs, indices: range, deadline: float) -> None:
        for i in indices:
            proc = procs.clients[i][1]
            code = proc.wait(max(0.0, deadline - time.monotonic()))
            if code is None:
                proc.kill()
            procs.client_exit[i] = code

    def _run_loaded(self, sample: Sample, procs: _SampleProcs, ready: dict[str, Any]) -> None:
        """latency-under-load: the ping-pong clients alone ('unloaded'), then the bulk clients
        ('bulk'), after LOAD_RAMP_S the ping-pong clients again (the loaded ones, role ''), then
        SIGINT to the bulk clients, which stop sending and verify the echo of what they sent."""
        t = sample.client_timeout_s
        unloaded = self._start_clients(sample, procs, ready, sample.client_args, UNLOADED)
        self._wait_clients(procs, unloaded, time.monotonic() + t)
        bulk = self._start_clients(sample, procs, ready, sample.load_args, BULK, timeout_s=2 * t + LOAD_RAMP_S)
        try:
            time.sleep(LOAD_RAMP_S)
            loaded = self._start_clients(sample, procs, ready, sample.client_args, "")
            self._wait_clients(procs, loaded, time.monotonic() + t)
        finally:
            for i in bulk:
                if procs.clients[i][1].poll() is None:
                    procs.clients[i][1].signal(signal.SIGINT)
            self._wait_clients(procs, bulk, time.monotonic() + STOP_TIMEOUT_S)

    def _collect_server(self, row: Row, procs: _SampleProcs, errors: list[str],
                        interrupted: bool) -> dict[str, str]:
        """The server's and the backend's outputs as raw files; the server's metrics and exit code
        into the row. A sample that went well so far fails if the server printed no summary line."""
        raw: dict[str, str] = {}
        server, backend = procs.server, procs.backend
        if server is not None:
            out = server.stdout()
            events = server_events(out)
            row.update(server_metrics(events))
            if server.poll() is not None and row.values.get("server_exit") is None:
                row.set(server_exit=server.poll())
            raw["server.jsonl"] = out
            if server.stderr().strip():
                raw["server.stderr.txt"] = server.stderr()
            if not interrupted and not errors and "summary" not in events:
                errors.append("server printed no summary line")
        if backend is not None:
            raw["backend.jsonl"] = backend.stdout()
            if backend.stderr().strip():
                raw["backend.stderr.txt"] = backend.stderr()
        return raw

    def _collect_clients(self, row: Row, procs: _SampleProcs, errors: list[str],
                         interrupted: bool) -> dict[str, str]:
        """The clients' outputs as raw files (client.json, or client-<i>-<host>.json for several);
        their merged metrics into the row; why each failed into errors (not after an interrupt)."""
        raw: dict[str, str] = {}
        parsed: dict[str, list[dict[str, Any] | None]] = {}
        several = len(procs.clients) > len(procs.client_roles) or len(set(procs.client_roles)) < len(procs.client_roles)
        for i, (hname, proc) in enumerate(procs.clients):
            role = procs.client_roles[i] if i < len(procs.client_roles) else ""
            out, err = proc.stdout(), proc.stderr()
            obj = parse_client_output(out)
            parsed.setdefault(role, []).append(obj)
            name = "client" + (f"-{role}" if role else "") + (f"-{i}-{hname}" if several else "")
            raw[f"{name}.json"] = out
            if err.strip():
                raw[f"{name}.stderr.txt"] = err
            if not interrupted:
                why = client_failure(obj, procs.client_exit.get(i, proc.poll()), err)
                if why:
                    errors.append(f"{role + ' ' if role else ''}client on {hname}: {why}")
        if procs.clients:
            row.update(client_metrics(parsed.get("", [])))
        if UNLOADED in parsed or BULK in parsed:
            row.update(loaded_metrics(parsed.get("", []), parsed.get(UNLOADED, []), parsed.get(BULK, [])))
        return raw


@dataclass
class _SampleProcs:
    """The programs of one sample, each recorded as soon as it has started."""

    server: Proc | None = None
    backend: Proc | None = None
    clients: list[tuple[str, Proc]] = field(default_factory=list)  # (client host, its client)
    client_roles: list[str] = field(default_factory=list)  # per client: "" or UNLOADED, BULK
    client_exit: dict[int, int | None] = field(default_factory=dict)  # client index -> exit code
    backend_ready: dict[str, Any] = field(default_factory=dict)
    sampler: Proc | None = None  # sb-cpustat on the server's host
    sampler_pids: list[int] = field(default_factory=list)  # the pids it watches
    sampler_errors: list[str] = field(default_factory=list)
    watched_pids: list[int] = field(default_factory=list)  # the sampler's groups: server and backend processes
    perf: perf_run.PerfProcs = field(default_factory=perf_run.PerfProcs)
    accel: dict[str, Proc] = field(default_factory=dict)  # host -> its SOCKMAP acceleration loader
    cgroups: dict[str, str] = field(default_factory=dict)  # host -> the loader's cgroup

    def wrap(self, host: str, argv: list[str]) -> list[str]:
        """argv as started on host: inside the acceleration's cgroup when the sample has one."""
        return accel.in_cgroup(argv, self.cgroups[host]) if host in self.cgroups else argv

    def usage_error(self) -> str | None:
        """'<program>: <its message>' if one of the built programs refused its command line (exit 2
        with a usage line, servers/net.c net_usage_error), else None."""
        procs = [p for _, p in self.clients] + [self.server, self.backend, self.sampler, *self.accel.values()]
        for p in procs:
            if p is None or p.poll() != USAGE_EXIT:
                continue
            name = program_name(accel.program_of(p.argv))
            lines = [ln.strip() for ln in p.stderr().splitlines() if ln.strip()]
            if name.startswith("sb-") and any("usage:" in ln for ln in lines):
                first = next((ln for ln in lines if "usage:" not in ln), lines[0])  # the message, not the hint
                return first if first.startswith(f"{name}:") else f"{name}: {first}"
        return None

    def kill_running(self) -> None:
        """Kill every one of them still running (call with interrupts deferred)."""
        for _, proc in self.clients:
            if proc.poll() is None:
                proc.kill()
        if self.server is not None and self.server.poll() is None:
            self.server.kill()
        if self.backend is not None and self.backend.poll() is None:
            self.backend.kill()
        if self.sampler is not None and self.sampler.poll() is None:
            self.sampler.kill()
        self.perf.kill_running()
        # The loaders last, and by SIGTERM: they detach and remove their cgroups (killing is the
        # last resort: `invoke clean` then removes the cgroup).
        running = [p for p in self.accel.values() if p.poll() is None]
        for p in running:
            p.signal(signal.SIGTERM)
        for p in running:
            if p.wait(STOP_TIMEOUT_S) is None:
                p.kill()


def _watched(procs: _SampleProcs, server_pid: int) -> list[int]:
    """The pids the CPU sampler watches: the server's, then the backend's (from its ready line)."""
    pids = [server_pid]
    if procs.backend is not None:
        bpid = procs.backend_ready.get("pid")
        pids.append(bpid if isinstance(bpid, int) else procs.backend.pid)
    return pids


def _stop(proc: Proc, what: str) -> list[str]:
    """Stop a sample's server or backend (`what`) with SIGTERM, killing it if it does not exit in
    time; why it failed, if it did (it exited before, did not stop in time, or exited non-zero)."""
    code = proc.poll()
    if code is not None:
        return [f"{what} {describe_exit(code)} during the sample" + _stderr_tail(proc)]
    proc.signal(signal.SIGTERM)
    code = proc.wait(STOP_TIMEOUT_S)
    if code is None:
        proc.kill()
        return [f"{what} did not exit within {STOP_TIMEOUT_S:g} s of SIGTERM; killed"]
    return [f"{what} {describe_exit(code)} after SIGTERM" + _stderr_tail(proc)] if code != 0 else []


def _collect_sampler(row: Row, procs: _SampleProcs, raw: dict[str, str]) -> dict[str, str]:
    """The CPU sampler's output as a raw file, and the CPU columns over the clients' transfer window
    into the row. A sampler that failed leaves the CPU columns empty and says why in cpu_note: the
    sample's data path is not at fault."""
    sampler = procs.sampler
    if sampler is None:
        return {}
    out = {"cpustat.json": sampler.stdout()}
    if sampler.stderr().strip():
        out["cpustat.stderr.txt"] = sampler.stderr()
    clients = [parse_client_output(raw.get(name, "")) for name in raw if name.startswith("client")
               and name.endswith(".json")]
    window = cpu.marks(clients)
    if procs.sampler_errors or window is None:
        why = "; ".join(procs.sampler_errors) or "the client reported no transfer marks"
        row.set(cpu_note=why, perf_note=f"no perf counts: {why}")
        return out
    try:
        readings = cpu.parse_cpustat(out["cpustat.json"])
        figures = cpu.sample_cpu(readings, *window)
    except ValueError as e:
        row.set(cpu_note=f"CPU sampler: {e}", perf_note=f"no perf counts: CPU sampler: {e}")
        return out
    row.update(cpu.row_columns(figures, *window))
    counts, notes = cpu.perf_counts(readings, *window)
    row.update(perf.stat_row(counts, row.values.get("bytes_verified")))
    if notes:
        row.set(perf_note="; ".join(notes))
    procs.watched_pids = [p for g in readings.groups for p in g]
    return out


def _collect_accel(row: Row, procs: _SampleProcs, errors: list[str], interrupted: bool) -> dict[str, str]:
    """The acceleration loaders' outputs as raw files (accel-<host>.jsonl) and their counters, summed
    over the hosts, into the row's accel_* columns. A sample that went well so far fails if a loader
    printed no summary line or could not remove its cgroup."""
    if not procs.accel:
        return {}
    raw: dict[str, str] = {}
    summaries: dict[str, dict[str, Any] | None] = {}
    for hname, loader in procs.accel.items():
        out = loader.stdout()
        raw[f"accel-{hname}.jsonl"] = out
        if loader.stderr().strip():
            raw[f"accel-{hname}.stderr.txt"] = loader.stderr()
        summaries[hname] = server_events(out).get("summary")
        if not interrupted and not errors:
            if summaries[hname] is None:
                errors.append(f"{ACCEL_PROGRAM} on {hname} printed no summary line")
            elif summaries[hname].get("cgroup_removed") is not True:
                errors.append(f"{ACCEL_PROGRAM} on {hname} could not remove its cgroup" + _stderr_tail(loader))
    row.update(accel.summary_columns(summaries))
    return raw


def _ends_round(plan: Plan, i: int) -> bool:
    """Whether sample i is the last of its round (the next one starts another round or cell)."""
    s = plan.samples[i]
    nxt = plan.samples[i + 1] if i + 1 < len(plan.samples) else None
    return nxt is None or (nxt.cell.index, nxt.round) != (s.cell.index, s.round)


def _cell_has_enough(scenario, rows: list[dict[str, Any]], sample: Sample) -> bool:
    """Adaptive repetitions: whether every (host, server) of the sample's cell has enough measured
    samples (stats.enough_for_all on goodput; failed samples count as attempts)."""
    from splicebench.analysis.stats import RepetitionPolicy, enough_for_all

    policy = RepetitionPolicy(scenario.min_measured or 1, scenario.measured, scenario.target_ci_width)
    groups: dict[tuple[str, str], tuple[list[Any], int]] = {}
    for r in rows:
        if r["cell"] != sample.cell.index or r["phase"] != MEASURED:
            continue
        vals, n = groups.get((r["server_host"], r["server"]), ([], 0))
        if r["status"] == OK:
            vals = vals + [r.get("goodput_bytes_per_s")]
        groups[(r["server_host"], r["server"])] = (vals, n + 1)
    return bool(groups) and enough_for_all(groups, policy)[0]


def _stderr_tail(proc: Proc) -> str:
    lines = [ln for ln in proc.stderr().strip().splitlines() if ln.strip()]
    return f" (stderr: {lines[-1].strip()})" if lines else ""
