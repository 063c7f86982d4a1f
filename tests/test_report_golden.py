"""The run report's HTML, scrubbed of what changes between machines and library versions, against a
checked-in golden file: a change to any template, view or formatter shows up as a reviewable diff.

Scrubbed: embedded SVG charts (matplotlib's output varies between versions; the figure around
each stays, with its id and caption), base64 payloads of the embedded downloads, dates, the
recorded run id, git revisions, version numbers and absolute paths. Everything else, numbers
included, must match. To accept an intended change:

    SPLICEBENCH_UPDATE_GOLDEN=1 python3 -m pytest tests/test_report_golden.py

then review `git diff tests/data/golden/`.
"""

from __future__ import annotations

import difflib
import os
import re
import sys
from pathlib import Path

import pytest

from splicebench.report import run_report as report

sys.path.insert(0, str(Path(__file__).parent))
import recorded  # noqa: E402

pytestmark = pytest.mark.unit

GOLDEN = Path(__file__).parent / "data" / "golden" / "run_report.html"
UPDATE_ENV = "SPLICEBENCH_UPDATE_GOLDEN"
REGENERATE = f"{UPDATE_ENV}=1 python3 -m pytest tests/test_report_golden.py"

# (pattern, replacement), applied in order: paths before versions, so that a version inside a path
# goes with the path.
SCRUBS: list[tuple[re.Pattern[str], str]] = [
    (re.compile(r"<svg\b.*?</svg>", re.S), "<svg><!-- chart --></svg>"),
    (re.compile(r"(data:[\w.+/-]+;base64,)[A-Za-z0-9+/=]+"), r"\1<PAYLOAD>"),
    (re.compile(r"(?<![\w.])/(?:tmp|root|home|work|usr|var|opt|srv|etc|proc|sys|run)(?:/[^\s\"'&<>;,]*)?"), "<PATH>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"), "<DATE>"),
    (re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}"), "<RUN_ID>"),
    (re.compile(r"\b[0-9a-f]{40}\b"), "<GIT_REVISION>"),
    (re.compile(r"(?<![\w.])v?\d+\.\d+\.\d+(?:[-+~:.]?[\w.+~-]+)?"), "<VERSION>"),
]


def scrub(page: str) -> str:
    """The page with every volatile field replaced by a placeholder."""
    for pattern, repl in SCRUBS:
        page = pattern.sub(repl, page)
    return page


def test_scrub_replaces_volatile_fields_only():
    page = ('<figure id="chart-x"><svg width="1">\n<path d="M 0 0"/></svg></figure>'
            '<a href="data:text/csv;base64,QUJD">csv</a> started 2026-11-25T18:53:21.679Z run '
            '20261125T185321Z-f99079 git d7956b7213a7ec62f15691895d5b7a72b6df7fb0 splicebench 0.1.0 '
            'gcc (Debian 12.2.0-14+deb12u1) 12.2.0 /tmp/sb-rec/results results/x/ 547 MiB/s 1.52x [0.947, 2.37]')
    assert scrub(page) == (
        '<figure id="chart-x"><svg><!-- chart --></svg></figure>'
        '<a href="data:text/csv;base64,<PAYLOAD>">csv</a> started <DATE> run '
        '<RUN_ID> git <GIT_REVISION> splicebench <VERSION> '
        'gcc (Debian <VERSION>) <VERSION> <PATH> results/x/ 547 MiB/s 1.52x [0.947, 2.37]')


def test_run_report_matches_the_golden_file(tmp_path):
    out, _, _ = report.render_run(recorded.RUN_A, tmp_path)
    got = scrub(out.read_text())
    if os.environ.get(UPDATE_ENV) == "1":
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(got)
        return
    assert GOLDEN.is_file(), f"{GOLDEN} is missing: create it with {REGENERATE}"
    want = GOLDEN.read_text()
    if got != want:
        diff = "".join(list(difflib.unified_diff(want.splitlines(True), got.splitlines(True),
                                                 "golden", "rendered", n=2))[:80])
        pytest.fail(f"the run report of {recorded.RUN_A.name} differs from {GOLDEN} (scrubbed):\n{diff}\n"
                    f"If the change is intended, regenerate the golden file with\n    {REGENERATE}\n"
                    "and review `git diff tests/data/golden/`.", pytrace=False)
