"""Run directories: results/<run-id>/ with manifest.json, samples.csv and raw/ (I/O).

A run is written into results/.tmp-<run-id>-<pid>/ and renamed to results/<run-id>/ when it ends
(completed, stopped or interrupted), so results/<run-id>/ is always whole and never overwritten.
Every file is written to a temporary name in its directory and renamed into place.

Format versions (manifest "format"):
  1: first version: manifest.json, samples.csv (columns: metrics.SAMPLE_COLUMNS), raw/<sample-id>.*
  2: CPU over exactly the client's transfer (results/cpu.py): raw/<sample-id>.cpustat.json holds the
     CPU sampler's readings; host_cpu_* and server_cpu_user_s/server_cpu_sys_s cover the window
     between the client's start and end marks instead of the orchestrator's two /proc/stat reads;
     new columns host_cpu_{busy,user,sys,irq,softirq}_unc_s, server_cpu_s, server_cpu_unc_s,
     backend_cpu_s, backend_cpu_unc_s, sampler_cpu_s, cpu_note; host_ctxt dropped.
     Format 1 runs still load (their CPU figures have no uncertainty columns).
     Later additions within format 2 (older runs lack them; readers treat them as missing):
     perf stat columns perf_{server,host}_{syscalls,ctxsw,migrations}[_per_gib] and perf_note
     (results/perf.py), raw/<sample-id>.perf-stat-{server,host}.txt, and for the phase "profile"
     samples of a `profile: true` scenario raw/<sample-id>.perf.data and .profile.folded.
     Later format 2 runs add the columns accelerate and accel_* (SOCKMAP acceleration, metrics.ACCEL_COLUMNS);
     runs without them load as runs without acceleration. Later still, the perf counts come from the
     CPU sampler over exactly the client's transfer (its cpustat.json is sb-cpustat format 2) instead
     of two perf stat processes (no perf-stat files), with the columns perf_{server,host}_*_unc.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

from splicebench.errors import ResultsError
from splicebench.results.metrics import SAMPLE_COLUMNS
from splicebench.util.files import atomic_write_bytes, atomic_write_text
from splicebench.util.procs import pid_alive

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
TMP_PREFIX = ".tmp-"


def new_run_id(now: datetime | None = None, suffix: str | None = None) -> str:
    """UTC timestamp + random suffix, e.g. 20261125T183012Z-3fa9c1; sorts by start time."""
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + "-" + (suffix or secrets.token_hex(3))


def to_json(obj: Any) -> str:
    return json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n"


def samples_csv(rows: Iterable[Mapping[str, Any]], *, header: bool = True) -> str:
    """samples.csv's text for rows (header: with the header line)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=SAMPLE_COLUMNS, lineterminator="\n", extrasaction="raise")
    if header:
        w.writeheader()
    for r in rows:
        w.writerow({k: _cell(r.get(k)) for k in SAMPLE_COLUMNS})
    return buf.getvalue()


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)
    return v


