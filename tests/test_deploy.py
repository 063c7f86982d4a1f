"""Building the real programs: content-hash cache, rebuild on change, clear build failures."""

from __future__ import annotations

import os
import shutil

import pytest

from splicebench.programs import deploy
from splicebench.errors import BuildError
from splicebench.hosts.local import LocalHost

REPO = deploy.Path(__file__).resolve().parents[1]


def copy_sources(dst):
    dst.mkdir(parents=True)
    for top in deploy.SOURCES:
        src = REPO / top
        if src.is_dir():
            shutil.copytree(src, dst / top)
        else:
            shutil.copy2(src, dst / top)
    return dst


@pytest.mark.e2e
def test_second_build_rebuilds_nothing(programs, cache_dir, monkeypatch):
    monkeypatch.setenv("SPLICEBENCH_CACHE", str(cache_dir))
    progs = deploy.expected_programs()
    assert set(progs) >= {"sb-client", "sb-echo-naive", "sb-echo-sockmap", "sb-echo-splice"}
    before = {p: os.stat(programs.program(p)).st_mtime_ns for p in progs}
    logged = []
    again = deploy.build(LocalHost(), REPO, log=logged.append)
    assert again.built is False and again.dir == programs.dir and again.hash == programs.hash
    assert logged == []
    assert {p: os.stat(again.program(p)).st_mtime_ns for p in progs} == before
    # Only the finished build is in the cache: no temporary build directories are left.
    assert os.listdir(cache_dir / "build") == [programs.hash]


@pytest.mark.unit
def test_hash_follows_the_sources(tmp_path):
    src = copy_sources(tmp_path / "src")
    h0 = deploy.content_hash(src)
    assert h0 == deploy.content_hash(REPO)
    (src / "servers" / "net.o").write_bytes(b"object files are not sources")
    assert deploy.content_hash(src) == h0
    with open(src / "servers" / "net.h", "a") as f:
        f.write("\n/* changed */\n")
    assert deploy.content_hash(src) != h0


@pytest.mark.e2e
def test_build_failure_names_the_cause_and_leaves_nothing(tmp_path, monkeypatch):
    src = copy_sources(tmp_path / "src")
    with open(src / "servers" / "echo_naive.c", "a") as f:
        f.write("\n#error deliberately broken\n")
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPLICEBENCH_CACHE", str(cache))
    with pytest.raises(BuildError) as exc:
        deploy.build(LocalHost(), src, log=lambda m: None)
    assert "building the programs failed" in str(exc.value)
    assert "deliberately broken" in str(exc.value)
    assert os.listdir(cache / "build") == []
