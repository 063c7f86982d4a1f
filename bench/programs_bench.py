#!/usr/bin/env python3
"""Benchmark of the echo servers on loopback, side by side in one run (not a test).

    python3 bench/programs_bench.py [--servers naive,splice,sockmap,uring,...] [--accel sk_msg] [--reps 5] [--json]

Builds the programs (make), starts every server once, then interleaves the servers within each
repetition so that drift on the machine hits them alike. Per server it prints the median goodput of
--reps x 100 MiB and --reps x 1 GiB single-connection streams, the median p50/p99 of --reps 64-byte
ping-pong runs, the median connections per second of --reps crr runs (connect, 64-byte request,
response, close; 4 at a time), the median p50/p99 of --reps 64-byte ping-pong runs made while four
bulk streams run through the same server (latency under load; the streams are stopped with SIGINT
and verify what they sent), and CPU seconds per GiB echoed over the 1 GiB runs: the server process
(utime + stime from /proc/PID/stat, what getrusage reports; all threads, io_uring's io-wq workers
included), the client, and the whole host from /proc/stat deltas (user + nice + system + irq +
softirq: SOCKMAP redirects run in softirq, not in the server process). Host CPU includes the client
and anything else running on the machine; the header gives the background load measured before the
runs and how busy the client was. System calls per GiB: the server's, counted by perf
(raw_syscalls:sys_enter, bench/syscall_count.py) over --reps extra 100 MiB streams of their own, so
that no other figure carries the tracing cost. The io_uring server runs in each of its modes: uring (recv-send),
uring-splice and uring-send-zc.

With --accel sk_msg (the default; --accel none turns it off) every server that can run under SOCKMAP
acceleration (not splice, sockmap or uring-splice: registry.py says why) gets a second row, NAME+sk_msg:
a second instance started, like its clients, inside the cgroup of one sb-accel loader (bpf/accel.c), so
the plain and the accelerated rows are measured interleaved in the same run. The loader's counters
(directions redirected and on TCP) are printed below the table.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import platform
import select
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import syscall_count

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from splicebench.programs import accel  # noqa: E402
from splicebench.registry import ACCEL_NONE, SERVERS  # noqa: E402
from splicebench.results.metrics import ACCEL_COUNTER_COLUMNS, accel_reasons  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30
TICK = os.sysconf("SC_CLK_TCK")
KINDS = ("stream-100MiB", "stream-1GiB", "pingpong-64B", "syscalls-100MiB", "crr-64B", "loaded-64B")
PAYLOAD_MAX = 1 << 50  # sb-client's largest --bytes: the bulk streams run until SIGINT
LOAD_RAMP_S = 0.3  # bulk streams running before the loaded ping-pong starts
HOST_BUSY_FIELDS = (0, 1, 2, 5, 6)  # user nice system irq softirq (after the "cpu" label)
DEFAULT_SERVERS = "naive,splice,sockmap,uring,uring-splice,uring-send-zc"
# A server as the benchmark names it: its program (build/sb-echo-X) and arguments.
MODES = {"uring-splice": ("uring", ["--mode", "splice"]), "uring-send-zc": ("uring", ["--mode", "send-zc"])}


def accel_refusal(name: str) -> str | None:
    """Why server `name` (a MODES name included) cannot run under SOCKMAP acceleration (registry), or None."""
    program, sargs = MODES.get(name, (name, []))
    kind = SERVERS[program]
    flags = dict(zip(sargs[::2], sargs[1::2]))
    return kind.accel_conflict({key: flags[o.flag] for key, o in kind.options.items() if o.flag in flags})


def build(build_dir: Path) -> None:
    """make -k into build_dir, under the same lock the tests take (tests/progs.py)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".make.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(
            ["make", "-k", "-C", str(REPO), f"BUILD={build_dir}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    if proc.returncode != 0:
        print(f"make failed (exit {proc.returncode}); benchmarking what was built:",
              file=sys.stderr)
        print("\n".join(proc.stdout.splitlines()[-15:]), file=sys.stderr)


def host_busy_s() -> float:
    """Busy CPU seconds of the whole host so far (all CPUs), softirq included."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return sum(int(fields[i]) for i in HOST_BUSY_FIELDS) / TICK


def proc_cpu_s(pid: int) -> float:
    """utime + stime of pid in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        tail = f.read().rpartition(")")[2].split()
    return (int(tail[11]) + int(tail[12])) / TICK


class Server:
    """One running echo server; stop() sends SIGTERM (SIGKILL to its group if it hangs)."""

    def __init__(self, name: str, path: Path, args: list[str], cgroup: str | None = None) -> None:
        self.name = name
        self.cgroup = cgroup  # the acceleration's cgroup it (and its clients) run in, or None
        self.summary: dict[str, Any] | None = None
        self.stderr = ""
        self.proc = subprocess.Popen(
            accel.in_cgroup([str(path), *args], cgroup) if cgroup else [str(path), *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], 20)
        line = self.proc.stdout.readline() if ready else b""
        if not line:
            self.stop()
            raise RuntimeError(f"{name}: no ready line ({self.stderr.strip() or 'timeout'})")
        self.ready = json.loads(line)
        addr = self.ready["addr"]
        host = f"[{addr}]" if ":" in addr else addr
        self.connect = f"{host}:{self.ready['port']}"

    def stop(self) -> None:
        if self.proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGTERM)
        try:
            out, err = self.proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            out, err = self.proc.communicate()
        self.stderr = err.decode(errors="replace")
        for line in out.decode(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                self.summary = json.loads(line)


@dataclass
class Run:
    server: str
    kind: str  # "stream-100MiB", "stream-1GiB", "pingpong-64B"
    ok: bool
    error: str | None = None
    wall_s: float = 0.0
    goodput_gib_s: float = 0.0
    bytes: int = 0
    p50_us: float | None = None
    p99_us: float | None = None
    server_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    host_cpu_s: float = 0.0
    syscalls: int | None = None  # the server's, when counted (100 MiB runs)
    conns_per_s: float | None = None


def run_client(build_dir: Path, srv: Server, kind: str, args: list[str]) -> Run:
    argv = [str(build_dir / "sb-client"), "--connect", srv.connect, *args, "--timeout", "300"]
    argv = accel.in_cgroup(argv, srv.cgroup) if srv.cgroup else argv
    with contextlib.ExitStack() as stack:
        calls = stack.enter_context(syscall_count.counting([srv.proc.pid])) if kind == KINDS[3] else None
        s0, h0 = proc_cpu_s(srv.proc.pid), host_busy_s()
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=400)
        s1, h1 = proc_cpu_s(srv.proc.pid), host_busy_s()
    try:
        r = json.loads(proc.stdout)
    except ValueError:
        return Run(srv.name, kind, False, error=proc.stderr.strip() or f"exit {proc.returncode}")
    lat = r["latency_ns"]
    return Run(
        server=srv.name,
        kind=kind,
        ok=bool(r["ok"]) and proc.returncode == 0,
        error=None if r["ok"] else f"{proc.stderr.strip()} mismatch={r['mismatch']}",
        wall_s=r["wall_s"],
        goodput_gib_s=r["goodput_bytes_per_s"] / GiB,
        bytes=r["bytes_verified"],
        p50_us=lat["p50"] / 1e3 if lat["p50"] is not None else None,
        p99_us=lat["p99"] / 1e3 if lat["p99"] is not None else None,
        server_cpu_s=s1 - s0,
        client_cpu_s=r["cpu_user_s"] + r["cpu_sys_s"],
        host_cpu_s=h1 - h0,
        syscalls=calls.value if calls else None,
        conns_per_s=r["conns_ok"] / r["wall_s"] if r["workload"] == "crr" and r["wall_s"] > 0 else None,
    )


