"""What the invoke tasks do, as plain functions (tasks.py stays a thin layer of @task wrappers)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from hashlib import sha256
from pathlib import Path
from typing import Callable

import yaml

from splicebench import __version__, scenario as scenario_mod
from splicebench.programs import accel, deploy
from splicebench.hosts import facts, sysctls
from splicebench.programs import peers
from splicebench.scenario import plan as plan_mod
from splicebench.programs import provision
from splicebench.results import rundir as results
from splicebench.errors import ProgramUsageError, UserError
from splicebench.hosts.base import Host
from splicebench.hosts.local import LocalHost
from splicebench.hosts.inventory import Inventory, empty_inventory, load_inventory
from splicebench.run.progress import Progress
from splicebench.run import host_settings, preflight, privileges
from splicebench.run.runner import USAGE_PREFIX, RunOutcome, Runner
from splicebench.util.files import atomic_write_text, utc_now_iso
from splicebench.util.signals import deferred_interrupts
from splicebench.util.preload import preload

Log = Callable[[str], None]
REPORT_MODULE = "splicebench.report.run_report"  # what _render imports


def _err(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class RunInterrupted(UserError):
    exit_code = 130


class SamplesFailed(UserError):
    exit_code = 1


@dataclass(frozen=True)
class Paths:
    root: Path
    scenarios: Path
    results: Path
    reports: Path

    @classmethod
    def of(cls, root: Path, results_dir: str | None = None, reports_dir: str | None = None) -> "Paths":
        root = Path(root).resolve()
        return cls(root, root / "scenarios",
                   Path(results_dir).resolve() if results_dir else root / "results",
                   Path(reports_dir).resolve() if reports_dir else root / "reports")


def open_hosts(names: list[str], inventory: Inventory | None = None) -> dict[str, Host]:
    """Host objects for the names a scenario places programs on ('local' needs no inventory)."""
    from splicebench.run import fleet

    return fleet.open_hosts(names, inventory or empty_inventory())


def git_info(root: Path) -> dict[str, object]:
    def git(*args: str) -> str | None:
        try:
            r = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.SubprocessError):
            return None
        return r.stdout.strip() if r.returncode == 0 else None

    rev = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no", "--", "servers", "bpf", "Makefile", "src")
    return {"git_revision": rev, "git_dirty": bool(status) if status is not None else None}


@dataclass
class RunResult:
    run_dir: Path
    report: Path | None
    status: str
    counts: dict[str, int]
    table: str


@dataclass
class _Loaded:
    """A scenario read and planned, with the inventory that names its hosts."""

    src: Path
    text: str
    scenario: scenario_mod.Scenario
    plan: plan_mod.Plan
    inventory: Inventory


@dataclass
class _Prepared:
    """What the hosts are ready with: programs built (host -> Build), peers' versions, host facts."""

    builds: dict[str, deploy.Build]
    peer_versions: dict
    host_facts: dict[str, dict]


