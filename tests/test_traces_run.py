"""Per-sample traces from a real run: virtual SSH boards (real sshd, sampled sysfs power and thermal files) and the
local device (no meter), stored by the recorder, then drawn in the HTML report and read back by a real browser."""

from __future__ import annotations

import itertools
import re
import subprocess
from pathlib import Path

import pytest

from farm.sim.fleet import Fleet
from farm.store import Store
from farm.traces import MAX_POINTS, POWER, TEMP, trapezoid_mean
from tests.conftest import require_tool
from tests.support.runs import bundle_args, farm, inventory_with_local, sim_suite

pytestmark = pytest.mark.slow
CHROMIUM = Path("/usr/bin/chromium")


@pytest.fixture(scope="module")
def fleet_run(ssh_fleet: Fleet, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One run of the tiny suite (20 Hz sampler) on two boards and the local device; (tmp folder, run id)."""
    tmp = tmp_path_factory.mktemp("traces")
    inv = inventory_with_local(ssh_fleet.inventory_path, tmp / "devices.yaml")
    code, out = farm(tmp, "run", sim_suite(tmp), *bundle_args(), "--inventory", str(inv))
    assert code == 0, out
    return tmp, re.findall(r"run (\d{8}-\d{6}-[0-9a-f]+): ", out)[-1]


def _store(tmp: Path) -> Store:
    return Store(tmp / "state" / "results.db", readonly=True)


def test_boards_store_sampled_traces_inside_the_decode_window(fleet_run: tuple[Path, str]) -> None:
    tmp, run_id = fleet_run
    store = _store(tmp)
    traces, ms = store.traces(run_id), store.measurements(run_id)
    board_jobs = [j for j in store.jobs(run_id) if j["device_id"].startswith("board-")]
    assert len(board_jobs) == 24 and all(j["status"] == "ok" for j in board_jobs)
    for job in board_jobs:
        got, m = traces[int(job["id"])], ms[int(job["id"])]
        wall_s = m["wall_s"]["value"]
        power = got[POWER]
        assert power.missing_reason is None and 2 <= len(power.t_s) <= MAX_POINTS, power
        assert all(a < b for a, b in itertools.pairwise(power.t_s)), power.t_s  # strictly in time order
        # the window's edges are readings taken by the decode script itself, so the trace spans it exactly
        assert power.t_s[0] == pytest.approx(0.0, abs=1e-4) and power.t_s[-1] == pytest.approx(wall_s, abs=2e-4)
        assert all(w > 0 for w in power.values)
        mean = trapezoid_mean(power)
        assert mean == pytest.approx(m["power_w"]["value"], rel=2e-3), (power, m["power_w"]["value"])
        temp = got[TEMP]
        assert temp.missing_reason is None and temp.t_s, temp
        assert all(a < b for a, b in itertools.pairwise(temp.t_s)) and 0 <= temp.t_s[0] <= temp.t_s[-1] <= wall_s
        assert max(temp.values) <= m["temp_max_c"]["value"] + 1e-6 and min(temp.values) > 0


def test_local_device_without_meter_stores_the_reason_not_a_trace(fleet_run: tuple[Path, str]) -> None:
    tmp, run_id = fleet_run
    store = _store(tmp)
    traces, ms = store.traces(run_id), store.measurements(run_id)
    local = [int(j["id"]) for j in store.jobs(run_id) if j["device_id"] == "local"]
    assert len(local) == 12
    for job_id in local:
        power = traces[job_id][POWER]
        assert power.t_s == () and power.values == () and power.samples == 0
        assert power.missing_reason and power.missing_reason == ms[job_id]["power_w"]["missing_reason"]
        temp = traces[job_id][TEMP]
        assert temp.t_s or temp.missing_reason  # this host may or may not have a readable thermal zone


def test_report_draws_board_traces_and_says_why_local_has_none(fleet_run: tuple[Path, str]) -> None:
    require_tool(CHROMIUM, "chromium")
    tmp, run_id = fleet_run
    page = tmp / "report.html"
    code, out = farm(tmp, "report", run_id, "--html", str(page))
    assert code == 0, out
    argv = [str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp / 'profile'}", "--dump-dom", page.as_uri()]  # fmt: skip
    dom = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False).stdout
    store = _store(tmp)
    traces = store.traces(run_id)
    for board in ("board-1", "board-2"):
        label = f"{board}: bars power trace \\(SIMULATED\\)"
        chart = re.search(rf'<svg class="chart trace-power"[^>]*aria-label="{label}".*?</svg>', dom, re.S)
        assert chart, board
        assert chart.group(0).count('<g class="series"') == 8  # 4 rate points x (bundle, anchor)
        assert "idle baseline" in chart.group(0)
        # the bundle's 60 kbps line is its first repeat's stored trace, point for point
        job = next(j for j in store.jobs(run_id) if (j["device_id"], j["role"], j["rate_kbps"], j["repeat"]) ==
                   (board, "test", 60.0, 0))  # fmt: skip
        stored = traces[int(job["id"])][POWER]
        line = re.search(r'data-name="bundle 60 kbps">.*?<polyline points="([^"]*)"', chart.group(0), re.S)
        assert line and len(line.group(1).split()) == len(stored.t_s)
        temp = rf'<svg class="chart trace-temp"[^>]*aria-label="{board}: bars temperature trace'
        assert re.search(temp, dom)
    assert 'aria-label="local: bars power trace' not in dom  # nothing drawn, never zeros
    note = re.search(r'<p class="note trace-missing">local: ([^<]*)</p>', dom)
    reasons = {store.measurements(run_id)[int(j["id"])]["power_w"]["missing_reason"]
               for j in store.jobs(run_id) if j["device_id"] == "local"}  # fmt: skip
    assert note and f"bars: power trace missing for 12 job(s): {reasons.pop()}" in note.group(1), note
