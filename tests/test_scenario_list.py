"""`invoke scenarios`: every shipped scenario is valid; the ones for SSH hosts say which hosts they need."""

from pathlib import Path

import pytest

from splicebench.cli import commands

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.unit


def test_every_shipped_scenario_is_valid():
    rows = commands.list_scenarios(commands.Paths.of(ROOT))
    assert len(rows) >= 8
    invalid = [(name, desc) for name, info, desc in rows if info == "INVALID"]
    assert invalid == []


def test_scenarios_for_inventory_hosts_name_them():
    rows = {name: info for name, info, _ in commands.list_scenarios(commands.Paths.of(ROOT))}
    assert rows["lab-2host"].endswith("needs --hosts with lab1, lab2")
    assert "needs --hosts" not in rows["loopback-100mib"]


def test_a_broken_scenario_still_reports_its_error(tmp_path):
    (tmp_path / "scenarios").mkdir()
    (tmp_path / "scenarios" / "bad.yaml").write_text("name: bad\nservers: [naive]\nworkload: {type: warp}\n")
    rows = commands.list_scenarios(commands.Paths.of(tmp_path))
    assert rows[0][0] == "bad" and rows[0][1] == "INVALID"
    assert "workload.type" in rows[0][2]
