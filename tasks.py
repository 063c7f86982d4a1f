"""Invoke tasks: `invoke --list`. Each task is a thin wrapper over splicebench.cli.commands."""

from __future__ import annotations

import contextlib
import shlex
import sys
from pathlib import Path

from invoke import Collection, Exit, task

ROOT = Path(__file__).resolve().parent
try:
    import splicebench  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(ROOT / "src"))

from splicebench.cli import commands  # noqa: E402
from splicebench.errors import UserError  # noqa: E402


HOSTS_HELP = "inventory of SSH hosts (default: $SPLICEBENCH_HOSTS or ~/.config/splicebench/hosts.yaml)"
ONLY_HELP = "comma-separated subset of the inventory's hosts ('local' allowed)"


@contextlib.contextmanager
def user_errors():
    """The one place where problems the user can fix become a message and an exit code."""
    try:
        yield
    except UserError as e:
        raise Exit(str(e), code=getattr(e, "exit_code", 1)) from None
    except KeyboardInterrupt:
        raise Exit("interrupted", code=130) from None


@task(help={
    "scenario": "scenario name in scenarios/ or path to a YAML file (default: loopback-100mib)",
    "results-dir": "where run directories go (default: results/)",
    "reports-dir": "where the HTML report goes (default: reports/)",
    "no-provision": "do not install missing build dependencies with apt",
    "hosts": HOSTS_HELP,
})
def run(c, scenario="loopback-100mib", results_dir=None, reports_dir=None, no_provision=False,
        hosts=None):
    """Run a scenario: build the programs on its hosts, run every sample, write results and a report."""
    with user_errors():
        paths = commands.Paths.of(ROOT, results_dir, reports_dir)
        res = commands.run(paths, scenario, provision_deps=not no_provision, hosts_file=hosts)
        print(res.table)
        print(f"\nresults: {res.run_dir}")
        print(f"report:  {res.report}")
        failed = {k: v for k, v in res.counts.items() if k != "ok"}
        if failed:
            raise commands.SamplesFailed(
                f"not every sample succeeded ({', '.join(f'{v} {k}' for k, v in failed.items())}); "
                f"the report lists them")


@task
def scenarios(c):
    """List the scenarios in scenarios/ with their workload, servers, sample count and description."""
    with user_errors():
        for name, info, desc in commands.list_scenarios(commands.Paths.of(ROOT)):
            print(f"{name:<22} {info}")
            if desc:
                print(f"{'':<22} {desc}")


@task(help={
    "run": "run id, unique prefix of one, or path (default: the latest run)",
    "results-dir": "where run directories are (default: results/)",
    "reports-dir": "where the HTML report goes (default: reports/)",
})
def report(c, run=None, results_dir=None, reports_dir=None):
    """Render the HTML report of a run again (e.g. after an interrupted run or a template change)."""
    with user_errors():
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
def compare(c, run_a, run_b, more=None, results_dir=None, reports_dir=None):
    """Compare runs (before/after, host vs host): one HTML report with ratios, significance, host differences."""
    with user_errors():
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
def export(c, run=None, results_dir=None, output=None):
    """Write a run's samples (derived metrics and host facts included) as Parquet, for notebooks."""
    with user_errors():
        from splicebench.report import export as export_mod

        paths = commands.Paths.of(ROOT, results_dir)
        print(export_mod.export_run(paths.results, paths.reports, run, output))


@task(help={"hosts": HOSTS_HELP + "; checks every host of it", "only": ONLY_HELP})
def check(c, hosts=None, only=None):
    """Preflight this host (or every inventory host): kernel, BPF support, tools, privileges, arch."""
    with user_errors():
        if hosts or only:
            table, failed = fleet_check(hosts, only)
            print(table)
            if failed:
                raise Exit("some checks failed", code=1)
            return
        rows = commands.check(commands.Paths.of(ROOT))
        width = max(len(r[1]) for r in rows)
        for status, what, detail in rows:
            print(f"{status:<5} {what:<{width}}  {detail}")
        if any(r[0] == "FAIL" for r in rows):
            raise Exit("some checks failed", code=1)


