"""Invoke tasks: `invoke --list`. Each task is a thin wrapper over splicebench.cli.commands: it parses
its flags, calls, prints. Tasks are declared with splicebench.cli.edge.task, which ends a UserError as
its message and exit code, and Ctrl-C as 130."""

from __future__ import annotations

import gc
import shlex
import sys
from pathlib import Path

from invoke import Collection, Context, Exit

ROOT = Path(__file__).resolve().parent
try:
    import splicebench
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))
    import splicebench


def _compile_package() -> None:
    """Byte-compile the package's changed modules before they are imported. Invoke never lets the
    import system write bytecode for what a tasks file imports (nor does PYTHONDONTWRITEBYTECODE),
    so without this every command would compile the package's ~15,000 lines again: about 0.3 s of
    CPU for a run and its report here. Checking that nothing changed costs a few ms; a module that
    does not compile is left to its import to report."""
    import compileall

    compileall.compile_dir(str(Path(splicebench.__file__).parent), quiet=2)


_compile_package()

from splicebench.cli import commands, fleet_commands  # noqa: E402
from splicebench.cli.edge import task  # noqa: E402  (invoke's task + the one UserError handler)
from splicebench.run import fleet  # noqa: E402


HOSTS_HELP = "inventory of SSH hosts (default: $SPLICEBENCH_HOSTS or ~/.config/splicebench/hosts.yaml)"
ONLY_HELP = "comma-separated subset of the inventory's hosts ('local' allowed)"


@task(help={
    "scenario": "scenario name in scenarios/ or path to a YAML file (default: loopback-100mib)",
    "results-dir": "where run directories go (default: results/)",
    "reports-dir": "where the HTML report goes (default: reports/)",
    "no-provision": "do not install missing build dependencies with apt",
    "hosts": HOSTS_HELP,
})
def run(c: Context, scenario: str = "loopback-100mib", results_dir: str | None = None,
        reports_dir: str | None = None, no_provision: bool = False, hosts: str | None = None) -> None:
    """Run a scenario: build the programs on its hosts, run every sample, write results and a report."""
    paths = commands.Paths.of(ROOT, results_dir, reports_dir)
    res = commands.run(paths, scenario, provision_deps=not no_provision, hosts_file=hosts)
    gc.freeze()  # the process ends next: its exit need not collect what the run and its report left
    print(res.table)
    print(f"\nresults: {res.run_dir}")
    print(f"report:  {res.report}")
    failed = {k: v for k, v in res.counts.items() if k != "ok"}
    if failed:
        raise commands.SamplesFailed(
            f"not every sample succeeded ({', '.join(f'{v} {k}' for k, v in failed.items())}); "
            f"the report lists them")


@task
def scenarios(c: Context) -> None:
    """List the scenarios in scenarios/ with their workload, servers, sample count and description."""
    for name, info, desc in commands.list_scenarios(commands.Paths.of(ROOT)):
        print(f"{name:<22} {info}")
        if desc:
            print(f"{'':<22} {desc}")


@task(help={
    "run": "run id, unique prefix of one, or path (default: the latest run)",
    "results-dir": "where run directories are (default: results/)",
    "reports-dir": "where the HTML report goes (default: reports/)",
})
def report(c: Context, run: str | None = None, results_dir: str | None = None,
           reports_dir: str | None = None) -> None:
    """Render the HTML report of a run again (e.g. after an interrupted run or a template change)."""
    run_dir, out, table = commands.render_report(commands.Paths.of(ROOT, results_dir, reports_dir), run)
    print(table)
    print(f"\nresults: {run_dir}\nreport:  {out}")


@task(positional=["run_a", "run_b"], iterable=["more"], help={
    "run-a": "the reference run: id, unique prefix of one, or path",
    "run-b": "the run compared with it",
    "more": "a further run to compare with the reference: --more RUN_C [--more RUN_D ...]",
    "results-dir": "where run directories are (default: results/)",
    "reports-dir": "where the HTML report and its Parquet samples go (default: reports/)",
})
def compare(c: Context, run_a: str, run_b: str, more: list[str] | None = None, results_dir: str | None = None,
            reports_dir: str | None = None) -> None:
    """Compare runs (before/after, host vs host): one HTML report with ratios, significance, host differences."""
    from splicebench.report import compare_report

    paths = commands.Paths.of(ROOT, results_dir, reports_dir)
    out, parquet, summary = compare_report.compare_runs(paths.results, paths.reports, [run_a, run_b, *(more or [])])
    print(summary)
    print(f"\nreport:  {out}\nsamples: {parquet}")


