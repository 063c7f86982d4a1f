"""What `invoke run` loads and compiles before its first sample: only what a local run needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from splicebench.report import render

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parent.parent


def test_a_local_run_does_not_load_the_ssh_stack():
    # What tasks.py imports for `invoke run`, and the modules a local run then uses before its samples.
    code = ("import sys, tasks; from splicebench.run import privileges, preflight, fleet, runner; "
            "print(' '.join(m for m in ('fabric', 'paramiko', 'pandas', 'scipy', 'matplotlib') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": f"{ROOT / 'src'}:{ROOT}"}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == []


@pytest.fixture
def fresh_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SPLICEBENCH_CACHE", str(tmp_path / "cache"))
    render.environment.cache_clear()
    yield tmp_path / "cache"
    render.environment.cache_clear()


def test_compiled_templates_are_kept_in_the_cache_and_used(fresh_env):
    env = render.environment()
    env.get_template("report.html.j2")
    kept = sorted((fresh_env / "jinja").iterdir())
    assert kept and all(p.name.endswith(".cache") and p.stat().st_size > 0 for p in kept)
    # A new environment (a new run) loads the compiled code instead of compiling the source again.
    render.environment.cache_clear()
    compiled = []
    env2 = render.environment()
    real = env2.compile
    env2.compile = lambda *a, **kw: compiled.append(a) or real(*a, **kw)
    env2.get_template("report.html.j2")
    assert compiled == []


def test_a_cache_that_cannot_be_made_only_costs_time(fresh_env):
    fresh_env.parent.mkdir(parents=True, exist_ok=True)
    fresh_env.write_text("a file where the cache directory would be\n")
    env = render.environment()
    assert env.bytecode_cache is None
    assert env.get_template("report.html.j2").name == "report.html.j2"


def test_the_bpf_feature_probe_runs_once_per_boot(monkeypatch, tmp_path):
    from splicebench.hosts import facts
    from splicebench.hosts.local import LocalHost

    monkeypatch.setenv("SPLICEBENCH_CACHE", str(tmp_path / "cache"))
    first = facts.bpftool_probe(LocalHost())
    assert first is not None and "map_types" in json.loads(first)
    (kept,) = (tmp_path / "cache" / "build" / "facts").iterdir()
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert kept.name.startswith(f"bpftool-probe-{boot_id}-{os.getuid()}-")
    # The next run reads the kept probe instead of probing again.
    kept.write_text('{"kept": true}\n')
    assert json.loads(facts.bpftool_probe(LocalHost()) or "{}") == {"kept": True}
    # A probe of another boot is replaced, not kept beside the new one.
    kept.rename(kept.with_name("bpftool-probe-earlier-boot.json"))
    assert "map_types" in json.loads(facts.bpftool_probe(LocalHost()) or "{}")
    assert [p.name for p in kept.parent.iterdir()] == [kept.name]


def test_invoke_leaves_the_package_byte_compiled():
    import importlib.util

    import splicebench

    pkg = Path(splicebench.__file__).parent
    sources = sorted(pkg.rglob("*.py"))
    for src in sources:  # as on a fresh checkout: nothing compiled
        Path(importlib.util.cache_from_source(str(src))).unlink(missing_ok=True)
    env = {**os.environ, "PYTHONPATH": str(pkg.parent), "PYTHONDONTWRITEBYTECODE": "1"}
    subprocess.run([sys.executable, "-m", "invoke", "--list"], cwd=ROOT, env=env, capture_output=True, check=True)
    stale = [str(s.relative_to(pkg)) for s in sources
             if not Path(importlib.util.cache_from_source(str(s))).is_file()]
    assert stale == []
