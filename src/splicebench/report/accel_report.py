"""Scenarios with `accelerate`: every server, proxy and peer with and without SOCKMAP acceleration
as pairs (pure).

A view-model only (numbers formatted by report/format.py); templates/_accel_pairs.html.j2 prints it.
Each accelerated row ('nginx+sk_msg') is set against its plain row ('nginx') in the same host and
matrix cell: medians, the ratio of medians with its bootstrap CI (analysis.summarize with the plain
row as the reference) and the mark of a Mann-Whitney U test like the summary's ('n.s.', 'few'). The
share of directions redirected comes from the loaders' counters (samples.csv accel_* columns).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd

from splicebench.analysis import stats
from splicebench.analysis import summary as analysis
from splicebench.registry import ACCEL_NONE
from splicebench.report import format as fmt
from splicebench.report.run_sections import MARKS
from splicebench.results.metrics import accel_reasons

LATENCY_COLUMNS = ("lat_p50_us", "lat_p99_us")
CPU_COLUMN = "host_cpu_s_per_gib"


@dataclass(frozen=True)
class PairFigure:
    plain: str
    accel: str
    ratio: str  # accelerated / plain, "n/a" when either is missing
    ci: str
    mark: str  # "n.s.", "few" or ""
    mark_title: str


@dataclass(frozen=True)
class PairRow:
    cell_label: str
    host: str
    server: str  # the plain row's label
    accel_label: str
    figures: list[PairFigure]  # one per AccelView.titles
    share: str  # "100 %" of the directions redirected, or less
    share_note: str  # the directions counted, and why any were not redirected


@dataclass(frozen=True)
class AccelView:
    modes: str
    titles: list[str]
    meanings: list[str]
    show_cells: bool
    show_hosts: bool
    rows: list[PairRow]
    method: list[str]


def build(manifest: dict[str, Any], samples: pd.DataFrame) -> AccelView | None:
    """The acceleration section of a run's report, or None when nothing ran accelerated."""
    if samples.empty or "accelerate" not in samples or not (_modes(samples["accelerate"]) != ACCEL_NONE).any():
        return None
    sc = manifest.get("scenario") or {}
    headline = analysis.headline(str(sc.get("workload", {}).get("type") or samples["workload"].iloc[0]))
    columns = [headline.column, *LATENCY_COLUMNS, CPU_COLUMN]
    metrics = [analysis.METRIC_BY_COLUMN[c] for c in columns]
    derived = analysis.add_derived(samples)
    ok = derived[(derived["phase"] == "measured") & (derived["status"] == "ok")]
    measured = derived[derived["phase"] == "measured"]
    pairs = (measured.sort_values("seq").drop_duplicates(["server"])[["server", "server_kind", "accelerate"]])
    base_of = _base_labels(pairs)
    per_base: dict[str, pd.DataFrame] = {}
    rows: list[PairRow] = []
    for accel_label, base in base_of.items():
        if base not in per_base:
            per_base[base] = analysis.summarize(samples, base, metrics)
        table = per_base[base]
        for _, r in table[table["server"] == accel_label].iterrows():
            plain = table[(table["server"] == base) & (table["server_host"] == r["server_host"])
                          & (table["cell"] == r["cell"])]
            if plain.empty:
                continue
            p = plain.iloc[0]
            sel_a = (ok["server"] == accel_label) & (ok["server_host"] == r["server_host"]) & (ok["cell"] == r["cell"])
            sel_b = (ok["server"] == base) & (ok["server_host"] == r["server_host"]) & (ok["cell"] == r["cell"])
            figures = []
            for m in metrics:
                c = m.column
                test = stats.compare_samples(ok[sel_b][c], ok[sel_a][c], higher_is_better=m.higher_is_better)
                mark, title = MARKS.get(test.verdict, ("", ""))
                figures.append(PairFigure(fmt.metric(c, p[f"{c}_median"]), fmt.metric(c, r[f"{c}_median"]),
                                          fmt.ratio(r[f"{c}_ratio"]), fmt.ratio_ci(r[f"{c}_ratio_lo"], r[f"{c}_ratio_hi"]),
                                          mark, title))
            grp = measured[(measured["server"] == accel_label) & (measured["server_host"] == r["server_host"])
                           & (measured["cell"] == r["cell"])]
            share, note = share_text(grp)
            label = str(r["cell_label"])
            rows.append(PairRow("" if label in ("", "nan") else label, str(r["server_host"]), base, accel_label,
                                figures, share, note))
    modes = sorted({str(m) for m in samples["accelerate"].dropna()} - {ACCEL_NONE})
    return AccelView(
        modes=", ".join(modes),
        titles=[m.title for m in metrics],
        meanings=[("above" if m.higher_is_better else "below") + " 1: better with acceleration" for m in metrics],
        show_cells=derived["cell"].nunique() > 1,
        show_hosts=derived["server_host"].nunique() > 1,
        rows=rows,
        method=METHOD,
    )


