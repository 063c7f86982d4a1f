"""Samples for notebooks and downloads: Parquet files, CSV text, data: URIs.

`samples_table` puts the samples of one or more runs in one table, with the derived metric
columns (analysis.add_derived) and the facts of each sample's server host that matter when
runs are mixed (arch, emulated, kernel, CPU model, CPU count), so a notebook can group by them
without reading the manifests. Parquet files carry each run's manifest in the schema metadata
(key b"splicebench.manifests": a JSON list) and are written atomically.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd

from splicebench.analysis import summary as analysis
from splicebench.util.files import atomic_write_bytes

FACT_COLUMNS = ("host_arch", "host_emulated", "host_kernel", "host_cpu_model", "host_cpu_count")
PARQUET_META_KEY = b"splicebench.manifests"
FORMAT_VERSION = 1  # of the exported table: 1 = samples.csv columns + derived metrics + host facts


def _facts_columns(df: pd.DataFrame, hosts: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    from splicebench.analysis.compare import emulation

    def col(fn):
        return [fn(hosts.get(str(h)) or {}) for h in df["server_host"]]

    df = df.copy()
    df["host_arch"] = col(lambda f: f.get("arch"))
    df["host_emulated"] = col(lambda f: emulation(f)[0] if f else None)
    df["host_kernel"] = col(lambda f: f.get("kernel"))
    df["host_cpu_model"] = col(lambda f: f.get("cpu_model"))
    df["host_cpu_count"] = col(lambda f: f.get("cpu_count"))
    return df


def samples_table(runs: Sequence[tuple[Mapping[str, Any], pd.DataFrame]]) -> pd.DataFrame:
    """One table from (manifest, samples) pairs: derived metrics and host facts added, run order kept."""
    frames = []
    for manifest, samples in runs:
        df = samples if "throughput_gib_s" in samples else analysis.add_derived(samples)
        df = _facts_columns(df, manifest.get("hosts") or {})
        df.insert(0, "scenario", (manifest.get("scenario") or {}).get("name"))
        frames.append(df)
    if not frames:
        return pd.DataFrame()
    out = pd.concat(frames, ignore_index=True)
    # Columns read as all-empty come back as float NaN in one run and text in another: give mixed
    # object columns one type so that Parquet accepts them.
    for c in out.columns:
        if out[c].dtype == object:
            kinds = {type(v) for v in out[c] if v is not None and not (isinstance(v, float) and pd.isna(v))}
            if len(kinds) > 1 or kinds & {dict, list}:
                out[c] = out[c].map(lambda v: None if v is None or (isinstance(v, float) and pd.isna(v)) else str(v))
    return out


def parquet_bytes(table: pd.DataFrame, manifests: Sequence[Mapping[str, Any]] = ()) -> bytes:
    """The table as Parquet, each manifest in the file's metadata; same input, same bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    t = pa.Table.from_pandas(table, preserve_index=False)
    meta = dict(t.schema.metadata or {})
    meta[PARQUET_META_KEY] = json.dumps(list(manifests), sort_keys=True, default=str).encode()
    meta[b"splicebench.export_format"] = str(FORMAT_VERSION).encode()
    t = t.replace_schema_metadata(meta)
    buf = io.BytesIO()
    pq.write_table(t, buf, compression="zstd")
    return buf.getvalue()


def write_parquet(path: Path, table: pd.DataFrame, manifests: Sequence[Mapping[str, Any]] = ()) -> Path:
    atomic_write_bytes(Path(path), parquet_bytes(table, manifests))
    return Path(path)


def read_parquet_manifests(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    meta = pq.read_schema(path).metadata or {}
    return json.loads(meta.get(PARQUET_META_KEY, b"[]"))


def csv_text(table: pd.DataFrame) -> str:
    """CSV with a header line, '\\n' line ends, floats in full precision, empty for missing."""
    return table.to_csv(index=False, lineterminator="\n", float_format=None)


def data_uri(data: str | bytes, mime: str) -> str:
    """A data: URI (base64) for a download link inside a self-contained HTML file."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    return f"data:{mime};base64," + base64.b64encode(raw).decode("ascii")


def export_run(results_root: Path, reports_dir: Path, ref: str | None, output: str | None = None) -> Path:
    """Write the samples of one run as Parquet; return the file written."""
    from splicebench.results.rundir import find_run, load_manifest, load_samples

    run = find_run(results_root, ref)
    manifest = load_manifest(run)
    table = samples_table([(manifest, load_samples(run))])
    name = f"{(manifest.get('scenario') or {}).get('name', 'run')}-{manifest.get('run_id', run.name)}.parquet"
    return write_parquet(Path(output) if output else Path(reports_dir) / name, table, [manifest])