@task(help={
    "run": "run id, unique prefix of one, or path (default: the latest run)",
    "results-dir": "where run directories are (default: results/)",
    "output": "Parquet file to write (default: reports/<scenario>-<run-id>.parquet)",
})
def export(c: Context, run: str | None = None, results_dir: str | None = None, output: str | None = None) -> None:
    """Write a run's samples (derived metrics and host facts included) as Parquet, for notebooks."""
    from splicebench.report import export as export_mod

    paths = commands.Paths.of(ROOT, results_dir)
    print(export_mod.export_run(paths.results, paths.reports, run, output))


@task(help={"hosts": HOSTS_HELP + "; checks every host of it", "only": ONLY_HELP})
def check(c: Context, hosts: str | None = None, only: str | None = None) -> None:
    """Preflight this host (or every inventory host): kernel, BPF support, tools, privileges, arch."""
    if hosts or only:
        table, failed = fleet.check_table(fleet_commands.check(commands.Paths.of(ROOT), hosts, only))
    else:
        rows = commands.check(commands.Paths.of(ROOT))
        table, failed = commands.check_table(rows), any(r[0] == "FAIL" for r in rows)
    print(table)
    if failed:
        raise Exit("some checks failed", code=1)


@task(help={"results-dir": "where run directories are (default: results/)",
            "hosts": HOSTS_HELP + "; cleans every host of it", "only": ONLY_HELP})
def clean(c: Context, results_dir: str | None = None, hosts: str | None = None, only: str | None = None) -> None:
    """Stop leftover server/client processes, drop the build cache, remove temp dirs of killed runs."""
    if hosts or only:  # those hosts only ('local' among them if named in --only)
        res = fleet_commands.clean(hosts, only)
        print("\n".join(fleet_commands.clean_lines(res)))
        if fleet.failures(res, "clean"):
            raise Exit("clean failed on some hosts")
        return
    print("\n".join(commands.clean(commands.Paths.of(ROOT, results_dir)).lines()))


@task(help={"hosts": HOSTS_HELP + "; deploys to every host of it", "only": ONLY_HELP,
            "no-provision": "do not install missing build dependencies with apt"})
def deploy(c: Context, hosts: str | None = None, only: str | None = None, no_provision: bool = False) -> None:
    """Provision, upload and build the programs on every inventory host in parallel (cached by hash)."""
    res = fleet_commands.deploy(ROOT, hosts, only, provision=not no_provision,
                                log=lambda m: print(m, file=sys.stderr))
    print(fleet.deploy_table(res))
    if fleet.failures(res, "deploy"):
        raise Exit(f"deploy failed on {fleet_commands.deploy_failed_hosts(res)} host(s)")


@task
def schema(c: Context) -> None:
    """Write scenarios/schema.json (the JSON Schema of scenario files, for editors)."""
    print(commands.write_schema(commands.Paths.of(ROOT)))


@task(help={"args": "extra pytest arguments, e.g. --args='-m unit -x'"})
def test(c: Context, args: str = "") -> None:
    """Install build and test dependencies when missing (apt), check the import layering and ruff, run pytest."""
    commands.ensure_test_deps()
    paths = commands.Paths.of(ROOT)
    failed = commands.run_static_checks(paths)
    code = commands.run_pytest(paths, shlex.split(args))
    if failed:
        raise Exit(f"static checks failed: {', '.join(failed)}", code=1)
    if code:
        raise Exit(code=code)


# lab.* (SSH hosts in network namespaces) and hosts.* (inventory) tasks.
from splicebench.cli import tasks_lab  # noqa: E402

ns = Collection.from_module(sys.modules[__name__])
for _sub in tasks_lab.COLLECTIONS:
    ns.add_collection(_sub)
