"""Adaptive repetitions: the scenario fields, and real runs that stop at the target or at the bound."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from splicebench import scenario
from splicebench.cli import commands
from splicebench.analysis import compare
from splicebench.report import run_sections
from splicebench.results import rundir as results
from splicebench.errors import ScenarioError

REPO = Path(__file__).resolve().parents[1]
HEAD = "name: t\nservers: [naive, splice]\nworkload: {type: stream, bytes: 1MiB}\n"


@pytest.mark.unit
def test_adaptive_fields_parse_and_round_trip():
    sc = scenario.parse(HEAD + "repetitions: {warmup: 0, min: 6, max: 12, target_ci_width: 0.05}\n")
    assert (sc.warmup, sc.min_measured, sc.measured, sc.target_ci_width) == (0, 6, 12, 0.05)
    assert sc.to_dict()["repetitions"] == {"warmup": 0, "min": 6, "max": 12, "target_ci_width": 0.05}
    assert scenario.validate(sc.to_dict()) == sc
    assert sc.samples_total() == 2 * 12  # planned: the maximum
    d = scenario.parse(HEAD + "repetitions: {target_ci_width: 0.1}\n")
    assert (d.min_measured, d.measured) == (scenario.DEFAULT_ADAPTIVE_MIN, scenario.DEFAULT_ADAPTIVE_MAX)
    fixed = scenario.parse(HEAD + "repetitions: {measured: 4}\n")
    assert fixed.target_ci_width is None and fixed.min_measured is None
    assert fixed.to_dict()["repetitions"] == {"warmup": 1, "measured": 4}


BAD = [
    ("{min: 3}", "x.yaml: repetitions.min: only applies with repetitions.target_ci_width; found 3, allowed: "
                 "measured: N for a fixed count, or min, max and target_ci_width for adaptive repetitions"),
    ("{max: 3}", "x.yaml: repetitions.max: only applies with repetitions.target_ci_width; found 3, allowed: "
                 "measured: N for a fixed count, or min, max and target_ci_width for adaptive repetitions"),
    ("{measured: 5, target_ci_width: 0.05}", "x.yaml: repetitions.measured: does not combine with "
     "target_ci_width; found 5, allowed: min and max bound the measured repetitions when target_ci_width is set"),
    ("{target_ci_width: 0}", "x.yaml: repetitions.target_ci_width: out of range; found 0, allowed: a fraction of "
                             "the median greater than 0 and at most 1, e.g. 0.05 for 5 %"),
    ("{target_ci_width: 1.5}", "x.yaml: repetitions.target_ci_width: out of range; found 1.5, allowed: a fraction "
                               "of the median greater than 0 and at most 1, e.g. 0.05 for 5 %"),
    ("{target_ci_width: '5%'}", "x.yaml: repetitions.target_ci_width: not a number; found '5%', allowed: a "
                                "fraction of the median greater than 0 and at most 1, e.g. 0.05 for 5 %"),
    ("{target_ci_width: 0.1, min: 8, max: 4}", "x.yaml: repetitions.max: smaller than repetitions.min; found 4, "
                                               "allowed: an integer >= 8"),
    ("{target_ci_width: 0.1, min: 0}", "x.yaml: repetitions.min: must be positive; found 0, allowed: an integer >= 1"),
]


@pytest.mark.unit
@pytest.mark.parametrize("reps, message", BAD)
def test_bad_adaptive_fields_get_their_exact_message(reps, message):
    with pytest.raises(ScenarioError) as exc:
        scenario.parse(HEAD + f"repetitions: {reps}\n", "x.yaml")
    assert str(exc.value) == message


@pytest.mark.unit
def test_schema_accepts_adaptive_and_refuses_both_forms():
    import jsonschema  # a test dependency (pyproject [test])

    schema = scenario.json_schema()
    ok = {"servers": ["naive"], "workload": {"type": "stream"},
          "repetitions": {"warmup": 1, "min": 6, "max": 20, "target_ci_width": 0.05}}
    jsonschema.validate(ok, schema)
    bad = {**ok, "repetitions": {"measured": 5, "target_ci_width": 0.05}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(bad, schema)


def _run(tmp_path: Path, reps: str) -> Path:
    sc = tmp_path / "adaptive.yaml"
    sc.write_text("name: adaptive\nservers: [naive, splice]\n"
                  "workload: {type: stream, bytes: 1MiB, chunk: 64KiB}\n" + f"repetitions: {reps}\ntimeout: 30s\n")
    paths = commands.Paths.of(REPO, str(tmp_path / "results"), str(tmp_path / "reports"))
    res = commands.run(paths, str(sc), provision_deps=False, progress_stream=io.StringIO(), log=lambda m: None)
    assert res.status == "complete" and set(res.counts) == {"ok"}, res.counts
    return res.run_dir


@pytest.mark.e2e
def test_run_stops_when_the_target_is_met(tmp_path, use_cache, no_leftovers):
    # A CI as wide as the median itself: met after `min` rounds on a quiet machine, a few rounds
    # later on a busy one (the CI of the median narrows as samples come in), long before 30.
    run_dir = _run(tmp_path, "{warmup: 1, min: 6, max: 30, target_ci_width: 1.0}")
    df = results.load_samples(run_dir)
    measured = df[df["phase"] == "measured"].groupby("server").size().to_dict()
    assert measured["naive"] == measured["splice"]  # the cell stops as a whole, after a full round
    assert 6 <= measured["naive"] < 30
    assert (df["status"] == "ok").all() and len(df) == 2 * (1 + measured["naive"])
    run = compare.load_run(run_dir)
    x = run_sections.build(run, "naive")
    assert x.adaptive is not None and not x.adaptive.any_bound_hit
    assert [r[3] for r in x.adaptive.rows] == ["target met", "target met"]
    page = (tmp_path / "reports" / f"adaptive-{run_dir.name}.html").read_text()
    assert 'id="adaptive"' in page and "maximum number of repetitions was reached" not in page
    assert "6 to 30 measured rounds (adaptive" in page


@pytest.mark.e2e
def test_run_stops_at_the_bound_and_the_report_says_so(tmp_path, use_cache, no_leftovers):
    # 0.01 % is out of reach for loopback throughput: every round up to the maximum runs.
    run_dir = _run(tmp_path, "{warmup: 0, min: 6, max: 7, target_ci_width: 0.0001}")
    df = results.load_samples(run_dir)
    assert df.groupby("server").size().to_dict() == {"naive": 7, "splice": 7}
    page = (tmp_path / "reports" / f"adaptive-{run_dir.name}.html").read_text()
    assert "maximum number of repetitions was reached before the target CI width" in page
    assert page.count("maximum reached: target NOT met") == 2