def run(paths: Paths, scenario_ref: str, *, provision_deps: bool = True, report: bool = True,
        log: Log = _err, progress_stream=None, hosts_file: str | None = None) -> RunResult:
    """Validate, build, run, write results/<run-id>/, render the report.

    hosts_file: inventory of the SSH hosts the scenario places programs on (None: the default
    inventory location, if any; see inventory.py)."""
    phases = {"run_called": time.time()}
    loaded = _load(paths, scenario_ref, hosts_file, log)
    phases["validated"] = time.time()
    hosts = open_hosts(loaded.plan.hosts(), loaded.inventory)
    settings = None
    try:
        privileges.check(loaded.plan, hosts)  # a sudo that cannot be used, what needs root: one line each
        preflight.check(loaded.plan, hosts, log)  # before anything is built or started
        phases["preflight_done"] = time.time()
        # The report's libraries (pandas, scipy, matplotlib: most of the report's time) load while
        # the hosts are prepared, which mostly waits on commands, and through the warm-up round; the
        # import ends before the first measured sample, so that it never competes with a measured
        # transfer (nor counts in its host CPU). It starts after the preflight, so that a run the
        # preflight refuses exits at once instead of waiting for the import (its thread is not a
        # daemon: util/preload.py).
        importing = preload(REPORT_MODULE) if report else None
        # Checked, journaled and guarded on every host before anything is built or started.
        settings = host_settings.open_settings(loaded.plan, hosts, log)
        prepared = _prepare_hosts(paths, loaded.plan, hosts, provision_deps, log)
        phases["hosts_prepared"] = time.time()
        rd = results.RunDir(paths.results, results.new_run_id())
        t0 = time.monotonic()
        manifest = _manifest(paths, loaded, prepared, rd.run_id)
        # When each step before the first sample ended (Unix time; bench/run_bench.py reads them).
        manifest["phases"] = {k: round(v, 3) for k, v in phases.items()}

        def imported() -> None:  # before the first measured sample
            waited = time.time()
            if importing is not None:
                importing.join()
            done = time.time()
            manifest["phases"].update(report_imported=round(done, 3), report_wait_s=round(done - waited, 3))
        if settings is not None:
            manifest["sysctls"] = settings.record  # filled in as the cells run
        rows, outcome, run_dir = _run_and_record(loaded.plan, hosts, prepared, rd, manifest, t0, progress_stream,
                                                 settings.apply if settings else None, imported)
    finally:
        with deferred_interrupts():
            for line in settings.close() if settings is not None else ():
                log(line)
            for h in hosts.values():
                h.close()

    counts = _counts(rows)
    if outcome.status == "interrupted":
        raise RunInterrupted(f"interrupted: partial results in {run_dir} "
                             f"({', '.join(f'{v} {k}' for k, v in counts.items())}); "
                             f"render them with: invoke report --run {rd.run_id}")
    if outcome.status == "stopped" and outcome.reason.startswith(USAGE_PREFIX):
        raise ProgramUsageError(f"{outcome.reason.removeprefix(USAGE_PREFIX)} (a program refused its command "
                                f"line: the run stopped at once; its samples are in {run_dir})")
    report_file, table = _render(run_dir, paths) if report else (None, "")
    return RunResult(run_dir, report_file, outcome.status, counts, table)


def _load(paths: Paths, scenario_ref: str, hosts_file: str | None, log: Log) -> _Loaded:
    """Read the inventory and the scenario, validate it against the inventory's host names and plan
    it; logs the plan's size. Raises ScenarioError (or another UserError) before anything runs."""
    src = scenario_mod.resolve(scenario_ref, paths.scenarios)
    inv = load_inventory(hosts_file)
    sc = scenario_mod.load(src, known_hosts=inv.names())
    text = src.read_text(encoding="utf-8")
    the_plan = plan_mod.build_plan(sc)
    log(f"scenario {sc.name}: {len(the_plan.samples)} samples "
        f"({len(sc.cells())} cell(s) x {len(sc.servers)} server(s) x {sc.warmup}+{sc.measured} rounds)")
    return _Loaded(src, text, sc, the_plan, inv)


def _prepare_hosts(paths: Paths, the_plan: plan_mod.Plan, hosts: dict[str, Host], provision_deps: bool,
                   log: Log) -> _Prepared:
    """Build the programs on every host (one UserError naming each failed host if any failed), make
    NGINX/HAProxy ready where the plan runs them, and gather every host's facts."""
    from splicebench.run import fleet

    needs = sorted((h, p) for h, progs in the_plan.programs().items() for p in progs)
    built = fleet.deploy_all(hosts, paths.root, provision=provision_deps,
                             extra=deploy.optional_packages([p for _, p in needs]), log=log)
    err = fleet.failures(built, "deploy")
    if err:
        raise err
    builds = {n: b for n, b in built.items() if isinstance(b, deploy.Build)}
    why = deploy.first_missing(builds, needs)
    if why:
        raise UserError(why)
    for name, b in builds.items():
        log(f"host {name}: programs {b.hash} " + (f"built in {b.seconds:.1f} s" if b.built else "cached"))
    # NGINX/HAProxy where the scenario runs them: installed, configs accepted, versions recorded.
    peer_kinds: dict[str, set[str]] = {}
    for s in the_plan.samples:
        if s.server_kind.peer:
            peer_kinds.setdefault(s.server_host, set()).add(s.server.kind)
    peer_versions = peers.prepare(hosts, peer_kinds, provision=provision_deps, log=log)
    return _Prepared(builds, peer_versions, fleet.facts_all(hosts))


