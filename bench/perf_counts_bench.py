#!/usr/bin/env python3
"""The CPU sampler's perf counts against perf stat's, on the same transfers (not a test).

    python3 bench/perf_counts_bench.py [--servers naive,splice,uring] [--bytes 1GiB] [--reps 3]

Per server and repetition: the echo server, sb-cpustat watching it, `perf stat -p` on the server's
processes (bench/syscall_count.py, attached before the transfer) and `perf stat -a`, then one
sb-client stream. Printed side by side, per GiB verified: the server's system calls and context
switches as the sampler counts them over the client's marks (with the range its readings leave)
and as perf stat counts them from its attach to its SIGINT (a wider window; the server is idle
outside the transfer, so the two should agree), and the host's system calls (the sampler's over the
transfer, its own left out; perf stat -a over its wider window, with perf's and the sampler's own
calls and whatever else ran).
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

import syscall_count  # noqa: E402
from programs_bench import MODES, build  # noqa: E402
from splicebench.results import cpu  # noqa: E402
from splicebench.units import parse_size  # noqa: E402

EVENTS = "raw_syscalls:sys_enter,context-switches,cpu-migrations"


def perf_stat_a() -> subprocess.Popen:
    return subprocess.Popen(["perf", "stat", "-x", ",", "-e", EVENTS, "-a"], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def stopped(p: subprocess.Popen) -> dict[str, int]:
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=30)
    out = {}
    for line in err.splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0].isdigit():
            out[parts[2]] = int(parts[0])
    return out


def one(build_dir: Path, server: str, nbytes: int) -> dict[str, float]:
    prog, args = MODES.get(server, (server, []))
    srv = subprocess.Popen([str(build_dir / f"sb-echo-{prog}"), "--listen", "127.0.0.1:0", *args],
                           stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        ready = json.loads(srv.stdout.readline())
        sampler = subprocess.Popen([str(build_dir / "sb-cpustat"), "--pid", str(ready["pid"])],
                                   stdout=subprocess.PIPE, text=True, start_new_session=True)
        json.loads(sampler.stdout.readline())
        host = perf_stat_a()
        with syscall_count.counting([ready["pid"]]) as n:
            out = subprocess.run([str(build_dir / "sb-client"), "--connect", f"127.0.0.1:{ready['port']}",
                                  "--workload", "stream", "--bytes", str(nbytes)], capture_output=True, text=True,
                                 timeout=600, check=True)
        host_counts = stopped(host)
        sampler.send_signal(signal.SIGTERM)
        text, _ = sampler.communicate(timeout=30)
    finally:
        srv.send_signal(signal.SIGTERM)
        srv.communicate(timeout=30)
    client = json.loads(out.stdout)
    counts, notes = cpu.perf_counts(cpu.parse_cpustat(text), *cpu.marks([client]))
    if notes:
        print(f"{server}: {'; '.join(notes)}", file=sys.stderr)
    gib = client["bytes_verified"] / (1 << 30)
    s, h = counts["server"], counts["host"]
    return {"sampler_srv": s["raw_syscalls:sys_enter"].value / gib, "sampler_srv_unc": s["raw_syscalls:sys_enter"].unc / gib,
            "perf_srv": (n.value or 0) / gib, "sampler_ctxsw": s["context-switches"].value / gib,
            "sampler_host": h["raw_syscalls:sys_enter"].value / gib,
            "perf_host": host_counts.get("raw_syscalls:sys_enter", 0) / gib,
            "perf_host_ctxsw": host_counts.get("context-switches", 0) / gib,
            "sampler_host_ctxsw": h["context-switches"].value / gib,
            "wall_s": client["wall_s"]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--servers", default="naive,splice,uring")
    ap.add_argument("--bytes", default="1GiB")
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    if why := syscall_count.available():
        print(why, file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="splicebench-perfbench-") as d:
        build_dir = Path(d)
        build(build_dir)
        nbytes = parse_size(a.bytes)
        cols = ["sampler_srv", "sampler_srv_unc", "perf_srv", "sampler_ctxsw", "sampler_host", "perf_host",
                "sampler_host_ctxsw", "perf_host_ctxsw", "wall_s"]
        print(f"per GiB, medians of {a.reps}; server = the echo server's threads, host = every CPU")
        print(f"{'server':14}" + "".join(f"{c:>19}" for c in cols))
        for server in a.servers.split(","):
            runs = [one(build_dir, server, nbytes) for _ in range(a.reps)]
            med = {c: statistics.median(r[c] for r in runs) for c in cols}
            print(f"{server:14}" + "".join(f"{med[c]:>19.3f}" if c == "wall_s" else f"{med[c]:>19,.0f}" for c in cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
