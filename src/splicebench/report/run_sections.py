"""The statistics sections of a single run's report: each server against the baseline server in
the same host and matrix cell (significance, adaptive repetitions, merged percentiles, noise, the
architecture section when the run's hosts differ in architecture, downloads), and the short mark
each summary row's throughput ratio gets from them.

Builds views from report/views.py with the shared builders of sections.py; the template
_run_sections.html.j2 prints them.
"""

from __future__ import annotations

from dataclasses import replace

import pandas as pd

from splicebench.analysis import stats
from splicebench.analysis.compare import Key, RunData, align, compare_groups, sources
from splicebench.report import sections
from splicebench.report.views import RunSectionsView

# The mark of a summary ratio whose throughput comparison is not a clear difference, and its tooltip.
MARKS = {
    stats.NOT_SIGNIFICANT: ("n.s.", "not significant"),
    stats.TOO_FEW: ("few", "too few samples to tell"),
}


def same_cell(a: Key, b: Key) -> bool:
    """Keys of two servers in the same matrix cell: equal workload parameters and common options.

    Server-specific options (opt_*) differ between servers by nature and are ignored."""
    pa = {c: v for c, v in a.params if not c.startswith("opt_")}
    pb = {c: v for c, v in b.params if not c.startswith("opt_")}
    return pa == pb


def build(run: RunData, baseline: str) -> RunSectionsView:
    """Statistics sections of a single run's report: each server against the baseline server."""
    srcs = sources([run])
    al = align(srcs)
    pairs = []
    for s in srcs:
        for k in al.keys:
            if k.server == baseline:
                continue
            base_key = next((b for b in al.keys if b.server == baseline and same_cell(b, k)), None)
            g = al.groups.get((s.index, k))
            bg = al.groups.get((s.index, base_key)) if base_key else None
            if g is not None and bg is not None:
                pairs.append((k, bg, g))
    comps = compare_groups(pairs)
    # In one run the "other" side is a server, not a run letter.
    many = len(srcs) > 1
    rows = [replace(r, other_label=f"vs {baseline}" + (f" on {c.other.source.host}" if many else ""))
            for r, c in zip(sections.comparison_rows(comps, al.varying), comps)]
    noise = sections.noise_rows(al)
    return RunSectionsView(
        comparisons=rows, baseline=baseline, percentiles=sections.percentile_rows(al), noise=noise,
        adaptive=sections.adaptive_view(run.manifest, al), arch=sections.arch_view(al),
        downloads=sections.downloads([run], f"{run.scenario_name}-{run.run_id}", scenarios=False),
        method=sections.stats_method(), noisy_count=sum(1 for n in noise if n.noisy),
        throughput_verdicts={(c.other.source.host, int(c.other.measured["cell"].iloc[0]), c.key.server): c.test.verdict
                             for c in comps if c.metric.column == "throughput_gib_s" and len(c.other.measured)})


def ratio_marks(x: RunSectionsView, summary: pd.DataFrame) -> list[tuple[str, str]]:
    """For each row of analysis.summary.summarize's table: (mark, tooltip) for its throughput ratio:
    ("n.s.", ...) not significant, ("few", ...) too few samples to tell, ("", "") otherwise."""
    return [MARKS.get(x.throughput_verdicts.get((str(r["server_host"]), int(r["cell"]), str(r["server"]))), ("", ""))
            for _, r in summary.iterrows()]