def _manifest(paths: Paths, loaded: _Loaded, prepared: _Prepared, run_id: str) -> dict:
    """The run's manifest as written before the first sample (status "running"; the end of the run
    adds status, reason, finished_at, duration_s and counts)."""
    sc, the_plan = loaded.scenario, loaded.plan
    return {
        "run_id": run_id,
        "status": "running",
        "started_at": utc_now_iso(),
        "tool": {"name": "splicebench", "version": __version__, **git_info(paths.root),
                 "python": sys.version.split()[0], "command": sys.argv},
        "scenario": sc.to_dict(),
        "scenario_file": str(loaded.src),
        "scenario_sha256": sha256(loaded.text.encode()).hexdigest(),
        "scenario_text": loaded.text,
        "baseline": sc.baseline,
        "build": {n: {"hash": b.hash, "dir": b.dir, "built": b.built, "seconds": round(b.seconds, 3)}
                  for n, b in prepared.builds.items()},
        "hosts": prepared.host_facts,
        "peers": prepared.peer_versions,
        "plan": {"samples": len(the_plan.samples), "cells": [c.label for c in sc.cells()],
                 "interleaving": "per cell: warm-up rounds then measured rounds; each round runs every "
                                 "server once in scenario order",
                 "order": [s.id for s in the_plan.samples]},
    }


def _run_and_record(the_plan: plan_mod.Plan, hosts: dict[str, Host], prepared: _Prepared, rd: results.RunDir,
                    manifest: dict, t0: float, progress_stream,
                    before_cell=None, before_measured=None) -> tuple[list[dict], RunOutcome, Path]:
    """Run every sample, writing samples.csv and the raw outputs after each one; returns (rows,
    outcome, finished run directory). t0: time.monotonic() when the run started (for duration_s).

    Every planned sample ends up accounted for, also after Ctrl-C (outcome "interrupted", returned)
    or an internal error (re-raised after the run directory is finished with status "error"):
    samples not run get a 'skipped' row, except those adaptive repetitions found unnecessary."""
    sc = the_plan.scenario
    rows: list[dict] = []
    outcome = None

    def on_sample(sample, row, raw):
        # The raw outputs are written atomically but not fsync'd one by one (three or four files per
        # sample, about 0.6 ms each here); samples.csv, which lists them, is.
        files = [rd.write_raw(f"raw/{sample.id}.{suffix}", content, durable=False)
                 for suffix, content in raw.items()]
        row["raw_files"] = " ".join(files)
        rows.append(row)
        rd.add_sample(row)

    runner = Runner(hosts, {n: b.dir for n, b in prepared.builds.items()}, run_id=rd.run_id,
                    clk_tck={n: f.get("clk_tck") or 100 for n, f in prepared.host_facts.items()},
                    perf_why_not={n: f["perf"].get("why_not") for n, f in prepared.host_facts.items()
                                  if isinstance(f.get("perf"), dict)},
                    progress=Progress(len(the_plan.samples), cells=len(sc.cells()), stream=progress_stream),
                    on_sample=on_sample, before_cell=before_cell, before_measured=before_measured)
    try:
        rd.write_manifest(manifest)
        outcome = runner.run(the_plan)
    except KeyboardInterrupt:
        outcome = RunOutcome(status="interrupted", reason="interrupted")
    finally:
        with deferred_interrupts():
            # Account for every planned sample, also after an interruption or an internal error.
            # Samples that adaptive repetitions found unnecessary were not run and get no row.
            done = {r["sample_id"] for r in rows} | set(outcome.not_needed if outcome else ())
            why = "the run was interrupted" if outcome else "the run ended with an internal error"
            rows += [runner.skipped_row(s, f"not run: {why}") for s in the_plan.samples if s.id not in done]
            manifest.update(status=outcome.status if outcome else "error",
                            reason=outcome.reason if outcome else "internal error",
                            finished_at=utc_now_iso(),
                            duration_s=round(time.monotonic() - t0, 3),
                            counts=_counts(rows))
            rd.write_samples(rows)
            rd.write_manifest(manifest)
            run_dir = rd.finish()
    return rows, outcome, run_dir


def _render(run_dir: Path, paths: Paths) -> tuple[Path, str]:
    """Render the run's HTML report into paths.reports; (report file, text table of its summary)."""
    from splicebench.report import run_report as report_mod

    report_file, view, _ = report_mod.render_run(run_dir, paths.reports)
    return report_file, report_mod.text_table(view)


