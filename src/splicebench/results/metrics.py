"""Raw program output -> numbers (pure): /proc/stat deltas, client and server JSON, one tidy row.

Parsers are separate from the code that runs programs, and are tested on real captured output.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from splicebench.registry import COMMON_SERVER_OPTIONS, SERVERS, WORKERS, WORKLOAD_FIELDS
from splicebench.results.perf import stat_columns

GIB = float(1 << 30)
PROC_STAT_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


@dataclass(frozen=True)
class ProcStat:
    """The aggregate 'cpu' line (clock ticks) and the context-switch counter of /proc/stat."""

    cpu: dict[str, int]
    ctxt: int


def parse_proc_stat(text: str) -> ProcStat:
    cpu: dict[str, int] = {}
    ctxt = 0
    for line in text.splitlines():
        parts = line.split()
        if not parts:
            continue
        if parts[0] == "cpu":
            cpu = {name: int(v) for name, v in zip(PROC_STAT_FIELDS, parts[1:])}
        elif parts[0] == "ctxt":
            ctxt = int(parts[1])
    if not cpu:
        raise ValueError("no aggregate 'cpu' line in /proc/stat")
    return ProcStat(cpu, ctxt)


def host_cpu_delta(before: ProcStat, after: ProcStat, clk_tck: int) -> dict[str, float]:
    """Whole-host CPU seconds (summed over all CPUs) spent between two /proc/stat readings."""
    d = {k: (after.cpu.get(k, 0) - before.cpu.get(k, 0)) / clk_tck for k in PROC_STAT_FIELDS}
    busy = d["user"] + d["nice"] + d["system"] + d["irq"] + d["softirq"] + d["steal"]
    return {
        "host_cpu_user_s": d["user"] + d["nice"],
        "host_cpu_sys_s": d["system"],
        "host_cpu_irq_s": d["irq"],
        "host_cpu_softirq_s": d["softirq"],
        "host_cpu_steal_s": d["steal"],
        "host_cpu_idle_s": d["idle"] + d["iowait"],
        "host_cpu_busy_s": busy,
        "host_ctxt": after.ctxt - before.ctxt,
    }


def parse_client_output(stdout: str) -> dict[str, Any] | None:
    """The client's JSON object (the last stdout line that is one), or None."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict):
                return obj
    try:
        obj = json.loads(stdout)
        return obj if isinstance(obj, dict) else None
    except ValueError:
        return None


def server_events(stdout: str) -> dict[str, dict[str, Any]]:
    """event name -> JSON object for each event line the server printed (first one wins)."""
    events: dict[str, dict[str, Any]] = {}
    for line in stdout.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("event"), str):
            events.setdefault(obj["event"], obj)
    return events


def hist_percentile(buckets: Sequence[Sequence[float]], q: float) -> float:
    """q-quantile (0..1) from [lo, hi, count] buckets: the midpoint of the bucket holding it."""
    rows = sorted((float(lo), float(hi), int(n)) for lo, hi, n in buckets if int(n) > 0)
    total = sum(n for _, _, n in rows)
    if total == 0:
        return math.nan
    rank = q * total
    seen = 0
    for lo, hi, n in rows:
        seen += n
        if seen >= rank:
            return (lo + hi) / 2
    return (rows[-1][0] + rows[-1][1]) / 2


def merge_hist(hists: Sequence[Sequence[Sequence[float]]]) -> list[list[float]]:
    acc: dict[tuple[float, float], int] = {}
    for h in hists:
        for lo, hi, n in h:
            acc[(lo, hi)] = acc.get((lo, hi), 0) + int(n)
    return [[lo, hi, n] for (lo, hi), n in sorted(acc.items())]


LAT_KEYS = ("count", "min", "mean", "p50", "p90", "p99", "p999", "max")


