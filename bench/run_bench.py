#!/usr/bin/env python3
"""Benchmark of the orchestration's overhead: a warm `invoke run` against its clients' time (not a test).

    python3 bench/run_bench.py [--scenario loopback-100mib] [--reps 3] [--against REV]

Runs the scenario --reps times with `invoke run` as a user does (a subprocess, after one unmeasured
run that builds the programs into the cache, so every measured run is warm) and prints, per run and as medians: the whole command's wall time, the summed wall time of
its clients (samples.csv wall_s), their ratio (the orchestration's cost is everything above 1.0),
and where the rest went:

- start: from the command's start to the first sample (interpreter, invoke, scenario, preflight,
  hosts prepared: build cache checked, facts gathered), up to the manifest's started_at;
- sampling: the run itself (manifest duration_s), and its overhead beyond the clients' time
  (starting, waiting for and stopping the programs, writing each sample);
- report: from the manifest's finished_at to the command's exit (statistics, charts, HTML, table).

With --against REV the same runs are made, interleaved, from a checkout of REV (a temporary git
worktree, removed afterwards), so old and new print side by side. The environment is passed on
as it is (invoke itself never writes bytecode for the modules it loads unless given --write-pyc).
Results and reports go to a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("wall_s", "clients_s", "ratio", "start_s", "run_s", "run_over_s", "report_s")


def epoch(iso: str) -> float:
    """Seconds since the epoch of an ISO 8601 UTC time as the manifest writes it (…Z)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def one_run(tree: Path, scenario: str, out: Path) -> dict[str, float]:
    """Run the scenario from `tree` once; its timings (seconds)."""
    results = out / "results"
    before = set(results.iterdir()) if results.exists() else set()
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    t0_wall, t0 = time.time(), time.monotonic()
    r = subprocess.run([sys.executable, "-m", "invoke", "run", "--scenario", scenario, "--results-dir", str(results),
                        "--reports-dir", str(out / "reports"), "--no-provision"], cwd=tree, env=env,
                       capture_output=True, text=True)
    wall = time.monotonic() - t0
    if r.returncode != 0:
        raise SystemExit(f"invoke run failed in {tree}:\n{r.stderr[-2000:]}")
    (run_dir,) = set(results.iterdir()) - before
    manifest = json.loads((run_dir / "manifest.json").read_text())
    with open(run_dir / "samples.csv", newline="") as f:
        clients = sum(float(row["wall_s"] or 0) for row in csv.DictReader(f))
    run_s = float(manifest["duration_s"])
    start = epoch(manifest["started_at"]) - t0_wall
    return {"wall_s": wall, "clients_s": clients, "ratio": wall / clients, "start_s": start, "run_s": run_s,
            "run_over_s": run_s - clients, "report_s": t0_wall + wall - epoch(manifest["finished_at"])}


def line(name: str, r: dict[str, float]) -> str:
    return (f"{name:<12} {r['wall_s']:6.2f}s {r['clients_s']:8.2f}s {r['ratio']:6.2f}x {r['start_s']:7.2f}s "
            f"{r['run_s']:7.2f}s {r['run_over_s']:+8.2f}s {r['report_s']:7.2f}s")


HEADER = f"{'tree':<12} {'wall':>7} {'clients':>9} {'ratio':>7} {'start':>8} {'run':>8} {'run-cl.':>9} {'report':>8}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenario", default="loopback-100mib")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--against", help="a git revision to measure side by side (e.g. HEAD~3)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="sb-run-bench-") as tmp:
        trees = {"this tree": REPO}
        if args.against:
            old = Path(tmp) / "against"
            subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(old), args.against],
                           check=True, capture_output=True)
            trees[args.against] = old
        try:
            rows: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
            for tree in trees.values():  # warm-up: builds into the cache, fills the page cache
                one_run(tree, args.scenario, Path(tmp) / "warm")
            print(HEADER, flush=True)
            for i in range(args.reps):
                order = list(trees.items())
                for k in range(len(order)):
                    # Interleaved, and the order alternates: drift on the machine hits both alike.
                    name, tree = order[(k + i) % len(order)]
                    rows[name].append(one_run(tree, args.scenario, Path(tmp) / f"out-{i}-{k}"))
                    print(line(name, rows[name][-1]) + f"  (run {i + 1})", flush=True)
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees[args.against])],
                               capture_output=True)
    print(f"\nmedians of {args.reps} warm runs of {args.scenario}: ratio = whole `invoke run` / summed client "
          f"wall time (target < 1.5x); start = to the first sample; run-cl. = the run's time beyond its "
          f"clients'; report = after the last sample")
    print(HEADER)
    for name, rs in rows.items():
        print(line(name, {k: statistics.median(r[k] for r in rs) for k in COLUMNS}))


if __name__ == "__main__":
    main()