def run_loaded(build_dir: Path, srv: Server, args: list[str], bulk_conns: int) -> Run:
    """The ping-pong client `args` while bulk_conns streams run; the streams must verify too."""
    bulk = subprocess.Popen([str(build_dir / "sb-client"), "--connect", srv.connect, "--workload", "stream",
                             "--conns", str(bulk_conns), "--bytes", str(PAYLOAD_MAX), "--seed", "2",
                             "--timeout", "600"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(LOAD_RAMP_S)
        run = run_client(build_dir, srv, "loaded-64B", args)
    finally:
        bulk.send_signal(signal.SIGINT)
        out, err = bulk.communicate(timeout=120)
    try:
        b = json.loads(out)
    except ValueError:
        b = {"ok": False, "mismatch": None}
    if not (b.get("ok") and bulk.returncode == 0):
        run.ok = False
        run.error = f"bulk streams: {err.strip()} mismatch={b.get('mismatch')}"
    return run


@dataclass
class Row:
    server: str
    error: str | None = None
    gib_s_100mib: float | None = None
    gib_s_1gib: float | None = None
    pp_p50_us: float | None = None
    pp_p99_us: float | None = None
    crr_conns_per_s: float | None = None
    loaded_p50_us: float | None = None
    loaded_p99_us: float | None = None
    server_cpu_s_per_gib: float | None = None
    client_cpu_s_per_gib: float | None = None
    host_cpu_s_per_gib: float | None = None
    syscalls_per_gib: float | None = None
    failed_runs: list[str] = field(default_factory=list)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(name: str, runs: list[Run]) -> Row:
    row = Row(name)
    mine = [r for r in runs if r.server == name]
    row.failed_runs = [f"{r.kind}: {r.error}" for r in mine if not r.ok]
    good = [r for r in mine if r.ok]
    row.gib_s_100mib = median([r.goodput_gib_s for r in good if r.kind == "stream-100MiB"])
    row.syscalls_per_gib = median([r.syscalls / (r.bytes / GiB) for r in good
                                   if r.kind == KINDS[3] and r.syscalls is not None and r.bytes])
    big = [r for r in good if r.kind == "stream-1GiB"]
    row.gib_s_1gib = median([r.goodput_gib_s for r in big])
    row.server_cpu_s_per_gib = median([r.server_cpu_s / (r.bytes / GiB) for r in big])
    row.client_cpu_s_per_gib = median([r.client_cpu_s / (r.bytes / GiB) for r in big])
    row.host_cpu_s_per_gib = median([r.host_cpu_s / (r.bytes / GiB) for r in big])
    pp = [r for r in good if r.kind == "pingpong-64B"]
    row.pp_p50_us = median([r.p50_us for r in pp if r.p50_us is not None])
    row.pp_p99_us = median([r.p99_us for r in pp if r.p99_us is not None])
    row.crr_conns_per_s = median([r.conns_per_s for r in good if r.kind == "crr-64B" and r.conns_per_s])
    loaded = [r for r in good if r.kind == "loaded-64B"]
    row.loaded_p50_us = median([r.p50_us for r in loaded if r.p50_us is not None])
    row.loaded_p99_us = median([r.p99_us for r in loaded if r.p99_us is not None])
    return row


def fmt(v: float | None, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[Row], header: list[str]) -> str:
    cols = [
        ("server", lambda r: r.server),
        ("100MiB GiB/s", lambda r: fmt(r.gib_s_100mib, ".2f")),
        ("1GiB GiB/s", lambda r: fmt(r.gib_s_1gib, ".2f")),
        ("pp64 p50 us", lambda r: fmt(r.pp_p50_us, ".1f")),
        ("pp64 p99 us", lambda r: fmt(r.pp_p99_us, ".1f")),
        ("loaded p50 us", lambda r: fmt(r.loaded_p50_us, ".1f")),
        ("loaded p99 us", lambda r: fmt(r.loaded_p99_us, ".1f")),
        ("crr conn/s", lambda r: fmt(r.crr_conns_per_s, ",.0f")),
        ("server CPU s/GiB", lambda r: fmt(r.server_cpu_s_per_gib, ".3f")),
        ("client CPU s/GiB", lambda r: fmt(r.client_cpu_s_per_gib, ".3f")),
        ("host CPU s/GiB", lambda r: fmt(r.host_cpu_s_per_gib, ".3f")),
        ("syscalls/GiB", lambda r: "-" if r.syscalls_per_gib is None else f"{r.syscalls_per_gib:,.0f}"),
    ]
    cells = [[name for name, _ in cols]] + [[get(r) for _, get in cols] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(cols))]
    lines = list(header)
    for c in cells:
        padded = [v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(c, widths))]
        lines.append("  ".join(padded))
    for r in rows:
        if r.error:
            lines.append(f"{r.server}: {r.error}")
        for f in r.failed_runs[:3]:
            lines.append(f"{r.server}: FAILED {f}")
    return "\n".join(lines)


