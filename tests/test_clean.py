"""`clean`: leftover programs stopped, build cache dropped, temp dirs of dead runs removed."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from splicebench.cli import commands

pytestmark = pytest.mark.e2e


def test_clean_stops_leftovers_and_drops_the_cache(tmp_path, programs, monkeypatch):
    cache = tmp_path / "cache"
    build = cache / "build" / "0123456789abcdef"
    build.mkdir(parents=True)
    shutil.copy2(programs.program("sb-echo-naive"), build / "sb-echo-naive")
    monkeypatch.setenv("SPLICEBENCH_CACHE", str(cache))
    # A server left behind by a run that was killed: detached, in its own session.
    leftover = subprocess.Popen([str(build / "sb-echo-naive"), "--listen", "127.0.0.1:0"],
                                stdout=subprocess.DEVNULL, start_new_session=True)
    try:
        (tmp_path / "results" / ".tmp-20260101T000000Z-aaaaaa-999999999").mkdir(parents=True)
        (tmp_path / "results" / "20260101T000000Z-bbbbbb").mkdir()
        report = commands.clean(commands.Paths.of(tmp_path, str(tmp_path / "results")))
        assert report.killed == [leftover.pid]
        assert leftover.wait(timeout=30) < 0
        assert not (cache / "build").exists()
        assert [p.name for p in report.temp_dirs] == [".tmp-20260101T000000Z-aaaaaa-999999999"]
        assert os.listdir(tmp_path / "results") == ["20260101T000000Z-bbbbbb"]
    finally:
        if leftover.poll() is None:
            leftover.kill()
            leftover.wait()
