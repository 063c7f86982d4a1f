"""Building the real programs: content-hash cache, rebuild on change, clear build failures."""

from __future__ import annotations

import os
import shutil
import subprocess

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
    # Only the finished build is in the cache: no temporary build directories are left (beside the
    # builds: the kept kernel feature probe of hosts/facts.py, once a run has gathered facts).
    assert [n for n in os.listdir(cache_dir / "build") if n != "facts"] == [programs.hash]


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


@pytest.mark.e2e
def test_a_host_without_liburing_builds_everything_else(tmp_path):
    # The Makefile's probe looks for URING_HEADER (liburing.h): a header no host has stands in for it.
    out = tmp_path / "build"
    r = subprocess.run(["make", "-C", str(REPO), f"BUILD={out}", "URING_HEADER=no-such-liburing.h", "-j2"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert all((out / p).is_file() for p in deploy.expected_programs())
    assert {"sb-echo-uring", "sb-proxy-uring"} <= set(deploy.OPTIONAL_PROGRAMS)
    assert not (out / "sb-echo-uring").exists() and not (out / "sb-proxy-uring").exists()
    b = deploy.Build("lab1", "h", str(out), False, 0.0, ("sb-echo-uring",))
    assert b.missing_program("sb-echo-naive") is None
    assert deploy.first_missing({"lab1": b}, [("lab1", "sb-echo-naive"), ("lab1", "sb-echo-uring")]) == (
        "host lab1: its build has no sb-echo-uring (liburing-dev is not installed there; install it, or run "
        "without the servers that need it)")
    assert [p.name for p in deploy.optional_packages(["sb-echo-naive", "sb-echo-uring"])] == ["liburing-dev"]
    assert deploy.optional_packages(["sb-echo-naive"]) == []


@pytest.mark.e2e
def test_the_io_uring_server_is_built_where_liburing_is_installed(programs):
    assert programs.absent == ()
    assert os.access(programs.program("sb-echo-uring"), os.X_OK)


@pytest.mark.unit
def test_the_build_key_names_the_optional_packages():
    assert deploy.build_key("abc", []) == "abc"
    assert deploy.build_key("abc", ["zz-dev", "liburing-dev"]) == "abc+liburing-dev+zz-dev"


@pytest.mark.e2e
def test_a_build_keyed_without_liburing_is_left_alone(tmp_path, monkeypatch):
    # A complete build of the same sources from before liburing-dev was installed (another run may be
    # using it): the build with liburing-dev gets a directory of its own and never touches it.
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPLICEBENCH_CACHE", str(cache))
    digest = deploy.content_hash(REPO)
    older = cache / "build" / deploy.build_key(digest, [])
    older.mkdir(parents=True)
    (older / deploy.COMPLETE).write_text(digest + "\n")
    (older / "sb-echo-naive").write_text("in use by another run\n")
    b = deploy.build(LocalHost(), REPO, extra=deploy.optional_packages(["sb-echo-uring"]), log=lambda m: None)
    assert b.built and b.hash == deploy.build_key(digest, ["liburing-dev"]) and b.absent == ()
    assert b.dir == str(cache / "build" / b.hash) and os.access(b.program("sb-proxy-uring"), os.X_OK)
    assert (older / "sb-echo-naive").read_text() == "in use by another run\n"
    assert sorted(os.listdir(cache / "build")) == sorted([older.name, b.hash])