def on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default=DEFAULT_SERVERS, help=f"comma-separated servers (default {DEFAULT_SERVERS})")
    ap.add_argument("--accel", default="sk_msg", choices=("sk_msg", ACCEL_NONE),
                    help="add accelerated rows (default sk_msg) or not (none)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions of each measurement")
    ap.add_argument("--round-trips", type=int, default=10000, help="per ping-pong run")
    ap.add_argument("--transactions", type=int, default=5000, help="per crr run")
    ap.add_argument("--bulk-conns", type=int, default=4, help="bulk streams beside the loaded ping-pong")
    ap.add_argument("--build", type=Path, default=REPO / "build", help="build directory")
    ap.add_argument("--json", action="store_true", help="print JSON (rows and every run)")
    args = ap.parse_args()
    names = [s for s in args.servers.split(",") if s]
    known = [n for n in names if MODES.get(n, (n,))[0] in SERVERS]
    accelerated = [] if args.accel == ACCEL_NONE else [n for n in known if accel_refusal(n) is None]
    refused = {n: accel_refusal(n) for n in known if args.accel != ACCEL_NONE and n not in accelerated}
    all_names = [x for n in names for x in ([n, f"{n}+{args.accel}"] if n in accelerated else [n])]

    # SIGTERM ends the benchmark like Ctrl-C: the finally below stops every server.
    signal.signal(signal.SIGTERM, on_sigterm)
    build(args.build)
    if not (args.build / "sb-client").exists():
        print(f"{args.build / 'sb-client'} was not built", file=sys.stderr)
        return 1

    h0 = host_busy_s()
    time.sleep(1.0)
    background = host_busy_s() - h0

    servers: dict[str, Server] = {}
    errors: dict[str, str] = {}
    runs: list[Run] = []
    loader = None
    cgroup = None
    try:
        if accelerated:
            loader = subprocess.Popen([str(args.build / "sb-accel")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      stdin=subprocess.DEVNULL, start_new_session=True)
            assert loader.stdout is not None
            ready, _, _ = select.select([loader.stdout], [], [], 20)
            line = loader.stdout.readline() if ready else b""
            if not line:
                raise RuntimeError(f"sb-accel: no ready line; {loader.stderr.read().decode() if loader.stderr else ''}")
            cgroup = json.loads(line)["cgroup"]
        for name in all_names:
            base = name.split("+")[0]
            program, sargs = MODES.get(base, (base, []))
            path = args.build / f"sb-echo-{program}"
            if not path.exists():
                errors[name] = f"{path} was not built"
                continue
            try:
                servers[name] = Server(name, path, sargs, cgroup if name != base else None)
            except RuntimeError as e:
                errors[name] = str(e)
        plan = [
            (KINDS[0], ["--workload", "stream", "--bytes", str(100 * MiB)]),
            (KINDS[1], ["--workload", "stream", "--bytes", str(GiB)]),
            (KINDS[2], ["--workload", "pingpong", "--msg-size", "64",
                              "--round-trips", str(args.round_trips)]),
            (KINDS[3], ["--workload", "stream", "--bytes", str(100 * MiB)]),
            (KINDS[4], ["--workload", "crr", "--msg-size", "64", "--conns", "4",
                        "--transactions", str(args.transactions)]),
            (KINDS[5], ["--workload", "pingpong", "--msg-size", "64", "--round-trips", str(args.round_trips)]),
        ]
        for rep in range(args.reps):
            for kind, cargs in plan:
                for name, srv in servers.items():
                    run = run_loaded(args.build, srv, cargs, args.bulk_conns) if kind == "loaded-64B" \
                        else run_client(args.build, srv, kind, cargs)
                    runs.append(run)
                    print(f"rep {rep + 1}/{args.reps} {name:13} {kind:14} "
                          f"{'ok' if run.ok else 'FAILED'} {run.goodput_gib_s:.2f} GiB/s",
                          file=sys.stderr, flush=True)
    finally:
        for srv in servers.values():
            srv.stop()
        counters = None
        if loader is not None:  # after the servers in its cgroup
            loader.terminate()
            out, _ = loader.communicate(timeout=30)
            lines = out.decode(errors="replace").strip().splitlines()
            counters = json.loads(lines[-1]).get("counters") if lines else None

    rows = []
    for name in all_names:
        row = summarize(name, runs)
        row.error = errors.get(name)
        srv = servers.get(name)
        if srv and srv.summary and srv.summary.get("errors"):
            row.failed_runs.append(f"server summary reports {srv.summary['errors']} errors")
        rows.append(row)
    def client_busy(kind: str) -> float | None:
        return median([r.client_cpu_s / r.wall_s for r in runs if r.kind == kind and r.wall_s > 0])

    uname = platform.uname()
    info = {
        "host": uname.node,
        "kernel": uname.release,
        "machine": uname.machine,
        "cpus": os.cpu_count(),
        "reps": args.reps,
        "background_cpu_s_per_s": background,
        "client_busy_median": {kind: client_busy(kind) for kind in KINDS},
        "accel_counters": counters,
        "accel_refused": refused,
    }
    if args.json:
        print(json.dumps({"info": info, "rows": [asdict(r) for r in rows],
                          "runs": [asdict(r) for r in runs]}, indent=1))
        return 0 if all(not r.error and not r.failed_runs for r in rows) else 1
    header = [
        f"splicebench data paths on {uname.node} ({uname.machine}, Linux {uname.release}, "
        f"{os.cpu_count()} CPUs): medians of {args.reps} runs, 1 connection, loopback",
        "client busy (its CPU s / wall s, 100% = one core), median: "
        + ", ".join(f"{k} {fmt(v, '.0%')}" for k, v in info["client_busy_median"].items())
        + f"; background load before the runs: {background:.2f} CPU s/s",
        "CPU s/GiB over the 1 GiB streams, per GiB echoed; host = /proc/stat user+nice+system+"
        "irq+softirq of all CPUs (client included); syscalls/GiB: the server's over extra 100 MiB streams "
        "(perf raw_syscalls:sys_enter" + (f"; {syscall_count.available()}" if syscall_count.available() else "")
        + ")",
        "",
    ]
    print(table(rows, header))
    if counters is not None:
        dirs = counters["dirs_redirected"] + counters["dirs_tcp_early"] + counters["dirs_tcp_remote"]
        print(f"\n{args.accel} rows: {counters['dirs_redirected']:,} of {dirs:,} directions redirected from their "
              f"first byte, {counters['msgs_redirected']:,} messages / {counters['bytes_redirected'] / GiB:.2f} GiB "
              f"redirected" + "".join(f"; {why}" for why in accel_reasons(
                  {ACCEL_COUNTER_COLUMNS[k]: v for k, v in counters.items() if k in ACCEL_COUNTER_COLUMNS})))
    for n, why in refused.items():
        print(f"{n}+{args.accel}: not run: {why}")
    return 0 if all(not r.error and not r.failed_runs for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
