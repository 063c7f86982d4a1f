#!/usr/bin/env python3
"""Benchmark of the orchestration's overhead: a warm `invoke run` against its clients' time (not a test).

    python3 bench/run_bench.py [--scenario loopback-100mib] [--reps 3] [--against REV]

Runs the scenario --reps times with `invoke run` as a user does (a subprocess, after one unmeasured
run that builds the programs into the cache, so every measured run is warm) and prints, per run and
as medians: the whole command's wall time, the summed wall time of its clients (samples.csv wall_s),
their ratio (the orchestration's cost is everything above 1.0), and where the rest went, side by side
(of-warm: the part of the clients' time taken by the warm-up round's clients, which may share the
CPU with the report's libraries loading):

- start: from the command's start to the first sample (manifest started_at), split by the run's own
  timestamps (manifest phases) into boot (interpreter, invoke, the CLI's imports, up to
  commands.run), prep (validation, preflight, hosts prepared: build cache checked, facts gathered)
  and import (waiting for the report's libraries, which load in the background during prep and,
  where the tree does so, the warm-up round: then the wait is before the first measured sample,
  inside run, and left out of its gaps);
- run: the samples (manifest duration_s); in-smp: the samples' time beyond their clients' (each
  sample's duration_s minus its client's wall_s: starting the server and the CPU sampler, waiting
  for them, starting the client, stopping them); gaps: the time between samples (writing each
  sample's files, progress); per-sample: both per sample, in ms;
- report: from the manifest's finished_at to the command's exit, split at the report file's
  modification time into render (statistics, charts, HTML) and exit (table, interpreter exit).

The machine's other load moves every figure; compare the columns of runs made side by side. With
--against REV the same runs are made, interleaved, from a checkout of REV (a temporary git worktree,
removed afterwards), so old and new print side by side (a column its run did not record shows "-").
The environment is passed on as it is (invoke itself never writes bytecode for the modules it loads
unless given --write-pyc). Results and reports go to a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# (key, header, format of a value); a value a run did not record is NaN and prints as "-".
COLUMNS = (("wall_s", "wall", "{:6.2f}s"), ("clients_s", "clients", "{:6.2f}s"), ("warmup_s", "of-warm", "{:5.2f}s"),
           ("ratio", "ratio", "{:5.2f}x"),
           ("start_s", "start", "{:5.2f}s"), ("boot_s", "boot", "{:5.2f}s"), ("prep_s", "prep", "{:5.2f}s"),
           ("import_s", "import", "{:5.2f}s"), ("run_s", "run", "{:5.2f}s"), ("in_sample_s", "in-smp", "{:5.2f}s"),
           ("gaps_s", "gaps", "{:5.2f}s"), ("per_sample_ms", "per-smp", "{:5.1f}ms"), ("report_s", "report", "{:5.2f}s"),
           ("render_s", "render", "{:5.2f}s"), ("exit_s", "exit", "{:5.2f}s"))
NAN = float("nan")


def epoch(iso: str) -> float:
    """Seconds since the epoch of an ISO 8601 UTC time as the manifest writes it (…Z)."""
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def one_run(tree: Path, scenario: str, out: Path) -> dict[str, float]:
    """Run the scenario from `tree` once; its timings (seconds)."""
    results, reports = out / "results", out / "reports"
    before = set(results.iterdir()) if results.exists() else set()
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    t0_wall, t0 = time.time(), time.monotonic()
    r = subprocess.run([sys.executable, "-m", "invoke", "run", "--scenario", scenario, "--results-dir", str(results),
                        "--reports-dir", str(reports), "--no-provision"], cwd=tree, env=env,
                       capture_output=True, text=True)
    wall = time.monotonic() - t0
    end_wall = t0_wall + wall
    if r.returncode != 0:
        raise SystemExit(f"invoke run failed in {tree}:\n{r.stderr[-2000:]}")
    (run_dir,) = set(results.iterdir()) - before
    manifest = json.loads((run_dir / "manifest.json").read_text())
    with open(run_dir / "samples.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    clients = sum(float(row["wall_s"] or 0) for row in rows)
    warmup = sum(float(row["wall_s"] or 0) for row in rows if row["phase"] == "warmup")
    in_sample = sum(float(row["duration_s"] or 0) - float(row["wall_s"] or 0) for row in rows)
    run_s = float(manifest["duration_s"])
    started, finished = epoch(manifest["started_at"]), epoch(manifest["finished_at"])
    phases = manifest.get("phases") or {}
    at = {k: phases.get(k, NAN) for k in ("run_called", "hosts_prepared", "report_imported")}
    waited = phases.get("report_wait_s", 0.0)  # inside run: before the first measured sample
    html = max(reports.rglob("*.html"), key=lambda p: p.stat().st_mtime)
    rendered = html.stat().st_mtime
    return {"wall_s": wall, "clients_s": clients, "warmup_s": warmup, "ratio": wall / clients, "start_s": started - t0_wall,
            "boot_s": at["run_called"] - t0_wall, "prep_s": at["hosts_prepared"] - at["run_called"],
            "import_s": phases.get("report_wait_s", at["report_imported"] - at["hosts_prepared"]), "run_s": run_s, "in_sample_s": in_sample,
            "gaps_s": run_s - clients - in_sample - waited, "per_sample_ms": (run_s - clients - waited) / len(rows) * 1e3,
            "report_s": end_wall - finished, "render_s": rendered - finished, "exit_s": end_wall - rendered}


def line(name: str, r: dict[str, float]) -> str:
    cells = ["-" if math.isnan(r[k]) else f.format(r[k]) for k, _, f in COLUMNS]
    return f"{name:<10} " + " ".join(f"{c:>{max(len(h), 7)}}" for c, (_, h, _) in zip(cells, COLUMNS))


HEADER = f"{'tree':<10} " + " ".join(f"{h:>{max(len(h), 7)}}" for _, h, _ in COLUMNS)


def median(values: list[float]) -> float:
    known = [v for v in values if not math.isnan(v)]
    return statistics.median(known) if known else NAN


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
          f"wall time (target < 1.5x); the columns are explained in the module's docstring")
    print(HEADER)
    for name, rs in rows.items():
        print(line(name, {k: median([r[k] for r in rs]) for k, _, _ in COLUMNS}))


if __name__ == "__main__":
    main()
