#!/usr/bin/env python3
"""Benchmark of deploying the programs to lab SSH hosts, side by side in one run (not a test).

    python3 bench/deploy_bench.py [--hosts 4] [--reps 1] [--json]   (as root)

Creates a throwaway lab (its own namespaces and a free private /24), then times, per repetition:
a fresh deploy to 1 host, a fresh deploy to all N hosts in parallel, and a no-op redeploy to all N
(every host's build matches the content hash). A fresh deploy is what `invoke deploy` does on a host
without the build: check the build dependencies, upload the sources, verify, build with make on the
host. Lab hosts share this machine's cores, so N parallel builds compete for them; on real hosts
each builds on its own CPUs. The lab is removed at the end, also on error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from splicebench.programs import deploy  # noqa: E402
from splicebench.lab import netns as lab  # noqa: E402
from splicebench.hosts.inventory import load_inventory  # noqa: E402
from splicebench.run.fleet import for_each_host, open_host  # noqa: E402


def timed_deploy(hosts) -> tuple[float, dict]:
    t0 = time.monotonic()
    res = for_each_host(hosts, lambda h: deploy.build(h, REPO, log=lambda m: None))
    wall = time.monotonic() - t0
    bad = {n: r for n, r in res.items() if not isinstance(r, deploy.Build)}
    if bad:
        raise SystemExit("deploy failed: " + "; ".join(f"{n}: {e}" for n, e in bad.items()))
    return wall, res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hosts", type=int, default=4, help="lab hosts for the parallel cases")
    ap.add_argument("--reps", type=int, default=1, help="repetitions of each case")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("needs root (the lab uses network namespaces)")

    cfg = lab.LabConfig(prefix="sbb" + secrets.token_hex(2), subnet=lab.free_subnet())
    cases: dict[str, list[tuple[float, list[float], int]]] = {}
    try:
        lb = lab.up(args.hosts, cfg)
        inv = load_inventory(lb.inventory)
        names = [h.name for h in lb.hosts]
        for _ in range(args.reps):
            for name, group in (("fresh, 1 host", names[:1]),
                                (f"fresh, {len(names)} hosts", names),
                                (f"no-op redeploy, {len(names)} hosts", names)):
                if name.startswith("fresh"):
                    for n in group:
                        with open_host(n, inv) as h:
                            deploy.drop_cache(h)
                # New connections each time: connecting is part of what a user waits for.
                hosts = [open_host(n, inv) for n in group]
                try:
                    wall, res = timed_deploy(hosts)
                finally:
                    for h in hosts:
                        h.close()
                cases.setdefault(name, []).append(
                    (wall, [b.seconds for b in res.values()], sum(b.built for b in res.values())))
    finally:
        lab.down(cfg)

    print(f"deploy to lab SSH hosts: {os.cpu_count()} cores shared by all hosts, "
          f"{args.reps} repetition(s), medians")
    print(f"{'case':<26} {'wall s':>8} {'per host s (min-max)':>22} {'built':>6}")
    out = {}
    for name, runs in cases.items():
        wall = statistics.median(r[0] for r in runs)
        lo = statistics.median(min(r[1]) for r in runs)
        hi = statistics.median(max(r[1]) for r in runs)
        built = runs[-1][2]
        print(f"{name:<26} {wall:>8.3f} {f'{lo:.3f}-{hi:.3f}':>22} {built:>6}")
        out[name] = {"wall_s": wall, "host_min_s": lo, "host_max_s": hi, "built": built}
    if args.json:
        print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