def _counts(rows: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rows:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return dict(sorted(out.items()))


def render_report(paths: Paths, run_ref: str | None):
    from splicebench.report import run_report as report_mod

    run_dir = results.find_run(paths.results, run_ref)
    out, view, _ = report_mod.render_run(run_dir, paths.reports)
    return run_dir, out, report_mod.text_table(view)


def _named_hosts(path: Path) -> tuple[str, ...]:
    """Host names other than 'local' that a scenario file places programs on (best effort: a file
    that does not parse yields none and fails validation with its own message)."""
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError):
        return ()
    if not isinstance(data, dict):
        return ()
    names: list[str] = []
    placements = data.get("placement")
    for p in placements if isinstance(placements, list) else [placements]:
        if isinstance(p, dict):
            names.append(p.get("server"))
            clients = p.get("clients")
            names.extend(clients if isinstance(clients, list) else [])
    backend = data.get("backend")
    if isinstance(backend, dict):
        names.append(backend.get("host"))
    found = [n for n in names if isinstance(n, str) and n != scenario_mod.LOCAL]
    return tuple(dict.fromkeys(found))


def list_scenarios(paths: Paths) -> list[tuple[str, str, str]]:
    """(name, summary, description or error) for each scenario file."""
    out = []
    for name in scenario_mod.available(paths.scenarios):
        path = paths.scenarios / f"{name}.yaml"
        # Scenarios for SSH hosts name hosts that only an inventory defines: validate them against
        # the names they use, and say which inventory hosts they need.
        needs = _named_hosts(path)
        try:
            sc = scenario_mod.load(path, known_hosts=(scenario_mod.LOCAL, *needs))
        except UserError as e:
            out.append((name, "INVALID", str(e)))
            continue
        servers = ",".join(s.label for s in sc.servers)
        info = f"{sc.workload_type}, {servers}, {sc.samples_total()} samples"
        if needs:
            info += f"; needs --hosts with {', '.join(needs)}"
        out.append((name, info, sc.description))
    return out


# ---------------------------------------------------------------------------------------------
# check and clean


