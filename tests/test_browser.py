"""Reports opened in a real headless Chromium (Debian's package): what a reader sees.

For run reports (one host; x86_64 and the emulated arm64 guest; a matrix sweep), a comparison of
two runs, a comparison with an emulated aarch64 host and a run with two hosts of different
architectures: no console error, no request other than file: and data:, every chart has a size and
visible pixels in a screenshot, every in-page link has a target and scrolls there, the embedded CSV
is the samples, every table row has as many cells as its header, and the page prints to PDF. For
the run reports with several hosts or a sweep, also: no two labels of a chart overlap (bounding
boxes of the SVG text as the browser lays it out) and no table is wider than its container, at a
laptop width and at A4 print width. The browser runs with a private profile, no name resolves and
any request that is not file: or data: is failed by interception (tests/cdp.py).
"""

from __future__ import annotations

import base64
import io
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from splicebench.analysis import compare
from splicebench.report import compare_report
from splicebench.report import run_report as report

sys.path.insert(0, str(Path(__file__).parent))
import cdp  # noqa: E402
import recorded  # noqa: E402

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def ink(png: bytes) -> tuple[float, int]:
    """(fraction of pixels that are not near-white, number of distinct colours) of a PNG."""
    im = Image.open(io.BytesIO(png)).convert("RGB")
    im.thumbnail((400, 400))
    px = np.asarray(im).reshape(-1, 3)
    dark = int((px.min(axis=1) < 235).sum())
    return dark / max(1, len(px)), len(np.unique(px, axis=0))


@pytest.fixture(scope="module")
def browser():
    assert Path(cdp.CHROMIUM).exists(), f"{cdp.CHROMIUM} missing: `invoke test` installs Debian's chromium package"
    b = cdp.Browser()
    try:
        yield b
    finally:
        b.close()


@pytest.fixture(scope="module")
def pages(tmp_path_factory):
    """The reports under test: {name: (path, expected number of charts, expected CSV rows)}."""
    tmp = tmp_path_factory.mktemp("browser-reports")
    out = {}
    path, _, _ = report.render_run(recorded.RUN_A, tmp / "reports")
    out["run"] = (path, 3, 21)
    path, _, _ = report.render_run(recorded.RUN_SWEEP, tmp / "reports")
    out["run-sweep"] = (path, 3, 72)
    a, b = compare.load_run(recorded.RUN_A), compare.load_run(recorded.RUN_B)
    path, _, _ = compare_report.write_compare([a, b], tmp / "reports", parquet=False)
    out["compare"] = (path, 3, 42)
    emu = compare.load_run(recorded.as_other_arch(recorded.RUN_B, tmp / "runs", recorded.ARM_EMULATED,
                                                  "20261125T185330Z-emu000"))
    path, _, _ = compare_report.write_compare([a, emu], tmp / "reports", parquet=False)
    out["compare-emulated"] = (path, 3 + 2, 42)
    two = compare.load_run(recorded.two_host_run(recorded.RUN_A, recorded.RUN_B, tmp / "runs",
                                                 "20261125T190000Z-multi0"))
    view = compare_report.build_compare_view([two])
    path = tmp / "reports" / "two-hosts.html"
    path.write_text(compare_report.render_compare(view))
    out["two-hosts"] = (path, 3 + 2, 42)
    path, _, _ = report.render_run(recorded.RUN_MULTI, tmp / "reports")
    # Stream with one connection per sample: too few latency values for a percentile chart.
    out["run-two-architectures"] = (path, 2 + 2, 42)
    yield out
    shutil.rmtree(tmp, ignore_errors=True)


CHARTS_JS = """Array.from(document.querySelectorAll('figure.chart')).map(f => {
  const s = f.querySelector('svg'); const r = s ? s.getBoundingClientRect() : null;
  return {id: f.id, w: r ? r.width : 0, h: r ? r.height : 0, x: r ? r.left + window.scrollX : 0,
          y: r ? r.top + window.scrollY : 0};
})"""

LINKS_JS = """Array.from(document.querySelectorAll('a[href^="#"]')).map(a => {
  const id = a.getAttribute('href').slice(1);
  return {href: a.getAttribute('href'), target: !!document.getElementById(id)};
})"""

TABLES_JS = """Array.from(document.querySelectorAll('table')).map(t => {
  const width = row => Array.from(row.cells).reduce((n, c) => n + (c.colSpan || 1), 0);
  const head = t.tHead ? width(t.tHead.rows[0]) : null;
  const body = t.tBodies.length ? Array.from(t.tBodies[0].rows) : [];
  return {head: head, rows: body.length, widths: body.map(width),
          bad: body.filter(r => /(^|\\s)(nan|None|undefined|NaN)(\\s|$)/.test(r.innerText)).map(r => r.innerText)};
})"""


