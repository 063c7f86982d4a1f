"""Shared fixtures. Markers (pyproject.toml): unit, e2e, privileged, slow.

Skips are not accepted where the suite is meant to run in full (as root, or with CI set): a test
that would skip there fails instead, so a broken environment cannot pass silently.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _strict() -> bool:
    return os.geteuid() == 0 or bool(os.environ.get("CI"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and not hasattr(rep, "wasxfail") and _strict():
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = (f"this test skipped ({reason}), but skips are failures when running as root or in "
                        f"CI: the environment must provide what the test needs")


@pytest.fixture
def tmp_path(request):
    """A fresh directory for one test, removed when the test ends, passed or failed."""
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", request.node.name)[:40]
    with tempfile.TemporaryDirectory(prefix=f"splicebench-test-{name}-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def cache_dir():
    """A build cache private to this test session (removed at the end)."""
    with tempfile.TemporaryDirectory(prefix="splicebench-cache-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def programs(cache_dir):
    """The data-path programs built from this checkout into the session's cache."""
    from splicebench.programs import deploy
    from splicebench.hosts.local import LocalHost

    old = os.environ.get("SPLICEBENCH_CACHE")
    os.environ["SPLICEBENCH_CACHE"] = str(cache_dir)
    try:
        build = deploy.build(LocalHost(), REPO, log=lambda m: None)
    finally:
        if old is None:
            os.environ.pop("SPLICEBENCH_CACHE", None)
        else:
            os.environ["SPLICEBENCH_CACHE"] = old
    return build


@pytest.fixture
def use_cache(programs, cache_dir, monkeypatch):
    """SPLICEBENCH_CACHE pointing at the session's built programs, for code that builds itself."""
    monkeypatch.setenv("SPLICEBENCH_CACHE", str(cache_dir))
    return programs


@pytest.fixture
def no_leftovers(cache_dir):
    """Fails the test if any program started from the session's build cache is still running."""
    from splicebench.hosts.local import LocalHost

    yield
    host = LocalHost()
    left = host.pids_with_exe_under(str(cache_dir))
    host.kill_pids(left)
    assert left == [], f"processes left running: {left}"


@pytest.fixture
def paranoid_2():
    """kernel.perf_event_paranoid = 2 (the Debian default) for the test, put back after."""
    path = Path("/proc/sys/kernel/perf_event_paranoid")
    old = path.read_text().strip()
    path.write_text("2")
    try:
        yield
    finally:
        path.write_text(old)


IO_URING_DISABLED = Path("/proc/sys/kernel/io_uring_disabled")


@pytest.fixture
def io_uring_disabled() -> Iterator[None]:
    """kernel.io_uring_disabled = 2 inside the test (io_uring refused to everyone on this machine);
    the old value is back afterwards, also when the test fails."""
    before = IO_URING_DISABLED.read_text()
    try:
        IO_URING_DISABLED.write_text("2\n")
        yield
    finally:
        IO_URING_DISABLED.write_text(before)
    assert IO_URING_DISABLED.read_text() == before