def check(paths: Paths, host: Host | None = None) -> list[tuple[str, str, str]]:
    """Preflight of a host: (status ok|warn|FAIL, what, detail) rows."""
    host = host or LocalHost()
    f = facts.gather(host)
    rows: list[tuple[str, str, str]] = []

    def add(ok: bool | None, what: str, detail: str, warn_only: bool = False) -> None:
        rows.append(("ok" if ok else ("warn" if warn_only or ok is None else "FAIL"), what, detail))

    kernel = f.get("kernel") or ""
    try:
        major, minor = (int(x) for x in kernel.split(".")[:2])
        kv = (major, minor)
    except ValueError:
        kv = (0, 0)
    add(kv >= (5, 10), "kernel", f"{kernel} (SOCKMAP verdict-only echo needs >= 5.10)", warn_only=kv >= (4, 18))
    emulated = f.get("emulated") is True
    add(not emulated, "machine", f"{f.get('arch') or 'unknown'}, {f.get('cpu_count')} CPUs, " + (
        f"EMULATED ({f.get('virt_how')}): its numbers are not this architecture's hardware performance"
        if emulated else f"virtualization: {f.get('virt') or 'unknown'}"), warn_only=True)
    info = provision.os_info(host)
    add(info.apt, "OS", f"{info.pretty}" + ("" if info.apt else ": build dependencies cannot be installed "
                                             "automatically"), warn_only=True)
    miss = provision.missing(host, provision.BUILD_PACKAGES)
    root = f.get("uid") == 0
    add(not miss, "build dependencies",
        "all installed" if not miss else f"missing {' '.join(p.name for p in miss)}"
        + (" (invoke run installs them)" if info.apt and root else ""), warn_only=bool(info.apt and root))
    add_io_uring_row(host, add, paths.root)
    ok, detail = accel.read_support(host, (f.get("bpf") or {}).get("bpftool_probe"))
    add(ok, "SOCKMAP acceleration", detail + ("" if ok else " (accelerate: sk_msg cannot run)"), warn_only=True)
    caps = f.get("capabilities") or {}
    priv = root or (caps.get("CAP_BPF") and caps.get("CAP_NET_ADMIN"))
    add(bool(priv), "privileges", "root" if root else
        ("CAP_BPF and CAP_NET_ADMIN" if priv else "not root and no CAP_BPF+CAP_NET_ADMIN: the SOCKMAP server "
                                                 "cannot load its BPF program"))
    probe = (f.get("bpf") or {}).get("bpftool_probe")
    if probe:
        need = {"map_sockhash": "SOCKHASH maps", "map_sockmap": "SOCKMAP maps", "prog_sk_skb": "sk_skb programs",
                "helper_sk_redirect_hash": "bpf_sk_redirect_hash"}
        lacking = [d for k, d in need.items() if not probe.get(k)]
        add(not lacking, "BPF support", "sockmap, sockhash, sk_skb, sk_redirect helpers" if not lacking
            else "missing " + ", ".join(lacking))
        jit = (probe.get("system_config") or {}).get("bpf_jit_enable")
        add(jit == 1, "BPF JIT", f"bpf_jit_enable={jit}", warn_only=True)
    else:
        add(None, "BPF support", "not probed: bpftool missing or not root")
    add(bool((f.get("bpf") or {}).get("btf_vmlinux")), "BTF", "/sys/kernel/btf/vmlinux", warn_only=True)
    for ok, what, detail in facts.perf_check(f):
        add(ok, what, detail, warn_only=True)
    pipe = (f.get("sysctls") or {}).get("fs.pipe-max-size")
    add(pipe is not None and int(pipe) >= 1 << 20, "fs.pipe-max-size", f"{pipe} (splice uses 1 MiB pipes)",
        warn_only=True)
    pdeathsig = has_pdeathsig(host)
    add(pdeathsig, "setpriv --pdeathsig",
        "programs die with the orchestrator" if pdeathsig else
        "missing: programs survive a SIGKILLed orchestrator until their deadman timer", warn_only=True)
    load = f.get("loadavg_at_start")
    try:
        busy = float(load.split()[0]) > 0.5 * (f.get("cpu_count") or 1)
    except (AttributeError, ValueError, IndexError):
        busy = False
    add(not busy, "load average", f"{load} on {f.get('cpu_count')} CPUs" + (" (busy: numbers will be noisy)" if busy else ""),
        warn_only=True)
    try:
        lim = preflight.read_limits(host)
    except UserError as e:
        add(None, "limits", f"cannot read: {e}")
    else:
        hard, soft = ("unlimited" if n is None else f"{n:,}" for n in (lim.nofile_hard, lim.nofile_soft))
        add(True, "open files (hard limit)", f"{hard} per process (the programs raise their soft limit to it; "
                                             f"NGINX keeps the soft limit, {soft})")
        add(True, "ephemeral ports", f"{lim.port_range[0]}-{lim.port_range[1]}: {lim.ports:,} connections "
                                     f"from one address to one destination")
        add(True, "accept queue", f"{min(preflight.LISTEN_BACKLOG, lim.somaxconn):,} "
                                  f"(net.core.somaxconn {lim.somaxconn:,})")
    return rows


def add_io_uring_row(host: Host, add: Callable[..., None], root: Path) -> None:
    """check()'s io_uring row (warn only: only the uring programs need it): whether io_uring is allowed
    (kernel.io_uring_disabled), which opcodes the uring programs use the kernel has (their --probe, run
    from this host's build of the current sources, built without installing anything if need be) and
    whether liburing-dev, without which they are not built, is installed."""
    r = host.run(["cat", "/proc/sys/kernel/io_uring_disabled"], check=False, timeout=10)
    disabled = r.stdout.strip() if r.returncode == 0 else "absent (before Linux 6.6: allowed)"
    lib = not provision.missing(host, provision.OPTIONAL_BUILD_PACKAGES)
    allowed = disabled not in ("1", "2")
    probe: dict | None = None
    why = "liburing-dev missing: the uring programs are not built (invoke run installs it for a scenario naming them)"
    if lib:
        try:
            b = deploy.build(host, root, provision=False, log=lambda _line: None)
            out = host.run([b.program("sb-echo-uring"), "--probe"], check=False, timeout=30)
            probe = json.loads(out.stdout) if out.returncode == 0 else None
            why = f"probe failed: {out.stderr.strip() or out.returncode}"
        except (UserError, ValueError) as e:
            why = f"not probed: {str(e).splitlines()[0]}"
    detail, ok = io_uring_detail(disabled, allowed, probe, why)
    add(ok and lib, "io_uring", detail + (", liburing-dev installed" if lib else ""), warn_only=True)


