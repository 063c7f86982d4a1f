"""Run directories: ids, atomic writes, never overwritten, found again."""

from __future__ import annotations

import os
import re
from datetime import datetime, timezone

import pytest

from splicebench.results import rundir as results
from splicebench.errors import ResultsError
from splicebench.util import files
from splicebench.util.files import atomic_write_text
from splicebench.results.metrics import SAMPLE_COLUMNS

pytestmark = pytest.mark.unit


def test_run_id_is_utc_timestamp_plus_suffix():
    rid = results.new_run_id(datetime(2026, 11, 25, 18, 30, 12, tzinfo=timezone.utc), "3fa9c1")
    assert rid == "20261125T183012Z-3fa9c1"
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{6}", results.new_run_id())
    assert results.new_run_id() != results.new_run_id()


def test_atomic_write_leaves_no_temp_files(tmp_path):
    p = tmp_path / "a" / "f.txt"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert os.listdir(p.parent) == ["f.txt"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~umask
    atomic_write_text(p, "three", 0o600)
    assert p.stat().st_mode & 0o777 == 0o600 and p.read_text() == "three"


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    p = tmp_path / "f.txt"
    atomic_write_text(p, "old")
    with pytest.raises(TypeError):
        files.atomic_write_bytes(p, "not bytes")  # type: ignore[arg-type]
    assert p.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]


def test_samples_added_one_by_one_give_the_same_file_as_written_at_once(tmp_path):
    """add_sample renders only the new row; the file is what write_samples writes for all rows, also
    when write_samples (the run's end) and add_sample alternate."""
    rows = [{"sample_id": f"s{i}", "status": "ok", "client_ok": i % 2 == 0, "wall_s": 0.5 + i, "error": "a, \"b\""}
            for i in range(4)]
    rd = results.RunDir(tmp_path, "20260101T000000Z-bbbbbb")
    rd.add_sample(rows[0])
    rd.add_sample(rows[1])
    assert (rd.path / "samples.csv").read_text() == results.samples_csv(rows[:2])
    rd.write_samples(rows[:3])
    rd.add_sample(rows[3])
    assert (rd.path / "samples.csv").read_text() == results.samples_csv(rows)
    assert len(results.load_samples(rd.finish())) == 4


def test_run_dir_is_renamed_when_finished_and_never_overwritten(tmp_path):
    rd = results.RunDir(tmp_path, "20260101T000000Z-aaaaaa")
    assert rd.path.name.startswith(".tmp-20260101T000000Z-aaaaaa-")
    rd.write_manifest({"run_id": "20260101T000000Z-aaaaaa", "status": "complete", "scenario": {}})
    rd.write_samples([{"sample_id": "s1", "status": "ok", "client_ok": True, "wall_s": 0.5}])
    final = rd.finish()
    assert final == tmp_path / "20260101T000000Z-aaaaaa"
    assert not rd.path.exists()
    assert sorted(os.listdir(final)) == ["manifest.json", "raw", "samples.csv"]
    with pytest.raises(ResultsError):
        results.RunDir(tmp_path, "20260101T000000Z-aaaaaa")
    m = results.load_manifest(final)
    assert m["format"] == results.FORMAT_VERSION and m["status"] == "complete"
    df = results.load_samples(final)
    assert list(df.columns) == SAMPLE_COLUMNS
    assert df.loc[0, "client_ok"] is True or df.loc[0, "client_ok"] == True  # noqa: E712
    assert df.loc[0, "wall_s"] == 0.5


def test_find_run(tmp_path):
    for rid in ("20260101T000000Z-aaaaaa", "20260102T000000Z-bbbbbb", "20260102T000000Z-bbbccc"):
        rd = results.RunDir(tmp_path, rid)
        rd.write_manifest({"run_id": rid})
        rd.finish()
    assert results.find_run(tmp_path, None).name == "20260102T000000Z-bbbccc"
    assert results.find_run(tmp_path, "20260101").name == "20260101T000000Z-aaaaaa"
    assert results.find_run(tmp_path, str(tmp_path / "20260101T000000Z-aaaaaa")).name == "20260101T000000Z-aaaaaa"
    with pytest.raises(ResultsError, match="matches 2 runs"):
        results.find_run(tmp_path, "20260102T000000Z-bbb")
    with pytest.raises(ResultsError, match="no run"):
        results.find_run(tmp_path, "1999")


def test_unsupported_format_is_refused(tmp_path):
    (tmp_path / "manifest.json").write_text('{"format": 99}')
    with pytest.raises(ResultsError, match="format 99 is not supported"):
        results.load_manifest(tmp_path)


def test_stale_temp_dirs_are_those_of_dead_writers(tmp_path):
    live = tmp_path / f".tmp-x-{os.getpid()}"
    dead = tmp_path / ".tmp-y-999999999"
    live.mkdir()
    dead.mkdir()
    assert results.stale_temp_dirs(tmp_path) == [dead]
