#!/usr/bin/env python3
"""Benchmark of the orchestration's overhead: a warm `invoke run` against its clients' time (not a test).

    python3 bench/run_bench.py [--scenario loopback-100mib] [--reps 3] [--against REV]

Runs the scenario --reps times with `invoke run` as a user does (a subprocess; the programs are
built once before, so every run is warm) and prints, per run and as medians: the whole command's
wall time, the run's own duration from its manifest (first sample to last), the summed wall time
of its clients (samples.csv wall_s), and the ratio of the whole command to the clients' time: the
orchestration's cost is everything above 1.0. With --against REV the same runs are made, interleaved,
from a checkout of REV (a temporary git worktree, removed afterwards), so old and new print side by
side. Results and reports go to a temporary directory that is removed at the end.
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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def one_run(tree: Path, scenario: str, out: Path) -> dict[str, float]:
    """Run the scenario from `tree` once; its timings (seconds)."""
    results = out / "results"
    before = set(results.iterdir()) if results.exists() else set()
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    t0 = time.monotonic()
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
    return {"wall_s": wall, "run_s": float(manifest["duration_s"]), "clients_s": clients, "ratio": wall / clients}


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
            for tree in trees.values():  # warm-up: builds into the cache, loads the page cache
                one_run(tree, args.scenario, Path(tmp) / "warm")
            for i in range(args.reps):
                for name, tree in trees.items():  # interleaved: drift on the machine hits both alike
                    rows[name].append(one_run(tree, args.scenario, Path(tmp) / name.replace(" ", "-")))
                    r = rows[name][-1]
                    print(f"run {i + 1} {name:<12} wall {r['wall_s']:5.2f} s  run {r['run_s']:5.2f} s  "
                          f"clients {r['clients_s']:5.2f} s  ratio {r['ratio']:4.2f}x", flush=True)
        finally:
            if args.against:
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(trees[args.against])],
                               capture_output=True)
    print(f"\nmedians of {args.reps} warm runs of {args.scenario} "
          f"(ratio: whole `invoke run` / summed client wall time; target < 1.5x)")
    print(f"{'tree':<12} {'wall':>8} {'run':>8} {'clients':>8} {'outside run':>12} {'ratio':>7}")
    for name, rs in rows.items():
        med = {k: statistics.median(r[k] for r in rs) for k in rs[0]}
        print(f"{name:<12} {med['wall_s']:7.2f}s {med['run_s']:7.2f}s {med['clients_s']:7.2f}s "
              f"{med['wall_s'] - med['run_s']:11.2f}s {med['ratio']:6.2f}x")


if __name__ == "__main__":
    main()