def io_uring_detail(disabled: str, allowed: bool, probe: dict | None, why: str) -> tuple[str, bool]:
    """The io_uring row's text and whether every part is fine: allowed or not, then the opcodes
    present and missing (from sb-echo-uring --probe's JSON), or why they were not probed."""
    head = f"kernel.io_uring_disabled={disabled} ({'allowed' if allowed else 'disabled: the uring programs cannot run'})"
    if probe is None:
        return f"{head}; opcodes {why}", False
    if "setup_error" in probe:
        return f"{head}; io_uring_setup refused: {probe['setup_error']}", False
    missing = probe.get("missing") or []
    text = f"{head}; opcodes present: {' '.join(probe.get('present') or []) or 'none'}"
    if missing:
        text += f"; missing: {' '.join(missing)}"
    return text, allowed and not missing


def has_pdeathsig(host: Host) -> bool:
    """Whether `host` (the one checked, local or over SSH) has a setpriv that knows --pdeathsig."""
    r = host.run(["setpriv", "--help"], check=False, timeout=10)
    return r.returncode == 0 and "--pdeathsig" in r.stdout


def check_table(rows: list[tuple[str, str, str]]) -> str:
    """check()'s rows as aligned text lines: status, what, detail."""
    width = max(len(r[1]) for r in rows)
    return "\n".join(f"{status:<5} {what:<{width}}  {detail}" for status, what, detail in rows)


@dataclass
class CleanReport:
    killed: list[int]
    cache: str
    temp_dirs: list[Path]
    restored: list[str] = field(default_factory=list)
    cgroups: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """What clean did, one line per action."""
        return ([f"stopped {len(self.killed)} leftover process(es)"
                 + (f": {' '.join(map(str, self.killed))}" if self.killed else ""),
                 f"removed build cache {self.cache}"]
                + [f"removed {d}" for d in self.temp_dirs] + self.restored
                + [f"removed acceleration cgroup {c}" for c in self.cgroups])


def clean(paths: Paths, host: Host | None = None) -> CleanReport:
    """Stop leftover programs started from the build cache, drop the cache, remove dead temp run dirs."""
    host = host or LocalHost()
    base = f"{host.workdir()}/build"
    pids = host.pids_with_exe_under(base) if host.exists(base) else []
    host.kill_pids(pids)
    restored = sysctls.restore_journals(host)
    cgroups = accel.sweep(host)  # after the programs: a cgroup goes once nothing runs in it
    dropped = deploy.drop_cache(host)
    stale = results.stale_temp_dirs(paths.results)
    for d in stale:
        import shutil

        shutil.rmtree(d, ignore_errors=True)
    return CleanReport(pids, dropped, stale, restored, cgroups)


def ensure_test_deps(log: Log = _err) -> None:
    host = LocalHost()
    provision.ensure(host, provision.BUILD_PACKAGES + provision.OPTIONAL_BUILD_PACKAGES + provision.PERF_PACKAGES
                     + provision.TEST_PACKAGES
                     + provision.ARM64_LAB_PACKAGES,
                     what="build and test dependencies", log=log)


def write_schema(paths: Paths) -> Path:
    out = paths.scenarios / "schema.json"
    atomic_write_text(out, scenario_mod.json_schema_text())
    return out


# Static checks `invoke test` runs before pytest: the layering contracts of pyproject.toml
# (import-linter) and ruff's checks. Each is (what, argv); both are installed by the test extras.
STATIC_CHECKS = (
    ("import layering (lint-imports)",
     [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command as c; sys.exit(c())"]),
    ("ruff", [sys.executable, "-m", "ruff", "check", "--quiet", "src", "tests", "bench", "tasks.py"]),
)


def run_static_checks(paths: Paths, log: Log = _err) -> list[str]:
    """Run STATIC_CHECKS in the repository; the names of those that failed (their output went to stderr)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(paths.root / "src"),
                                                                     os.environ.get("PYTHONPATH")]))}
    failed = []
    for what, argv in STATIC_CHECKS:
        r = subprocess.run(argv, cwd=paths.root, env=env, capture_output=True, text=True)
        if r.returncode != 0:
            log(f"{what} failed:\n{r.stdout}{r.stderr}".rstrip())
            failed.append(what)
        else:
            log(f"{what}: ok")
    return failed


def pytest_argv(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", "-q", *args]


def run_pytest(paths: Paths, args: list[str]) -> int:
    env = dict(os.environ)
    return subprocess.call(pytest_argv(args), cwd=paths.root, env=env)
