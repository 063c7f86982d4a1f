#!/usr/bin/env python3
"""Benchmark of the load client itself (not a test): does sb-client add anything a minimal blocking
client does not? All against the same naive echo server on loopback, side by side in one run.

    python3 bench/client_bench.py [--reps 5] [--round-trips 20000] [--stream-bytes 1073741824] [--json]

Builds the programs (make) and bench/blocking_client.c (the yardstick: one connection, blocking write
and read, memcmp of every echo; its stream mode reads in one thread while another writes), starts one
sb-echo-naive, then interleaves within each repetition:

- 64-byte ping-pong, one connection: the blocking client, sb-client in its default I/O (blocking for a
  thread that owns one ping-pong connection), sb-client --io epoll and --io busy-poll: p50 and p99 of
  the round trip (medians over the repetitions); then the blocking client and sb-client again, each
  pinned to CPU 1 against a second naive server pinned to CPU 0 (with 2 CPUs or more): unpinned, each
  run draws where the scheduler puts client and server (same CPU or not, which moves a round trip
  by more than the clients differ), pinned, every run is the same draw;
- a 1 GiB stream, one connection: the blocking client, sb-client (epoll, one thread) and sb-client
  --io split (a writing and a reading thread, like the blocking client): goodput, and the client's
  CPU seconds per GiB;
- sb-client with 1 and 2 threads over 2 and 16 connections, 1 GiB in all: goodput and client CPU/GiB.

Targets (issue 10): ping-pong p50 within 5 % of the blocking client, stream goodput at least the
blocking client's. The machine is shared and noisy: compare the ratios inside one run, never figures
across runs. Last, memory per connection: sb-client's peak RSS with 10,000 ping-pong connections
against one, and the naive server's peak RSS growth (user space only: socket buffers are kernel memory);
then C100K (skip with --no-c100k): 100,000 connections held open at once (sb-client --procs 8 --hold 1
against sb-echo-naive --workers 8 --processes), the kernel's memory per connection at the peak (Slab of
/proc/meminfo, TCP pages of /proc/net/sockstat; both ends of each loopback connection) and the server's
worker processes' peak RSS per connection.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import resource
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
GiB = 1 << 30
PINNED = ", pinned"


def build(build_dir: Path) -> Path:
    """make into build_dir (under the tests' lock) and cc the blocking client; its path."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with open(build_dir / ".make.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        subprocess.run(["make", "-k", "-C", str(REPO), f"BUILD={build_dir}"], check=True,
                       stdout=subprocess.DEVNULL)
    out = build_dir / "bench-blocking-client"
    subprocess.run(["cc", "-O2", "-Wall", "-Wextra", "-Werror", "-pthread", str(REPO / "bench" / "blocking_client.c"),
                    "-o", str(out)], check=True)
    return out