# Pairs of text elements of one chart whose boxes intersect by more than half a pixel both ways.
OVERLAPS_JS = """Array.from(document.querySelectorAll('figure.chart svg')).flatMap(svg => {
  const boxes = Array.from(svg.querySelectorAll('text')).filter(t => t.textContent.trim())
    .map(t => ({text: t.textContent.trim(), r: t.getBoundingClientRect()}))
    .filter(b => b.r.width > 0 && b.r.height > 0);
  const out = [];
  for (let i = 0; i < boxes.length; i++) for (let j = i + 1; j < boxes.length; j++) {
    const a = boxes[i].r, b = boxes[j].r;
    const w = Math.min(a.right, b.right) - Math.max(a.left, b.left);
    const h = Math.min(a.bottom, b.bottom) - Math.max(a.top, b.top);
    if (w > 0.5 && h > 0.5) out.push([svg.closest('figure').id, boxes[i].text, boxes[j].text]);
  }
  return out;
})"""

# Tables wider than the element that holds them (they would scroll sideways or be cut off).
WIDE_TABLES_JS = """Array.from(document.querySelectorAll('table')).map(t => ({
  id: (t.closest('section') || {}).id, width: t.getBoundingClientRect().width,
  room: t.parentElement.clientWidth})).filter(x => x.width > x.room + 1)"""

READABLE = ("run-sweep", "run-two-architectures")


@pytest.mark.parametrize("name", ["run", "run-sweep", "compare", "compare-emulated", "two-hosts", "run-two-architectures"])
def test_report_in_chromium(browser, pages, name, tmp_path):
    path, n_charts, csv_rows = pages[name]
    page = browser.open_page(1280, 900)
    try:
        page.navigate(path.as_uri())
        browser.pump(0.3)

        # Nothing but the file itself and data: URIs is requested; nothing goes wrong.
        reqs = page.requests()
        assert reqs and all(u.startswith(("file:", "data:")) for u in reqs), reqs
        assert page.errors() == []

        # Every chart has a size, and its part of a screenshot is not blank.
        chart_boxes = page.evaluate(CHARTS_JS)
        assert len(chart_boxes) == n_charts, chart_boxes
        for c in chart_boxes:
            assert c["w"] > 150 and c["h"] > 100, c
            frac, colours = ink(page.screenshot({"x": c["x"], "y": c["y"], "width": c["w"], "height": c["h"]}))
            assert frac > 0.02 and colours > 8, (c["id"], frac, colours)
        full = page.screenshot(full_page=True)
        frac, colours = ink(full)
        assert frac > 0.03 and colours > 20
        (tmp_path / f"{name}.png").write_bytes(full)

        # In-page links have targets, and following one scrolls there.
        links = page.evaluate(LINKS_JS)
        assert all(x["target"] for x in links), links
        if name.startswith("compare"):
            assert {x["href"] for x in links} >= {"#sources", "#facts", "#comparison", "#statistics", "#data", "#method"}
            page.evaluate("document.querySelector('nav.toc a[href=\"#method\"]').click()")
            assert page.evaluate("location.hash") == "#method"
            top = page.evaluate("document.getElementById('method').getBoundingClientRect().top")
            assert 0 <= top < page.evaluate("window.innerHeight")
            assert page.evaluate("window.scrollY") > 500

        # The download link carries the samples.
        href = page.evaluate("document.getElementById('download-csv').getAttribute('href')")
        assert href.startswith("data:text/csv;base64,")
        table = pd.read_csv(io.StringIO(base64.b64decode(href.split(",", 1)[1]).decode()))
        assert len(table) == csv_rows and "throughput_gib_s" in table
        assert page.evaluate("document.getElementById('download-csv').download").endswith("-samples.csv")

        # Tables: a header and, in every row, as many cells as header columns; no raw nan/None.
        tables = page.evaluate(TABLES_JS)
        assert len(tables) >= 4
        for t in tables:
            assert t["rows"] > 0, t
            if t["head"] is not None:
                assert set(t["widths"]) == {t["head"]}, t
            assert t["bad"] == [], t

        # Several hosts or a sweep: charts and tables stay readable at a laptop's width.
        if name in READABLE:
            assert page.evaluate(OVERLAPS_JS) == []
            assert page.evaluate(WIDE_TABLES_JS) == []

        if name in ("compare-emulated", "two-hosts", "run-two-architectures"):
            text = page.evaluate("document.getElementById('architectures').innerText")
            assert "EMULATED: not native performance" in text and "x86_64" in text and "aarch64" in text

        # Printing: a PDF of several pages, charts still laid out under print media.
        pdf = page.pdf()
        assert pdf.startswith(b"%PDF") and pdf.count(b"/Type /Page") >= 2
        page.call("Emulation.setEmulatedMedia", {"media": "print"})
        page.call("Emulation.setDeviceMetricsOverride", {"width": 794, "height": 1123, "deviceScaleFactor": 1,
                                                         "mobile": False})  # A4 at 96 dpi
        assert all(c["w"] > 100 for c in page.evaluate(CHARTS_JS))
        # Printed, every table fits the page: nothing is cut off at the right edge.
        widths = page.evaluate("Array.from(document.querySelectorAll('table'))"
                               ".map(t => [t.scrollWidth, document.body.clientWidth])")
        assert all(w <= body + 1 for w, body in widths), widths
        if name in READABLE:  # and printed on A4
            assert page.evaluate(WIDE_TABLES_JS) == []
            assert page.evaluate(OVERLAPS_JS) == []
        page.call("Emulation.setEmulatedMedia", {"media": ""})
        assert page.errors() == []
    finally:
        page.call("Page.close")