def client_metrics(clients: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """Metrics of one sample's clients (one per client host), merged.

    One client: its own numbers. Several (run concurrently): bytes, connections and goodput add up,
    wall time is the longest, latency percentiles come from the merged histograms."""
    present = [c for c in clients if c]
    out: dict[str, Any] = {}
    if not present:
        return out

    def total(key: str) -> Any:
        vals = [c.get(key) for c in present]
        return sum(vals) if all(isinstance(v, (int, float)) for v in vals) else None

    out["client_ok"] = all(c.get("ok") is True for c in present) and len(present) == len(clients)
    for key in ("conns_ok", "conns_failed", "bytes_sent", "bytes_verified", "bytes_expected",
                "errors_total", "goodput_bytes_per_s", "cpu_user_s", "cpu_sys_s"):
        out_key = {"errors_total": "client_errors_total", "cpu_user_s": "client_cpu_user_s",
                   "cpu_sys_s": "client_cpu_sys_s"}.get(key, key)
        out[out_key] = total(key)
    walls = [c.get("wall_s") for c in present if isinstance(c.get("wall_s"), (int, float))]
    out["wall_s"] = max(walls) if walls else None
    threads = [len(c["threads"]) for c in present if isinstance(c.get("threads"), list)]
    out["client_threads"] = sum(threads) if threads else None
    if len(present) == 1:
        lat = present[0].get("latency_ns") or {}
        for k in LAT_KEYS:
            out[f"lat_{k}_ns"] = lat.get(k)
    else:
        lats = [c.get("latency_ns") or {} for c in present]
        hist = merge_hist([(c.get("hist") or {}).get("buckets", []) for c in present])
        counts = [x.get("count") or 0 for x in lats]
        n = sum(counts)
        out["lat_count_ns"] = n
        mins = [x["min"] for x in lats if x.get("min") is not None]
        maxs = [x["max"] for x in lats if x.get("max") is not None]
        out["lat_min_ns"] = min(mins) if mins else None
        out["lat_max_ns"] = max(maxs) if maxs else None
        means = [(x.get("mean") or 0) * c for x, c in zip(lats, counts)]
        out["lat_mean_ns"] = sum(means) / n if n else None
        for k, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99), ("p999", 0.999)):
            out[f"lat_{k}_ns"] = hist_percentile(hist, q) if hist else None
    out["lat_count"] = out.pop("lat_count_ns", None)
    out.update(tcp_info_metrics([c.get("tcp_info") for c in present]))
    return out


# What TCP_INFO said of the connections as they ended (sb-client's "tcp_info"): retransmits summed,
# the rest the median over connections (several clients: the largest of their medians).
TCP_COLUMNS = {"tcp_rtt_us": "rtt_us", "tcp_rttvar_us": "rttvar_us", "tcp_snd_cwnd": "snd_cwnd",
               "tcp_delivery_rate_bytes_per_s": "delivery_rate_bytes_per_s"}


