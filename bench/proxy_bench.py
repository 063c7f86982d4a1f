#!/usr/bin/env python3
"""Benchmark of the reverse proxies and their peers on loopback, side by side in one run (not a test).

    python3 bench/proxy_bench.py [--targets direct,proxy-naive,...] [--accel sk_msg] [--reps 5] [--stream 100MiB] [--json]

Builds the programs (make), starts one sb-echo-naive backend, every proxy in front of it (the naive,
splice, SOCKMAP and io_uring proxies, the last in each of its modes: proxy-uring (recv-send),
proxy-uring-splice and proxy-uring-send-zc; NGINX, and HAProxy without splice, with splice-auto and
with forced splice; NGINX and HAProxy run from the configs src/splicebench/peers.py generates), then
interleaves the targets within each repetition so that drift on the machine hits them alike.
`direct` is the client talking to the backend without a proxy.

Per target: the median goodput of --reps single-connection streams of --stream bytes, its ratio to
direct, to the naive proxy and to each peer, the median p50/p99 of --reps 64-byte ping-pong runs
(2,000 round trips), the median connections per second of --reps crr runs (connect, 64-byte request,
response, close; 4 at a time, through the proxy to the backend), the median p50/p99 of --reps 64-byte
ping-pong runs made while --bulk-conns streams run through the same proxy (latency under load; the
streams are stopped with SIGINT and verify what they sent), and CPU seconds per GiB forwarded over the
stream runs: the proxy process
(NGINX: master and worker; direct: the backend) and the whole host from /proc/stat deltas
(user + nice + system + irq + softirq: SOCKMAP redirects run in softirq, not in the proxy). Host CPU
includes the client and the backend; the header says how busy the client was. System calls per
GiB: the proxy's (every process and thread of it; direct: the backend's), counted by perf
(raw_syscalls:sys_enter, bench/syscall_count.py) over --reps extra stream runs of their own, so that
no other figure carries the tracing cost.

With --accel sk_msg (the default; --accel none turns it off) every target that can run under SOCKMAP
acceleration (not the splicing or SOCKMAP proxies, nor proxy-uring-splice and proxy-uring-send-zc:
registry.py says why) gets a second row, TARGET+sk_msg: a second backend and a second instance of the
proxy, started like their clients inside the cgroup of one sb-accel loader (bpf/accel.c), measured
interleaved with the plain rows. The loader's counters (directions redirected and on TCP) are printed
below the tables.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import syscall_count  # noqa: E402
from splicebench.programs import accel, peers  # noqa: E402
from splicebench.registry import ACCEL_NONE, SERVERS  # noqa: E402
from splicebench.results.metrics import ACCEL_COUNTER_COLUMNS, accel_reasons  # noqa: E402
from splicebench.hosts.local import LocalHost  # noqa: E402
from splicebench.hosts.base import Proc  # noqa: E402
from splicebench.units import parse_size  # noqa: E402

GiB = 1 << 30
TICK = os.sysconf("SC_CLK_TCK")
HOST_BUSY_FIELDS = (0, 1, 2, 5, 6)  # user nice system irq softirq (after the "cpu" label)
OURS = ("proxy-naive", "proxy-splice", "proxy-sockmap", "proxy-uring", "proxy-uring-splice", "proxy-uring-send-zc")
# A proxy as the benchmark names it: its program (build/sb-X) and arguments.
MODES = {"proxy-uring-splice": ("proxy-uring", ["--mode", "splice"]),
         "proxy-uring-send-zc": ("proxy-uring", ["--mode", "send-zc"])}
TARGETS = ("direct", *OURS, *peers.VARIANTS)
PAYLOAD_MAX = 1 << 50  # sb-client's largest --bytes: the bulk streams run until SIGINT
LOAD_RAMP_S = 0.3  # bulk streams running before the loaded ping-pong starts


def accel_refusal(target: str) -> str | None:
    """Why proxy `target` (a MODES name included) cannot run under SOCKMAP acceleration (registry), or None."""
    program, margs = MODES.get(target, (target, []))
    kind = SERVERS[program]
    flags = dict(zip(margs[::2], margs[1::2]))
    return kind.accel_conflict({key: flags[o.flag] for key, o in kind.options.items() if o.flag in flags})


def build(build_dir: Path) -> None:
    """make -k into build_dir, under the same lock the tests take (tests/progs.py)."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".make.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        proc = subprocess.run(["make", "-k", "-C", str(REPO), f"BUILD={build_dir}"],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        print(f"make failed (exit {proc.returncode}):\n" + "\n".join(proc.stdout.splitlines()[-15:]),
              file=sys.stderr)


def host_busy_s() -> float:
    """Busy CPU seconds of the whole host so far (all CPUs), softirq included."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return sum(int(fields[i]) for i in HOST_BUSY_FIELDS) / TICK


@dataclass
class Run:
    kind: str  # stream | pingpong | crr | loaded | syscalls (a stream run counting the proxy's system calls)
    ok: bool
    goodput: float | None = None  # bytes/s
    p50_us: float | None = None
    p99_us: float | None = None
    bytes: int = 0
    proxy_cpu_s: float = 0.0
    host_cpu_s: float = 0.0
    client_cpu_s: float = 0.0
    wall_s: float = 0.0
    error: str = ""
    syscalls: int | None = None
    conns_per_s: float | None = None


@dataclass
class Row:
    target: str
    stream_gib_s: float | None
    pingpong_p50_us: float | None
    pingpong_p99_us: float | None
    loaded_p50_us: float | None
    loaded_p99_us: float | None
    crr_conns_per_s: float | None
    proxy_cpu_s_per_gib: float | None
    host_cpu_s_per_gib: float | None
    syscalls_per_gib: float | None
    failures: int
    ratios: dict[str, float | None] = field(default_factory=dict)


def run_client(client: Path, port: int, proc: Proc, args: list[str], kind: str, cgroup: str | None = None) -> Run:
    workload = "stream" if kind == "syscalls" else kind
    argv = [str(client), "--connect", f"127.0.0.1:{port}", "--workload", workload, *args]
    with syscall_count.counting(syscall_count.with_descendants(proc.pid)) if kind == "syscalls" \
            else contextlib.nullcontext(syscall_count.Count()) as calls:
        cpu0, host0, t0 = sum(proc.cpu_times()), host_busy_s(), time.monotonic()
        p = subprocess.run(accel.in_cgroup(argv, cgroup) if cgroup else argv,
                           capture_output=True, text=True, timeout=600)
        wall = time.monotonic() - t0
        host1, cpu1 = host_busy_s(), sum(proc.cpu_times())
    try:
        r = json.loads(p.stdout)
    except ValueError:
        return Run(kind, False, error=f"no JSON from the client: {p.stderr.strip()[:200]}")
    lat = r.get("latency_ns") or {}
    return Run(kind, bool(r.get("ok")) and p.returncode == 0, r.get("goodput_bytes_per_s"),
               (lat.get("p50") or 0) / 1e3, (lat.get("p99") or 0) / 1e3, r.get("bytes_verified") or 0,
               cpu1 - cpu0, host1 - host0, (r.get("cpu_user_s") or 0) + (r.get("cpu_sys_s") or 0), wall,
               "" if r.get("ok") else str((r.get("errors") or [{}])[0]), syscalls=calls.value,
               conns_per_s=r["conns_ok"] / r["wall_s"] if kind == "crr" and r.get("wall_s") else None)


def run_loaded(client: Path, port: int, proc: Proc, args: list[str], bulk_conns: int,
               cgroup: str | None = None) -> Run:
    """A ping-pong run (`args`) while bulk_conns streams run through the same target (both inside
    cgroup when it is given); the streams, stopped with SIGINT, must verify what they sent."""
    argv = [str(client), "--connect", f"127.0.0.1:{port}", "--workload", "stream", "--conns", str(bulk_conns),
            "--bytes", str(PAYLOAD_MAX), "--seed", "2", "--timeout", "900"]
    bulk = subprocess.Popen(accel.in_cgroup(argv, cgroup) if cgroup else argv,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(LOAD_RAMP_S)
        r = run_client(client, port, proc, args, "pingpong", cgroup)
    finally:
        bulk.send_signal(signal.SIGINT)
        out, err = bulk.communicate(timeout=120)
    r.kind = "loaded"
    try:
        ok = json.loads(out).get("ok") is True and bulk.returncode == 0
    except ValueError:
        ok = False
    if not ok:
        r.ok, r.error = False, f"bulk streams: {err.strip()[:200]}"
    return r


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def summarize(target: str, runs: list[Run]) -> Row:
    streams = [r for r in runs if r.kind == "stream" and r.ok]
    pings = [r for r in runs if r.kind == "pingpong" and r.ok]
    counted = [r for r in runs if r.kind == "syscalls" and r.ok and r.syscalls is not None and r.bytes]
    loaded = [r for r in runs if r.kind == "loaded" and r.ok]
    gib = sum(r.bytes for r in streams) / GiB
    return Row(
        target,
        median([r.goodput / GiB for r in streams if r.goodput]),
        median([r.p50_us for r in pings if r.p50_us is not None]),
        median([r.p99_us for r in pings if r.p99_us is not None]),
        median([r.p50_us for r in loaded if r.p50_us is not None]),
        median([r.p99_us for r in loaded if r.p99_us is not None]),
        median([r.conns_per_s for r in runs if r.kind == "crr" and r.ok and r.conns_per_s]),
        sum(r.proxy_cpu_s for r in streams) / gib if gib else None,
        sum(r.host_cpu_s for r in streams) / gib if gib else None,
        median([r.syscalls / (r.bytes / GiB) for r in counted]),
        sum(1 for r in runs if not r.ok),
    )


def fmt(v: float | None, spec: str) -> str:
    return "n/a" if v is None else format(v, spec)


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(x) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w)  # noqa: E731
                                   for i, (c, w) in enumerate(zip(cells, widths)))
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


def on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--targets", default=",".join(TARGETS), help="comma-separated, default: all")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--stream", default="100MiB", help="bytes per stream run (default 100MiB)")
    ap.add_argument("--round-trips", type=int, default=2000)
    ap.add_argument("--transactions", type=int, default=3000, help="per crr run")
    ap.add_argument("--bulk-conns", type=int, default=4, help="bulk streams beside the loaded ping-pong")
    ap.add_argument("--accel", default="sk_msg", choices=("sk_msg", ACCEL_NONE),
                    help="add accelerated rows (default sk_msg) or not (none)")
    ap.add_argument("--json", action="store_true", help="print JSON instead of the tables")
    args = ap.parse_args()
    plain = [t for t in args.targets.split(",") if t]
    unknown = [t for t in plain if t not in TARGETS]
    if unknown:
        ap.error(f"unknown target(s) {', '.join(unknown)}; known: {', '.join(TARGETS)}")
    mode = args.accel
    refused = {} if mode == ACCEL_NONE else {t: accel_refusal(t) for t in plain if t != "direct" and accel_refusal(t)}
    targets = [x for t in plain for x in ([t] if mode == ACCEL_NONE or t in refused else [t, f"{t}+{mode}"])]
    cgroup: str | None = None
    stream_bytes = parse_size(args.stream)
    signal.signal(signal.SIGTERM, on_sigterm)

    build_dir = REPO / "build"
    build(build_dir)
    client = build_dir / "sb-client"
    host = LocalHost()
    load = Path("/proc/loadavg").read_text().split()[0]
    runs: dict[str, list[Run]] = {t: [] for t in targets}
    procs: dict[str, Proc] = {}
    ports: dict[str, int] = {}
    loader: Proc | None = None
    try:
        if len(targets) > len(plain):
            loader = host.start([str(build_dir / "sb-accel")])
            cgroup = loader.wait_json_event("ready", 15)["cgroup"]
        for t in targets:
            base, _, accelerated = t.partition("+")
            direct = f"direct+{accelerated}" if accelerated else "direct"

            def wrap(argv: list[str], accelerated: str = accelerated) -> list[str]:
                return accel.in_cgroup(argv, cgroup) if accelerated and cgroup else argv
            if direct not in procs:  # each mode has its own backend (the accelerated one in the cgroup)
                backend = host.start(wrap([str(build_dir / "sb-echo-naive")]))
                ports[direct] = backend.wait_json_event("ready", 15)["port"]
                procs[direct] = backend
            if base in OURS:
                program, margs = MODES.get(base, (base, []))
                p = host.start(wrap([str(build_dir / f"sb-{program}"), "--upstream", f"127.0.0.1:{ports[direct]}",
                                     *margs]))
                ports[t] = p.wait_json_event("ready", 15)["port"]
                procs[t] = p
            elif base in peers.VARIANTS:
                p = peers.start(base, host, listen_host="127.0.0.1", upstream_host="127.0.0.1",
                                upstream_port=ports[direct], wrap=wrap)
                ports[t] = p.ready["port"]
                procs[t] = p
        for rep in range(args.reps):
            for t in targets:
                ping = ["--msg-size", "64", "--round-trips", str(args.round_trips)]
                for kind, extra in (("stream", ["--bytes", str(stream_bytes)]), ("pingpong", ping),
                                    ("crr", ["--msg-size", "64", "--conns", "4", "--transactions",
                                             str(args.transactions)]), ("loaded", ping),
                                    ("syscalls", ["--bytes", str(stream_bytes)])):
                    cg = cgroup if "+" in t else None
                    r = run_loaded(client, ports[t], procs[t], extra, args.bulk_conns, cg) if kind == "loaded" \
                        else run_client(client, ports[t], procs[t], extra, kind, cg)
                    runs[t].append(r)
                    print(f"rep {rep + 1}/{args.reps} {t:20} {kind:8} "
                          + (f"{(r.goodput or 0) / GiB:.3f} GiB/s" if kind in ("stream", "syscalls") else
                             f"{r.conns_per_s or 0:,.0f} conn/s" if kind == "crr" else f"p99 {r.p99_us:.1f} us")
                          + ("" if r.ok else f"  FAILED {r.error}"), file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for p in procs.values():
            p.signal(signal.SIGTERM)
        for p in procs.values():
            if p.wait(5) is None:
                p.kill()
        counters = None
        if loader is not None:  # after the programs in its cgroup
            loader.signal(signal.SIGTERM)
            loader.wait(15)
            lines = [json.loads(x) for x in loader.read_stdout_lines() if x.startswith("{")]
            counters = next((x.get("counters") for x in lines if x.get("event") == "summary"), None)
        host.close()

    rows = [summarize(t, runs[t]) for t in targets]
    refs = [t for t in ("direct", "proxy-naive", *peers.VARIANTS) if t in targets]
    pairs = [(t, f"{t}+{mode}") for t in plain if f"{t}+{mode}" in targets]
    by = {r.target: r for r in rows}
    for r in rows:
        for ref in refs:
            a, b = r.stream_gib_s, by[ref].stream_gib_s
            r.ratios[ref] = a / b if a is not None and b else None
    client_busy = [r.client_cpu_s / r.wall_s for rs in runs.values() for r in rs if r.kind == "stream" and r.wall_s]
    if args.json:
        print(json.dumps({"load_before": load, "reps": args.reps, "stream_bytes": stream_bytes,
                          "rows": [asdict(r) for r in rows], "accel_counters": counters,
                          "accel_refused": refused}, indent=2))
        return 0 if all(r.failures == 0 for r in rows) else 1
    print(f"\n{args.reps} x {args.stream} stream, {args.reps} x {args.round_trips} x 64 B ping-pong alone and "
          f"beside {args.bulk_conns} bulk streams, {args.reps} x {args.transactions} crr transactions; one "
          f"connection, backend sb-echo-naive; load average before: {load}; client busy "
          f"{100 * (median(client_busy) or 0):.0f} % of a core during streams (median)")
    print(table([[r.target, fmt(r.stream_gib_s, ".3f"), fmt(r.pingpong_p50_us, ".1f"), fmt(r.pingpong_p99_us, ".1f"),
                  fmt(r.loaded_p50_us, ".1f"), fmt(r.loaded_p99_us, ".1f"), fmt(r.crr_conns_per_s, ",.0f"),
                  fmt(r.proxy_cpu_s_per_gib, ".3f"), fmt(r.host_cpu_s_per_gib, ".3f"),
                  "n/a" if r.syscalls_per_gib is None else f"{r.syscalls_per_gib:,.0f}", str(r.failures)]
                 for r in rows],
                ["target", "GiB/s", "p50 us", "p99 us", "loaded p50 us", "loaded p99 us", "crr conn/s",
                 "proxy CPU s/GiB", "host CPU s/GiB", "syscalls/GiB", "failed"]))
    if syscall_count.available():
        print(f"syscalls/GiB: {syscall_count.available()}")
    print("\nstream throughput ratios (row / column):")
    print(table([[r.target, *(fmt(r.ratios[ref], ".2f") for ref in refs)] for r in rows],
                ["target", *(f"vs {ref}" for ref in refs)]))
    if pairs:
        print(f"\nwith / without {mode} (row+{mode} / row): stream GiB/s, p50, p99, host CPU per GiB:")

        def ratio(a: float | None, b: float | None) -> str:
            return fmt(a / b if a is not None and b else None, ".2f")
        print(table([[t, ratio(by[a].stream_gib_s, by[t].stream_gib_s), ratio(by[a].pingpong_p50_us, by[t].pingpong_p50_us),
                      ratio(by[a].pingpong_p99_us, by[t].pingpong_p99_us),
                      ratio(by[a].host_cpu_s_per_gib, by[t].host_cpu_s_per_gib)] for t, a in pairs],
                    ["target", "GiB/s", "p50", "p99", "host CPU/GiB"]))
    if counters is not None:
        dirs = counters["dirs_redirected"] + counters["dirs_tcp_early"] + counters["dirs_tcp_remote"]
        print(f"\n{mode} rows: {counters['dirs_redirected']:,} of {dirs:,} directions redirected from their first "
              f"byte, {counters['msgs_redirected']:,} messages / {counters['bytes_redirected'] / GiB:.2f} GiB redirected"
              + "".join(f"; {why}" for why in accel_reasons(
                  {ACCEL_COUNTER_COLUMNS[k]: v for k, v in counters.items() if k in ACCEL_COUNTER_COLUMNS})))
    for t, why in refused.items():
        print(f"{t}+{mode}: not run: {why}")
    return 0 if all(r.failures == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
