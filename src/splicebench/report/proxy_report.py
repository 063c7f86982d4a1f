"""Proxy scenarios in the report: every proxy next to the direct row, as ratios to the naive proxy
and to each peer (NGINX, HAProxy), for throughput, latency and CPU per GiB (pure).

A view-model only (numbers formatted by report/format.py); templates/_proxy_ratios.html.j2 prints it.
Ratios are analysis.summarize()'s ratio of medians with its bootstrap CI, computed once per
reference server, in the same host and matrix cell.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from splicebench.analysis import summary as analysis
from splicebench.registry import SERVERS
from splicebench.report import format as fmt
from splicebench.scenario import DIRECT

NAIVE_PROXY = "proxy-naive"

# (metric column, title, what a ratio above 1 means)
TABLES = (
    ("throughput_gib_s", "Throughput", "above 1: more throughput than the reference"),
    ("lat_p50_us", "Latency p50", "below 1: lower latency than the reference"),
    ("proc_cpu_s_per_gib", "Proxy process CPU per GiB", "below 1: the proxy process spends less CPU per GiB"),
    ("host_cpu_s_per_gib", "Host CPU per GiB", "below 1: the whole host spends less CPU per GiB"),
)


@dataclass(frozen=True)
class RatioCell:
    ratio: str  # "1.23x", "=" for the reference itself, "n/a"
    ci: str  # "[1.10, 1.40]", "n/a", or "" for the reference itself


@dataclass(frozen=True)
class RatioRow:
    cell_label: str
    server: str
    kind: str
    median: str
    cells: list[RatioCell]


@dataclass(frozen=True)
class RatioTable:
    id: str
    title: str
    meaning: str
    references: list[str]
    rows: list[RatioRow]


@dataclass(frozen=True)
class ProxyView:
    topology: str
    backend: str
    references: list[str]
    show_cells: bool
    tables: list[RatioTable]
    method: list[str]


def references(servers: list[dict[str, Any]]) -> list[str]:
    """The servers ratios are taken against: the naive proxy, then each peer, in scenario order."""
    labels = [s["label"] for s in servers]
    peers = [s["label"] for s in servers if SERVERS.get(s["name"]) is not None and SERVERS[s["name"]].peer]
    return ([NAIVE_PROXY] if NAIVE_PROXY in labels else []) + peers


def build(manifest: dict[str, Any], samples: pd.DataFrame) -> ProxyView | None:
    """The proxy section of a run's report, or None when the scenario has no backend."""
    sc = manifest.get("scenario") or {}
    backend = sc.get("backend")
    if not backend or samples.empty:
        return None
    refs = references(sc.get("servers") or [])
    if not refs:
        return None
    per_ref = {ref: analysis.summarize(samples, ref) for ref in refs}
    first = per_ref[refs[0]]
    tables = []
    for column, title, meaning in TABLES:
        rows = []
        for i, r in first.iterrows():
            cells = []
            for ref in refs:
                s = per_ref[ref].iloc[i]
                if s["server"] == ref:
                    cells.append(RatioCell("=", ""))
                else:
                    cells.append(RatioCell(fmt.ratio(s[f"{column}_ratio"]),
                                           fmt.ratio_ci(s[f"{column}_ratio_lo"], s[f"{column}_ratio_hi"])))
            label = str(r["cell_label"])
            rows.append(RatioRow("" if label in ("", "nan") else label, str(r["server"]), str(r["server_kind"]),
                                 fmt.metric(column, r[f"{column}_median"]), cells))
        tables.append(RatioTable(column, title, meaning, refs, rows))
    placement = sc.get("placement") or {}
    if isinstance(placement, list):
        placement = placement[0] if placement else {}
    proxy_host = placement.get("server", "local")
    clients = ", ".join(placement.get("clients", ["local"]))
    backend_host = backend.get("host") or proxy_host
    topology = f"client ({clients}) -> proxy ({proxy_host}) -> {backend['name']} echo backend ({backend_host})"
    method = [
        f"Each proxy sample starts the backend ({backend['name']} echo server on {backend_host}) first, then "
        f"the proxy on {proxy_host} with the backend as its upstream, then the clients against the proxy; "
        f"the {DIRECT!r} row runs the same clients against the backend alone. Every byte is verified "
        "end to end, through the proxy and back.",
        "NGINX (stream module, one worker) and HAProxy (mode tcp, one thread; no splice, splice-auto, "
        "and forced splice-request + splice-response) run from generated configs checked with nginx -t "
        "and haproxy -c; their versions are in the manifest. Their CPU is that of their whole process "
        "group (NGINX with several workers: master and workers), read from /proc/PID/stat before they "
        "are stopped.",
        "Server CPU in these rows is the proxy process's (for the direct row: the backend's); host CPU is "
        f"the busy time of the proxy's host ({proxy_host}), which on loopback also includes the client "
        "and the backend. SOCKMAP forwarding runs in softirq and kernel threads, so it shows in host CPU "
        "rather than in the proxy process.",
    ]
    return ProxyView(topology=topology, backend=str(backend["name"]), references=refs,
                     show_cells=first["cell"].nunique() > 1, tables=tables, method=method)
