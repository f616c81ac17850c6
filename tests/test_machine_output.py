"""Machine-readable output of a real run: ``--json -`` alone on stdout, rate-point rows, per-sequence BD-rate,
CSV, JUnit times, and JSON from ``farm runs`` and ``farm devices``."""

from __future__ import annotations

import csv
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm.cli import app
from tests.conftest import ROOT
from tests.support.runs import bundle_args, suite

pytestmark = pytest.mark.slow


def invoke(state: Path, *args: str) -> tuple[int, str, str]:
    env = {"FARM_STORE": str(state / "results.db"), "FARM_INVENTORY": str(ROOT / "devices.yaml")}
    res = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


@pytest.fixture(scope="module")
def ran(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, dict[str, object]]:
    tmp = tmp_path_factory.mktemp("machine")
    code, stdout, stderr = invoke(tmp / "state", "run", suite(tmp), *bundle_args(), "--json", "-",
                                  "--csv", str(tmp / "points.csv"), "--junit", str(tmp / "junit.xml"))  # fmt: skip
    assert code == 0, stderr
    return tmp, stderr, json.loads(stdout)  # stdout is the document and nothing else


def test_json_to_stdout_with_the_tables_on_stderr(ran: tuple[Path, str, dict[str, object]]) -> None:
    _, stderr, data = ran
    assert data["passed"] is True
    assert "quality of run" in stderr and "gates of run" in stderr
    assert not (Path.cwd() / "-").exists()


def test_rate_points_and_per_sequence_bd_rate_are_numbers(ran: tuple[Path, str, dict[str, object]]) -> None:
    _, _, data = ran
    points = data["rate_points"]
    assert isinstance(points, list)
    test = [p for p in points if p["role"] == "test"]
    assert sorted(p["rate_kbps"] for p in test) == [60, 120, 240, 480]
    for p in points:
        assert p["device"] == "local" and p["sequence"] == "bars" and p["jobs"] == (2 if p["role"] == "test" else 1)
        assert p["actual_kbps"] > 0 and p["bpp"] > 0 and p["psnr_yuv"] > 20 and p["fps"] > 0
        assert {"psnr_y", "psnr_u", "psnr_v", "ssim", "vmaf", "power_w", "energy_j", "energy_per_frame_j"} <= set(p)
    bd = {(b["metric"], b["sequence"]): b for b in data["bd_rate"]}  # type: ignore[attr-defined]
    one = bd[("psnr_yuv", "bars")]
    assert isinstance(one["value"], float) and 0 < one["overlap"] <= 1 and isinstance(one["warnings"], list)
    stored = data["device_metrics"]["local"]["bd_rate.psnr_yuv"]["value"]  # type: ignore[index]
    assert one["value"] == pytest.approx(stored, rel=1e-9)  # one sequence: the device mean is that sequence


def test_csv_has_one_row_per_rate_point(ran: tuple[Path, str, dict[str, object]]) -> None:
    tmp, _, data = ran
    rows = list(csv.DictReader(io.StringIO((tmp / "points.csv").read_text())))
    assert len(rows) == len(data["rate_points"])  # type: ignore[arg-type]
    assert {"device", "role", "sequence", "rate_kbps", "actual_kbps", "bpp", "psnr_yuv", "fps"} <= set(rows[0])
    assert float(rows[0]["bpp"]) > 0


def test_junit_has_times_and_a_timestamp(ran: tuple[Path, str, dict[str, object]]) -> None:
    tmp, _, _ = ran
    root = ET.parse(tmp / "junit.xml").getroot()
    suite_el = root.find("testsuite")
    assert suite_el is not None and suite_el.get("timestamp", "").startswith("20")
    assert float(suite_el.get("time", "0")) > 0
    cases = root.findall(".//testcase")
    assert cases and all(float(c.get("time", "-1")) > 0 for c in cases)


def test_runs_and_devices_as_json(ran: tuple[Path, str, dict[str, object]]) -> None:
    tmp, _, data = ran
    code, stdout, _ = invoke(tmp / "state", "runs", "--json", "-")
    assert code == 0
    history = json.loads(stdout)["runs"]
    assert history[0]["id"] == data["run"]["id"] and history[0]["passed"] is True  # type: ignore[index]
    code, stdout, _ = invoke(tmp / "state", "devices", "--json", "-")
    assert code == 0
    assert [d["id"] for d in json.loads(stdout)["devices"]] == ["local"]


def test_tables_fit_100_columns_keep_every_number_and_show_bd_rate_in_percent(
    ran: tuple[Path, str, dict[str, object]],
) -> None:
    from rich.console import Console

    from farm.report import bd_warnings, results_rows, results_table, verdict_table, verdicts_from_store
    from farm.store import Store

    tmp, _, data = ran
    run_id = data["run"]["id"]  # type: ignore[index]
    db = Store.open_readonly(tmp / "state" / "results.db")
    buf = io.StringIO()
    console = Console(file=buf, width=100, force_terminal=False)
    console.print(results_table(db, run_id))
    verdicts = verdicts_from_store(db, run_id)
    console.print(verdict_table(verdicts, "gates", {"local": ["bd_rate.psnr_yuv bars: quality overlap is only 50%"]}))
    text = buf.getvalue()
    assert max(len(line) for line in text.splitlines()) <= 100
    for row in results_rows(db, run_id):
        for key, spec in (("bpp", ".4f"), ("ssim", ".4f"), ("vmaf", ".2f"), ("psnr_yuv", ".2f"), ("fps_p50", ".0f")):
            assert f"{row[key]:{spec}}" in text, key  # never cut to "0.4…"
    assert "fps p50 = 1 / median steady-state frame decode time" in text
    bd = next(v for v in verdicts if v.metric == "bd_rate.psnr_yuv")
    assert f"{float(bd.value) * 100:+.2f}%" in text  # type: ignore[arg-type]
    assert "WARNING" in text and "quality overlap is only 50%" in text
    assert isinstance(bd_warnings(db, run_id), dict)


def test_junit_notes_a_bd_rate_warning_on_a_passing_case(tmp_path: Path) -> None:
    from farm.gates import Verdict
    from farm.report import write_junit

    bd = Verdict(0, "bd_rate.psnr_yuv", "<=", 0.0, "each", "board-1", "median", -0.18, "pass", "median of 1", {})
    fps = Verdict(1, "fps", ">=", 30.0, "each", "board-1", "median", 60.0, "pass", "median over 8 jobs", {})
    note = "bd_rate.psnr_yuv bars: quality overlap [44, 55] is only 70% of the narrower curve's span"
    write_junit(tmp_path / "j.xml", "r1", "smoke", [bd, fps], warnings={"board-1": [note]})
    cases = ET.parse(tmp_path / "j.xml").getroot().findall(".//testcase")
    assert f"warning: {note}" in (cases[0].findtext("system-out") or "")
    assert [p.get("value") for p in cases[0].iter("property")] == [note]
    assert "warning" not in (cases[1].findtext("system-out") or "")  # only BD-rate cases carry it