class RunDir:
    """A run being written; `finish()` renames it to its final name."""

    def __init__(self, results_root: Path, run_id: str):
        self.results_root = Path(results_root)
        self.run_id = run_id
        self.final = self.results_root / run_id
        if self.final.exists():
            raise ResultsError(f"{self.final} already exists; runs are never overwritten")
        self.path = self.results_root / f"{TMP_PREFIX}{run_id}-{os.getpid()}"
        (self.path / "raw").mkdir(parents=True)
        self.finished = False
        self._lines: list[str] = []  # samples.csv's rows as added by add_sample, each rendered once

    def write_text(self, rel: str, text: str, *, durable: bool = True) -> str:
        """Write a file of the run (atomically; durable: fsync'd, see atomic_write_bytes)."""
        atomic_write_text(self.path / rel, text, durable=durable)
        return rel

    def write_raw(self, rel: str, content: str | bytes, *, durable: bool = True) -> str:
        """A raw output file: text, or bytes as they are (perf.data); durable as in write_text."""
        if isinstance(content, bytes):
            atomic_write_bytes(self.path / rel, content, durable=durable)
            return rel
        return self.write_text(rel, content, durable=durable)

    def write_json(self, rel: str, obj: Any) -> str:
        return self.write_text(rel, to_json(obj))

    def write_samples(self, rows: Iterable[Mapping[str, Any]]) -> None:
        """Write samples.csv with exactly these rows."""
        rows = list(rows)
        self.write_text("samples.csv", samples_csv(rows))
        self._lines = [samples_csv([r], header=False) for r in rows]

    def add_sample(self, row: Mapping[str, Any]) -> None:
        """Write samples.csv with one more row after those written so far (the earlier rows are not
        rendered again: a run of n samples costs n rows, not n * n / 2)."""
        self._lines.append(samples_csv([row], header=False))
        self.write_text("samples.csv", samples_csv([]) + "".join(self._lines))

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        self.write_json("manifest.json", {"format": FORMAT_VERSION, **manifest})

    def finish(self) -> Path:
        if not self.finished:
            os.rename(self.path, self.final)
            self.finished = True
        return self.final


def load_manifest(run: Path) -> dict[str, Any]:
    try:
        m = json.loads((Path(run) / "manifest.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{run}: no manifest.json (not a run directory)") from None
    except ValueError as e:
        raise ResultsError(f"{run}/manifest.json: not valid JSON: {e}") from None
    if m.get("format") not in READABLE_FORMATS:
        raise ResultsError(f"{run}/manifest.json: format {m.get('format')!r} is not supported "
                           f"(this version reads formats {', '.join(map(str, READABLE_FORMATS))})")
    return m


def load_samples(run: Path):
    """samples.csv as a pandas DataFrame."""
    import pandas as pd

    path = Path(run) / "samples.csv"
    if not path.is_file():
        raise ResultsError(f"{run}: no samples.csv")
    text_cols = ("error", "raw_files", "cell_label", "client_hosts", "sample_id", "server", "server_kind",
                 "server_host", "status", "phase", "workload", "cpu_note")
    df = pd.read_csv(path, dtype={c: str for c in text_cols})
    for col in text_cols:
        if col in df:
            df[col] = df[col].fillna("")
    for col in ("client_ok",):
        if col in df:
            df[col] = df[col].map({True: True, False: False, "true": True, "false": False})
    return df


def list_runs(results_root: Path) -> list[Path]:
    root = Path(results_root)
    if not root.is_dir():
        return []
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                  and (p / "manifest.json").is_file())


def find_run(results_root: Path, ref: str | None) -> Path:
    """A run by path, id, unique id prefix, or 'latest' / None for the newest."""
    if ref and Path(ref).is_dir() and (Path(ref) / "manifest.json").is_file():
        return Path(ref)
    runs = list_runs(results_root)
    if not runs:
        raise ResultsError(f"no runs in {results_root}/ (start one with: invoke run)")
    if ref in (None, "", "latest"):
        return runs[-1]
    hits = [p for p in runs if p.name == ref] or [p for p in runs if p.name.startswith(ref)]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ResultsError(f"no run {ref!r} in {results_root}/ (latest: {runs[-1].name})")
    raise ResultsError(f"{ref!r} matches {len(hits)} runs: {', '.join(p.name for p in hits[:5])}; give more of the id")


def stale_temp_dirs(results_root: Path) -> list[Path]:
    """Temporary run directories whose writing process is gone (left by a killed run)."""
    root = Path(results_root)
    out = []
    if not root.is_dir():
        return out
    for p in root.iterdir():
        if p.is_dir() and p.name.startswith(TMP_PREFIX):
            pid = p.name.rsplit("-", 1)[-1]
            if not (pid.isdigit() and pid_alive(int(pid))):
                out.append(p)
    return sorted(out)
