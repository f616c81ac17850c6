"""The Grafana dashboards and alert rules as files: importable shape, stable identity, and only real metric names.

Whether every query returns data is proven on a real Prometheus in test_prometheus_e2e.py; here is what can be
checked without one, plus promtool's own rule check and the rules' unit tests.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from farm.metrics import names
from tests.conftest import ROOT, require_tool, write
from tests.prom_fixtures import PROMTOOL

DASHBOARDS = ROOT / "dashboards"
UIDS = {  # stable: links, provisioning and bookmarks point at these; never change one
    "fleet.json": "codec-farm-fleet",
    "performance.json": "codec-farm-performance",
    "quality.json": "codec-farm-quality",
    "release.json": "codec-farm-release",
}
SCHEMA_VERSION = 42  # see docs/prometheus.md (Grafana's classic JSON model)
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
PANEL_TYPES = {"stat", "timeseries", "table", "state-timeline"}
METRIC = re.compile(r"\bfarm_[a-z_]+")


def boards() -> dict[str, dict[str, Any]]:
    return {path.name: json.loads(path.read_text()) for path in sorted(DASHBOARDS.glob("*.json"))}


def exprs(board: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in board["panels"] for t in p["targets"]]


def test_the_four_boards_with_stable_uids_and_the_current_schema() -> None:
    found = boards()
    assert {name: b["uid"] for name, b in found.items()} == UIDS
    for name, board in found.items():
        assert board["schemaVersion"] == SCHEMA_VERSION, name
        assert board.get("id") is None, f"{name}: an instance's numeric id makes the import collide"
        assert board["title"].startswith("codec-farm / ") and "codec-farm" in board["tags"]


@pytest.mark.parametrize("name", sorted(UIDS))
def test_variables_datasource_and_panels(name: str) -> None:
    board = boards()[name]
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    for var in ("device", "bundle", "suite"):
        v = variables[var]
        assert v["type"] == "query" and v["datasource"] == DATASOURCE and v["multi"] and v["includeAll"]
        assert v["query"]["query"] == v["definition"] and v["query"]["query"].startswith("label_values(")
        assert any(f"${var}" in e for e in exprs(board)), f"{name}: variable {var} is used by no panel"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        where = f"{name} / {panel['title']}"
        assert panel["type"] in PANEL_TYPES, where
        assert panel["datasource"] == DATASOURCE and panel["targets"], where
        assert panel["description"], f"{where}: say what the panel shows and how it is aggregated"
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0, where
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), where
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, where


def test_queries_and_rules_name_only_metrics_the_exporter_emits() -> None:
    known = names.sample_names()
    rules = yaml.safe_load((DASHBOARDS / "alerts.yml").read_text())
    rule_exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    used: set[str] = set()
    for expr in [e for b in boards().values() for e in exprs(b)] + rule_exprs:
        found = set(METRIC.findall(expr))
        assert found <= known, f"unknown metric {found - known} in {expr}"
        used |= found
    # and every family is on some board or in some rule: an exported metric nobody looks at is noise
    assert {spec.name for spec in names.ALL_SPECS} <= used


def test_promtool_checks_the_rules_and_runs_their_unit_tests() -> None:
    require_tool(PROMTOOL, "prometheus")
    check = subprocess.run([str(PROMTOOL), "check", "rules", str(DASHBOARDS / "alerts.yml")], capture_output=True,
                           text=True, timeout=60)  # fmt: skip
    assert check.returncode == 0 and "SUCCESS: 5 rules found" in check.stdout, check.stdout + check.stderr
    unit = subprocess.run([str(PROMTOOL), "test", "rules", "alerts.test.yml"], cwd=DASHBOARDS, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert unit.returncode == 0 and "SUCCESS" in unit.stdout, unit.stdout + unit.stderr


def test_the_rule_unit_tests_catch_a_wrong_threshold(tmp_path: Path) -> None:
    """The unit tests would fail for a rule that fires too late or never: their SUCCESS above means something."""
    require_tool(PROMTOOL, "prometheus")
    rules = (DASHBOARDS / "alerts.yml").read_text()
    assert ") < 0.9" in rules and "for: 5m" in rules
    (tmp_path / "alerts.yml").write_text(rules.replace(") < 0.9", ") < 0.7"))
    (tmp_path / "alerts.test.yml").write_text((DASHBOARDS / "alerts.test.yml").read_text())
    unit = subprocess.run([str(PROMTOOL), "test", "rules", "alerts.test.yml"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)  # fmt: skip
    assert unit.returncode != 0 and "FarmFpsRegression" in unit.stdout + unit.stderr


def test_the_readme_prometheus_config_is_valid(tmp_path: Path) -> None:
    require_tool(PROMTOOL, "prometheus")
    readme = (ROOT / "README.md").read_text()
    block = readme.split("A minimal `prometheus.yml`:\n```yaml\n", 1)[1].split("```", 1)[0]
    assert "/path/to/codec-farm/dashboards/alerts.yml" in block and "honor_labels: true" in block
    config = write(tmp_path / "prometheus.yml", block.replace("/path/to/codec-farm", str(ROOT)))
    check = subprocess.run([str(PROMTOOL), "check", "config", str(config)], capture_output=True, text=True,
                           timeout=60)  # fmt: skip
    assert check.returncode == 0 and "SUCCESS: 5 rules found" in check.stdout, check.stdout + check.stderr