def run_json(argv: list[str]) -> dict:
    """Run a client to completion and return its JSON line (exit on failure)."""
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    if proc.returncode != 0:
        raise SystemExit(f"{argv[0]} failed ({proc.returncode}): {proc.stderr.strip()}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


class CpuMeter:
    """CPU seconds of the children, as deltas between runs (RUSAGE_CHILDREN is cumulative)."""

    def __init__(self) -> None:
        self.last = self.now()

    @staticmethod
    def now() -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return ru.ru_utime + ru.ru_stime

    def delta(self) -> float:
        now = self.now()
        d, self.last = now - self.last, now
        return d


def bench(reps: int, round_trips: int, stream_bytes: int, no_c100k: bool = False) -> dict:
    build_dir = REPO / "build"
    blocking = str(build(build_dir))
    client = str(build_dir / "sb-client")
    server = subprocess.Popen([str(build_dir / "sb-echo-naive")], stdout=subprocess.PIPE, text=True)
    pinned = None
    try:
        if (os.cpu_count() or 1) >= 2:
            pinned = subprocess.Popen(["taskset", "-c", "0", str(build_dir / "sb-echo-naive")],
                                      stdout=subprocess.PIPE, text=True)
        ready = json.loads(server.stdout.readline())
        addr, port = ready["addr"], ready["port"]
        connect = f"{addr}:{port}"
        meter = CpuMeter()
        pp: dict[str, list[tuple[float, float]]] = {}
        st: dict[str, list[tuple[float, float]]] = {}

        def sb(*args: str) -> dict:
            r = run_json([client, "--connect", connect, *args])
            assert r["ok"], r
            return r

        pingpongs = {
            "blocking client": lambda: run_json([blocking, "pingpong", addr, str(port), "64", str(round_trips)]),
            "sb-client (auto: blocking)": lambda: sb("--workload", "pingpong", "--round-trips", str(round_trips)),
            "sb-client --io epoll": lambda: sb("--workload", "pingpong", "--round-trips", str(round_trips),
                                               "--io", "epoll"),
            "sb-client --io busy-poll": lambda: sb("--workload", "pingpong", "--round-trips", str(round_trips),
                                                   "--io", "busy-poll"),
        }
        if pinned is not None:
            pport = str(json.loads(pinned.stdout.readline())["port"])
            pingpongs[f"blocking client{PINNED}"] = lambda: run_json(
                ["taskset", "-c", "1", blocking, "pingpong", addr, pport, "64", str(round_trips)])
            pingpongs[f"sb-client (auto){PINNED}"] = lambda: run_json(
                ["taskset", "-c", "1", client, "--connect", f"{addr}:{pport}", "--workload", "pingpong",
                 "--round-trips", str(round_trips)])
        streams = {
            "blocking client (2 threads)": lambda: run_json([blocking, "stream", addr, str(port), str(stream_bytes)]),
            "sb-client 1 thread, 1 conn": lambda: sb("--workload", "stream", "--bytes", str(stream_bytes)),
            "sb-client --io split, 1 conn": lambda: sb("--workload", "stream", "--bytes", str(stream_bytes),
                                                       "--io", "split"),
        }
        for threads in (1, 2):
            for conns in (2, 16):
                streams[f"sb-client {threads} thread(s), {conns} conns"] = (
                    lambda t=threads, c=conns: sb("--workload", "stream", "--conns", str(c), "--threads", str(t),
                                                  "--bytes", str(stream_bytes // c)))
        for rep in range(reps):
            order = list(pingpongs.items())
            if rep % 2:
                order.reverse()  # A B C D, D C B A, ...: drift hits every mode alike
            for name, fn in order:
                meter.delta()
                r = fn()
                lat = r.get("latency_ns") or {}
                p50, p99 = (lat["p50"], lat["p99"]) if lat else (r["p50_ns"], r["p99_ns"])
                pp.setdefault(name, []).append((p50 / 1e3, p99 / 1e3))
            order = list(streams.items())
            if rep % 2:
                order.reverse()
            for name, fn in order:
                meter.delta()
                r = fn()
                cpu = meter.delta()
                st.setdefault(name, []).append((r["goodput_bytes_per_s"] / GiB, cpu / (stream_bytes / GiB)))
            print(f"  repetition {rep + 1}/{reps} done", file=sys.stderr)
        memory = memory_per_connection(client, str(build_dir / "sb-echo-naive"))
        c100k = None if no_c100k else c100k_memory(client, str(build_dir / "sb-echo-naive"))
    finally:
        for srv in (server, pinned):
            if srv is not None:
                srv.terminate()
                srv.wait(timeout=30)
    return {"pingpong": pp, "stream": st, "memory": memory, "c100k": c100k, "reps": reps, "round_trips": round_trips,
            "stream_bytes": stream_bytes}


def _peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def _pingpong(client: str, port: int, conns: int, timed: bool = False) -> int:
    """sb-client with `conns` ping-pong connections (3 round trips each); with timed, its peak RSS in KiB."""
    argv = [client, "--connect", f"127.0.0.1:{port}", "--workload", "pingpong", "--conns", str(conns),
            "--round-trips", "3"]
    if timed:
        argv = ["/usr/bin/time", "-f", "%M", *argv]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0 and json.loads(proc.stdout)["ok"], proc.stderr
    return int(proc.stderr.strip().splitlines()[-1]) if timed else 0


def memory_per_connection(client: str, naive: str, conns: int = 10_000) -> dict:
    """Bytes of peak RSS per connection: sb-echo-naive's peak RSS growth while serving `conns` ping-pong
    connections (its default 128 KiB buffer, and 4 KiB), and sb-client's peak RSS with `conns`
    connections against one."""
    out: dict = {"conns": conns}
    for label, args in (("sb-echo-naive (buf 128 KiB)", []), ("sb-echo-naive (buf 4 KiB)", ["--buf", "4096"])):
        srv = subprocess.Popen([naive, *args], stdout=subprocess.PIPE, text=True)
        try:
            port = json.loads(srv.stdout.readline())["port"]
            before = _peak_rss_kib(srv.pid)
            _pingpong(client, port, conns)
            out[label] = (_peak_rss_kib(srv.pid) - before) * 1024 / conns
            if label.endswith("4 KiB)"):
                one, many = _pingpong(client, port, 1, True), _pingpong(client, port, conns, True)
                out["sb-client"] = (many - one) * 1024 / (conns - 1)
        finally:
            srv.terminate()
            srv.wait(timeout=30)
    return out


def _meminfo_kib(key: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _tcp_mem_pages() -> int:
    for line in Path("/proc/net/sockstat").read_text().splitlines():
        if line.startswith("TCP:"):
            words = line.split()
            return int(words[words.index("mem") + 1])
    return 0


def c100k_memory(client: str, naive: str, conns: int = 100_000, procs: int = 8) -> dict:
    """Kernel and server memory per connection with `conns` connections open at once (sampled every
    50 ms while the client runs; the peak against the level before)."""
    srv = subprocess.Popen([naive, "--buf", "4096", "--workers", str(procs), "--processes"], stdout=subprocess.PIPE,
                           text=True)
    try:
        port = json.loads(srv.stdout.readline())["port"]
        workers = [int(p) for p in Path(f"/proc/{srv.pid}/task/{srv.pid}/children").read_text().split()]
        slab0, tcp0 = _meminfo_kib("Slab"), _tcp_mem_pages()
        slab, tcp = slab0, tcp0
        c = subprocess.Popen([client, "--connect", f"127.0.0.1:{port}", "--workload", "pingpong", "--conns", str(conns),
                              "--round-trips", "2", "--threads", str(procs), "--procs", str(procs), "--hold", "1",
                              "--source-addrs", "8", "--stall", "60", "--timeout", "300"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        while c.poll() is None:
            slab, tcp = max(slab, _meminfo_kib("Slab")), max(tcp, _tcp_mem_pages())
            try:
                c.wait(timeout=0.05)
            except subprocess.TimeoutExpired:
                pass
        out, err = c.communicate()
        r = json.loads(out)
        assert c.returncode == 0 and r["ok"] and r["peak_open"] == conns, err
        server_kib = sum(_peak_rss_kib(w) for w in workers)
        return {"conns": conns, "wall_s": r["wall_s"], "kernel slab": (slab - slab0) * 1024 / conns,
                "kernel TCP pages": (tcp - tcp0) * os.sysconf("SC_PAGE_SIZE") / conns,
                f"sb-echo-naive, {procs} worker processes (RSS)": server_kib * 1024 / conns}
    finally:
        srv.terminate()
        srv.wait(timeout=60)


def table(res: dict) -> str:
    lines = []
    pp, st = res["pingpong"], res["stream"]
    base_pp = {pin: statistics.median(p for p, _ in pp[f"blocking client{pin}"])
               for pin in ("", PINNED) if f"blocking client{pin}" in pp}
    lines.append(f"64 B ping-pong, 1 connection, {res['round_trips']:,} round trips x {res['reps']} "
                 f"(medians over repetitions)")
    lines.append(f"  {'client':34} {'p50 us':>8} {'p99 us':>8} {'p50 vs blocking':>16}")
    for name, vals in pp.items():
        p50 = statistics.median(v[0] for v in vals)
        p99 = statistics.median(v[1] for v in vals)
        base = base_pp[PINNED if name.endswith(PINNED) else ""]
        lines.append(f"  {name:34} {p50:8.1f} {p99:8.1f} {p50 / base:15.2f}x")
    if PINNED in base_pp:
        lines.append(f"  ({PINNED.strip(', ')}: server on CPU 0, client on CPU 1; compared with the pinned blocking client)")
    base_st = statistics.median(g for g, _ in st["blocking client (2 threads)"])
    lines.append("")
    lines.append(f"Stream, {res['stream_bytes'] / GiB:g} GiB in all x {res['reps']}")
    lines.append(f"  {'client':34} {'GiB/s':>8} {'CPU s/GiB':>10} {'vs blocking':>12}")
    for name, vals in st.items():
        g = statistics.median(v[0] for v in vals)
        c = statistics.median(v[1] for v in vals)
        lines.append(f"  {name:34} {g:8.2f} {c:10.2f} {g / base_st:11.2f}x")
    m = res["memory"]
    lines.append("")
    lines.append(f"Memory per connection (peak RSS, user space; {m['conns']:,} ping-pong connections)")
    for k, v in m.items():
        if k != "conns":
            lines.append(f"  {k:34} {v / 1024:8.1f} KiB")
    c = res.get("c100k")
    if c:
        lines.append("")
        lines.append(f"C100K: {c['conns']:,} ping-pong connections open at once (sampled peak, {c['wall_s']:.0f} s)")
        for k, v in c.items():
            if k not in ("conns", "wall_s"):
                lines.append(f"  {k:44} {v / 1024:8.1f} KiB per connection")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--round-trips", type=int, default=20_000)
    ap.add_argument("--stream-bytes", type=int, default=GiB)
    ap.add_argument("--json", action="store_true", help="print the raw figures as JSON too")
    ap.add_argument("--no-c100k", action="store_true", help="skip the 100,000-connection memory figures")
    args = ap.parse_args()
    print(f"host {os.uname().nodename}: {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}", file=sys.stderr)
    res = bench(args.reps, args.round_trips, args.stream_bytes, args.no_c100k)
    print(table(res))
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