@task(help={"results-dir": "where run directories are (default: results/)",
            "hosts": HOSTS_HELP + "; cleans every host of it", "only": ONLY_HELP})
def clean(c, results_dir=None, hosts=None, only=None):
    """Stop leftover server/client processes, drop the build cache, remove temp dirs of killed runs."""
    with user_errors():
        if hosts or only:
            fleet_clean(hosts, only)  # those hosts only ('local' among them if named in --only)
            return
        r = commands.clean(commands.Paths.of(ROOT, results_dir))
        print(f"stopped {len(r.killed)} leftover process(es)" + (f": {' '.join(map(str, r.killed))}" if r.killed else ""))
        print(f"removed build cache {r.cache}")
        for d in r.temp_dirs:
            print(f"removed {d}")


@task(help={"hosts": HOSTS_HELP + "; deploys to every host of it", "only": ONLY_HELP,
            "no-provision": "do not install missing build dependencies with apt"})
def deploy(c, hosts=None, only=None, no_provision=False):
    """Provision, upload and build the programs on every inventory host in parallel (cached by hash)."""
    from splicebench.run import fleet
    from splicebench.hosts.inventory import load_inventory

    with user_errors():
        inv = load_inventory(hosts)
        hs = fleet.open_hosts(fleet.inventory_hosts(inv, only), inv)
        try:
            res = fleet.deploy_all(hs, ROOT, provision=not no_provision,
                                   log=lambda m: print(m, file=sys.stderr))
        finally:
            fleet.close_all(hs)
        print(fleet.deploy_table(res))
        if fleet.failures(res, "deploy"):
            raise Exit(f"deploy failed on {sum(isinstance(r, Exception) for r in res.values())} host(s)")


def fleet_check(hosts, only):
    from splicebench.run import fleet
    from splicebench.hosts.inventory import load_inventory

    inv = load_inventory(hosts)
    hs = fleet.open_hosts(fleet.inventory_hosts(inv, only), inv)
    try:
        return fleet.check_table(fleet.check_all(hs, lambda h: commands.check(commands.Paths.of(ROOT), h)))
    finally:
        fleet.close_all(hs)


def fleet_clean(hosts, only):
    from splicebench.run import fleet
    from splicebench.hosts.inventory import load_inventory

    inv = load_inventory(hosts)
    hs = fleet.open_hosts(fleet.inventory_hosts(inv, only), inv)
    try:
        res = fleet.clean_all(hs)
    finally:
        fleet.close_all(hs)
    for n, r in res.items():
        if isinstance(r, Exception):
            print(f"{n}: FAILED: {r}")
        else:
            print(f"{n}: stopped {len(r.programs)} leftover process(es)"
                  + (f": {' '.join(map(str, r.programs))}" if r.programs else "")
                  + f"; removed build cache {r.cache}")
    if fleet.failures(res, "clean"):
        raise Exit("clean failed on some hosts")


@task
def schema(c):
    """Write scenarios/schema.json (the JSON Schema of scenario files, for editors)."""
    with user_errors():
        print(commands.write_schema(commands.Paths.of(ROOT)))


@task(help={"args": "extra pytest arguments, e.g. --args='-m unit -x'"})
def test(c, args=""):
    """Install build and test dependencies when missing (apt), then run the test suite with pytest."""
    with user_errors():
        commands.ensure_test_deps()
        code = commands.run_pytest(commands.Paths.of(ROOT), shlex.split(args))
        if code:
            raise Exit(code=code)


# lab.* (SSH hosts in network namespaces) and hosts.* (inventory) tasks.
from splicebench.cli import tasks_lab  # noqa: E402

ns = Collection.from_module(sys.modules[__name__])
for _sub in tasks_lab.COLLECTIONS:
    ns.add_collection(_sub)