def tcp_info_metrics(infos: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """samples.csv's tcp_* columns from the clients' tcp_info objects (None: a client without one)."""
    present = [t for t in infos if isinstance(t, Mapping)]
    if not present:
        return {}
    out: dict[str, Any] = {"tcp_conns": sum(int(t.get("conns") or 0) for t in present),
                           "tcp_retrans": sum(int(t.get("retrans_total") or 0) for t in present),
                           "tcp_conns_with_retrans": sum(int(t.get("conns_with_retrans") or 0) for t in present)}
    for col, key in TCP_COLUMNS.items():
        meds = [t[key]["p50"] for t in present if isinstance(t.get(key), Mapping)]
        out[col] = max(meds) if meds else None
    return out


def loaded_metrics(loaded: Sequence[Mapping[str, Any] | None], unloaded: Sequence[Mapping[str, Any] | None],
                   bulk: Sequence[Mapping[str, Any] | None]) -> dict[str, Any]:
    """latency-under-load: the ping-pong clients' latency without the bulk load (unloaded_*), the
    bulk clients' goodput, and bytes and connections of all the sample's clients together (what the
    server echoed: CPU and perf figures per GiB divide by them); lat_* stay the loaded clients'."""
    out: dict[str, Any] = {}
    alone = client_metrics(unloaded)
    for k in ("p50", "p90", "p99"):
        out[f"unloaded_lat_{k}_ns"] = alone.get(f"lat_{k}_ns")
    out["unloaded_lat_count"] = alone.get("lat_count")
    load = client_metrics(bulk)
    out["bulk_goodput_bytes_per_s"] = load.get("goodput_bytes_per_s")
    out["bulk_bytes_verified"] = load.get("bytes_verified")
    every = [*loaded, *unloaded, *bulk]
    both = client_metrics(every)
    for key in ("conns_ok", "conns_failed", "bytes_sent", "bytes_verified", "bytes_expected"):
        out[key] = both.get(key)
    out["client_ok"] = both.get("client_ok")
    return out


def mismatch_source(mm: Mapping[str, Any]) -> str:
    """Where the wrong bytes of a mismatch came from (sb-client's `source`), as a clause for its line:
    the same connection's bytes from further on (lost bytes) or from earlier (repeated ones), in step
    again after a few changed bytes, another connection's bytes, or nobody's."""
    src = mm.get("source")
    if not src:
        return "; the bytes are from no connection's stream nearby"
    at, conn, off = src["at"], src["conn"], src["offset"]
    wrong = at - mm["offset"]
    here = f"{wrong:,} wrong byte{'s' if wrong != 1 else ''}, then " if wrong else ""
    if conn != mm["conn"]:
        what = f"connection {conn}'s bytes from offset {off:,}"
    elif off > at:
        what = f"its bytes from offset {off:,} ({off - at:,} bytes lost)"
    elif off < at:
        what = f"its bytes from offset {off:,} again ({at - off:,} bytes repeated)"
    else:
        what = "in step again"
    return f"; {here}{what}, {src['bytes']:,} bytes matching"


def client_failure(client: Mapping[str, Any] | None, exit_code: int | None, stderr: str) -> str | None:
    """Why a client run failed, in one line, or None if it succeeded."""
    if client is not None and client.get("ok") is True and exit_code == 0:
        return None
    reasons = []
    if exit_code is None:
        reasons.append("did not finish in time (killed)")
    elif exit_code < 0:
        reasons.append(f"killed by signal {-exit_code}")
    elif exit_code != 0:
        reasons.append(f"exit code {exit_code}")
    if client is None:
        reasons.append("no JSON output")
    else:
        mm = client.get("mismatch")
        if mm:
            reasons.append(f"data mismatch on connection {mm.get('conn')} at offset {mm.get('offset')} "
                           f"(expected {mm.get('expected')}, got {mm.get('got')}"
                           f"{mismatch_source(mm)})")
        errs = client.get("errors") or []
        if errs:
            e = errs[0]
            more = client.get("errors_total", len(errs)) - 1
            reasons.append(f"connection {e.get('conn')}: {e.get('error')} at offset {e.get('offset')}"
                           + (f" (+{more} more)" if more > 0 else ""))
        if client.get("ok") is False and not mm and not errs:
            reasons.append("reported ok=false")
    line = next((ln.strip() for ln in stderr.splitlines() if ln.strip()), "")
    if line:
        reasons.append(f"stderr: {line}")
    return "; ".join(reasons) or "failed"


# sb-accel's counters (bpf/counters.h, accel_counter) -> samples.csv columns.
ACCEL_COUNTER_COLUMNS = {
    "sockets": "accel_sockets",
    "insert_failed": "accel_insert_failed",
    "dirs_redirected": "accel_dirs_redirected",
    "dirs_tcp_early": "accel_dirs_tcp_early",
    "dirs_tcp_remote": "accel_dirs_tcp_remote",
    "msgs_redirected": "accel_msgs",
    "bytes_redirected": "accel_bytes",
    "redirect_failed": "accel_redirect_failed",
    "no_storage": "accel_no_storage",
}
# accel_hosts: the hosts whose loaders are counted; accel_note: why anything was not redirected.
ACCEL_COLUMNS = ["accel_hosts", *ACCEL_COUNTER_COLUMNS.values(), "accel_note"]


def accel_reasons(cols: Mapping[str, Any]) -> list[str]:
    """Why directions or messages were not redirected, one phrase per non-zero counter."""
    n = {k: int(cols.get(k) or 0) for k in ACCEL_COUNTER_COLUMNS.values()}
    out = []
    if n["accel_dirs_tcp_early"]:
        out.append(f"{n['accel_dirs_tcp_early']} direction(s) by TCP: the peer socket was not in the map yet "
                   "at the first send (handshake not complete on the passive side)")
    if n["accel_dirs_tcp_remote"]:
        out.append(f"{n['accel_dirs_tcp_remote']} direction(s) by TCP: the peer is not on this host's map")
    if n["accel_insert_failed"]:
        out.append(f"{n['accel_insert_failed']} socket(s) not inserted (map full)")
    if n["accel_redirect_failed"]:
        out.append(f"{n['accel_redirect_failed']} message(s) dropped: the peer socket left the map")
    if n["accel_no_storage"]:
        out.append(f"{n['accel_no_storage']} message(s) dropped: no socket storage for the decision")
    return out


# Columns of samples.csv, in order. Parameters first, then status, then metrics.
OPTION_COLUMNS = sorted({f"opt_{k}" for s in SERVERS.values() for k in s.options})
# `workers` holds a matrix's workers value in every row of its cell (also for servers without worker
# threads, which keep one); opt_workers what the server was actually given.
PARAM_COLUMNS = ["workload", *WORKLOAD_FIELDS, *COMMON_SERVER_OPTIONS, WORKERS, *OPTION_COLUMNS]
SAMPLE_COLUMNS = [
    "run_id", "sample_id", "seq", "cell", "cell_label", "round", "phase", "repetition",
    "server", "server_kind", "server_host", "client_hosts", "accelerate",
    *PARAM_COLUMNS,
    "status", "error", "started_at", "duration_s",
    "client_ok", "conns_ok", "conns_failed", "bytes_sent", "bytes_verified", "bytes_expected",
    "wall_s", "goodput_bytes_per_s",
    "lat_count", "lat_min_ns", "lat_mean_ns", "lat_p50_ns", "lat_p90_ns", "lat_p99_ns", "lat_p999_ns", "lat_max_ns",
    "client_errors_total", "client_cpu_user_s", "client_cpu_sys_s", "client_threads",
    "tcp_conns", "tcp_retrans", "tcp_conns_with_retrans", "tcp_rtt_us", "tcp_rttvar_us", "tcp_snd_cwnd",
    "tcp_delivery_rate_bytes_per_s",
    # latency-under-load: lat_* above are of the ping-pong clients run while the bulk streams ran;
    # these of the same clients run alone just before, and the bulk streams' own goodput.
    "unloaded_lat_count", "unloaded_lat_p50_ns", "unloaded_lat_p90_ns", "unloaded_lat_p99_ns",
    "bulk_goodput_bytes_per_s", "bulk_bytes_verified",
    "server_pid", "server_exit", "server_connections", "server_bytes_in", "server_bytes_out", "server_errors",
    "server_worker_connections",
    "server_cpu_user_s", "server_cpu_sys_s", "server_life_cpu_user_s", "server_life_cpu_sys_s",
    # CPU over the client's transfer window (results/cpu.py): *_unc_s is the half-width of the range
    # the true value lies in. host_interval_s: the window's length.
    "host_interval_s", "host_cpu_user_s", "host_cpu_sys_s", "host_cpu_irq_s", "host_cpu_softirq_s",
    "host_cpu_steal_s", "host_cpu_idle_s", "host_cpu_busy_s",
    "host_cpu_busy_unc_s", "host_cpu_user_unc_s", "host_cpu_sys_unc_s", "host_cpu_irq_unc_s",
    "host_cpu_softirq_unc_s", "server_cpu_s", "server_cpu_unc_s", "backend_cpu_s", "backend_cpu_unc_s",
    "sampler_cpu_s", "cpu_note",
    # perf counts over the client's transfer (the CPU sampler, results/cpu.perf_counts): counts, their
    # uncertainty and per GiB verified, of the server's processes and of the whole host; perf_note
    # says why they are missing where they are.
    *stat_columns(), "perf_note",
    # SOCKMAP acceleration (accelerate: sk_msg): the loaders' counters summed over the sample's hosts.
    *ACCEL_COLUMNS,
    "raw_files",
]


def byte_balance(values: Mapping[str, Any]) -> str | None:
    """For a failed echo sample: an echo server that counted more bytes in than its clients sent was
    handed some bytes twice (by the kernel: its reads, or a SOCKMAP verdict program's skbs), which
    tells a repeat on the way in from one on the way out. None when the counts do not show that."""
    got, sent = values.get("server_bytes_in"), values.get("bytes_sent")
    if isinstance(got, int) and isinstance(sent, int) and got > sent:
        return f"the server counted {got - sent:,} bytes in more than the clients sent"
    return None


def server_metrics(events: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    ready = events.get("ready") or {}
    summary = events.get("summary") or {}
    return {
        "server_pid": ready.get("pid"),
        "server_connections": summary.get("connections"),
        "server_bytes_in": summary.get("bytes_in"),
        "server_bytes_out": summary.get("bytes_out"),
        "server_errors": summary.get("errors"),
        "server_life_cpu_user_s": summary.get("cpu_user_s"),
        "server_life_cpu_sys_s": summary.get("cpu_sys_s"),
        # Connections each worker thread accepted, e.g. "510+490" (servers with --workers).
        "server_worker_connections": "+".join(str(w.get("connections")) for w in summary["workers"])
        if isinstance(summary.get("workers"), list) else None,
    }


@dataclass
class Row:
    """Builder for one samples.csv row; unknown columns are refused so the format stays fixed."""

    values: dict[str, Any] = field(default_factory=dict)

    def set(self, **kw: Any) -> "Row":
        for k, v in kw.items():
            if k not in SAMPLE_COLUMNS:
                raise KeyError(f"not a samples.csv column: {k}")
            self.values[k] = v
        return self

    def update(self, d: Mapping[str, Any]) -> "Row":
        return self.set(**dict(d))

    def as_dict(self) -> dict[str, Any]:
        return {c: self.values.get(c) for c in SAMPLE_COLUMNS}
