"""View-models that both reports print: charts, statistics tables, architectures, downloads.

Plain frozen dataclasses whose fields are already-formatted strings (report/format.py), flags and
lists of other views; the templates only loop over them and print. A view used by one report only
lives beside its builder (run_report.ReportView, compare_report.CompareView, proxy_report.ProxyView).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple


@dataclass(frozen=True)
class ChartView:
    id: str
    title: str
    svg: str  # inline SVG made by charts.py: the only value a template prints with |safe
    caption: str


@dataclass(frozen=True)
class ComparisonRowView:
    group: str
    metric: str
    ref: str
    ref_ci: str
    other_label: str
    other: str
    other_ci: str
    ratio: str
    ratio_ci: str
    p: str
    p_raw: str
    delta: str
    verdict: str
    verdict_class: str
    noisy: bool
    n: str


@dataclass(frozen=True)
class PercentileRowView:
    source: str
    group: str
    n_samples: str  # measured samples merged
    n_latencies: str  # latency values in the merged histogram
    p50: str
    p90: str
    p99: str
    p999: str
    emulated: bool


@dataclass(frozen=True)
class NoiseRowView:
    source: str
    group: str
    n: str
    median: str
    median_ci: str
    ci_width: str
    cv: str
    noisy: bool
    warmup: str  # warm-up values (not used)


@dataclass(frozen=True)
class ArchRowView:
    group: str
    n: str
    throughput: str
    throughput_ci: str
    per_core: str
    per_core_ghz: str
    p50: str
    p99: str
    host_cpu: str
    noisy: bool


@dataclass(frozen=True)
class ArchSourceView:
    letter: str
    title: str
    emulated: bool
    emulation_note: str
    cpu: str
    rows: list[ArchRowView]
    chart: ChartView


@dataclass(frozen=True)
class ArchColumnView:
    arch: str
    sources: list[ArchSourceView]


@dataclass(frozen=True)
class ArchView:
    columns: list[ArchColumnView]
    notes: list[str]


@dataclass(frozen=True)
class DownloadView:
    csv_name: str
    csv_href: str
    csv_rows: int
    csv_columns: int
    json_name: str
    json_href: str
    documents: list[tuple[str, str, str]]  # (id, title, text) shown in <details>


class AdaptiveRowView(NamedTuple):
    """A named tuple: a row unpacks as (group, n, CI width, outcome, bound hit)."""

    group: str
    n: str  # ok / measured
    ci_width: str
    outcome: str
    bound_hit: bool


@dataclass(frozen=True)
class AdaptiveView:
    policy: str
    rows: list[AdaptiveRowView]
    any_bound_hit: bool


@dataclass(frozen=True)
class RunSectionsView:
    """The statistics sections of a single run's report (run_sections.build)."""

    comparisons: list[ComparisonRowView]
    baseline: str
    percentiles: list[PercentileRowView]
    noise: list[NoiseRowView]
    adaptive: AdaptiveView | None
    arch: ArchView | None
    downloads: DownloadView
    method: list[str]
    noisy_count: int
    # (server host, cell, server label) -> verdict of its throughput against the baseline
    throughput_verdicts: dict[tuple[str, int, str], str] = field(default_factory=dict)