def _base_labels(servers: pd.DataFrame) -> dict[str, str]:
    """accelerated label -> the plain label it pairs with ('nginx+sk_msg' -> 'nginx')."""
    plain = set(servers.loc[_modes(servers["accelerate"]) == ACCEL_NONE, "server"])
    out = {}
    for _, s in servers.iterrows():
        mode = str(s["accelerate"]) if isinstance(s["accelerate"], str) else ACCEL_NONE
        base = str(s["server"]).removesuffix(f"+{mode}")
        if mode != ACCEL_NONE and base in plain:
            out[str(s["server"])] = base
    return out


def _modes(column: pd.Series) -> pd.Series:
    """The accelerate column with runs or rows without it (empty cells) as ACCEL_NONE."""
    return column.map(lambda v: v if isinstance(v, str) and v else ACCEL_NONE)


def share_text(grp: pd.DataFrame) -> tuple[str, str]:
    """(share of directions redirected, what was counted and why any were not) over the measured
    samples of one accelerated group; counts are exact, so the share is shown to 0.1 %."""
    def total(col: str) -> int:
        return int(pd.to_numeric(grp[col], errors="coerce").fillna(0).sum()) if col in grp else 0
    cols = {c: total(c) for c in ("accel_dirs_redirected", "accel_dirs_tcp_early", "accel_dirs_tcp_remote",
                                  "accel_insert_failed", "accel_redirect_failed", "accel_no_storage")}
    dirs = cols["accel_dirs_redirected"] + cols["accel_dirs_tcp_early"] + cols["accel_dirs_tcp_remote"]
    if not dirs:
        return fmt.MISSING, "no direction was counted (no sample finished)"
    redirected = cols["accel_dirs_redirected"]
    # Below 100 % never shows as 100: 1,999,999 of 2,000,000 is 99.9 %.
    share = "100 %" if redirected == dirs else fmt.percent(min(redirected / dirs, 0.999))
    note = f"{redirected:,} of {dirs:,} directions redirected from their first byte"
    reasons = accel_reasons(cols)
    failed = int((grp["status"] != "ok").sum())
    if failed:
        reasons.append(f"{failed} sample(s) failed (listed under failures)")
    return share, note + ("; " + "; ".join(reasons) if reasons else "")


METHOD = [
    "An accelerated sample runs sb-accel on every host of the sample first: it creates a cgroup v2 for the "
    "sample, attaches a sockops program that puts every established TCP socket of that cgroup into a "
    "SOCKHASH keyed by its 4-tuple, and an sk_msg program on that map that hands each sendmsg to the peer "
    "socket's receive queue (bpf_msg_redirect_hash with BPF_F_INGRESS), skipping TCP/IP. The client, the "
    "proxy and the backend start inside that cgroup, unmodified; nothing outside it is affected. "
    "Afterwards both programs are detached and the cgroup is removed.",
    "A direction of a connection is redirected from its first byte or never: each socket decides at its "
    "first message whether its peer is in the map and records that in socket storage, so a client that "
    "writes before the server's side of the handshake completed keeps that direction on TCP for every "
    "byte. The share below counts those decisions; every byte is verified end to end either way.",
    "Programs that read with splice() (the splice echo server and proxy, HAProxy with splice, the io_uring "
    "echo in splice mode) or run their own sk_skb verdict (the SOCKMAP servers) cannot be correct with "
    "their sockets in this map, and validation refuses them with the reason.",
]
