"""`farm report RUN --html`: a real tiny run, the page it writes, and a real browser (Debian's headless Chromium)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from farm.sim.fleet import Fleet
from farm.store import Store
from tests.conftest import require_tool
from tests.support.runs import bundle_args, farm, inventory_with_local, sim_suite, suite

CHROMIUM = Path("/usr/bin/chromium")
MAX_BYTES = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One real run of the tiny suite (bundle and anchor on the local device); (tmp folder, run id)."""
    tmp = tmp_path_factory.mktemp("htmlrun")
    code, out = farm(tmp, "run", suite(tmp), *bundle_args())
    assert code == 0, out
    found = re.search(r"run (\d{8}-\d{6}-[0-9a-f]+): PASSED", out)
    assert found, out
    return tmp, found.group(1)


def _report(tmp: Path, run_id: str, name: str = "report.html") -> tuple[str, str]:
    page = tmp / name
    code, out = farm(tmp, "report", run_id, "--html", str(page))
    assert code == 0, out
    return page.read_text(), out


def test_page_is_self_contained_and_small(run: tuple[Path, str]) -> None:
    tmp, run_id = run
    html, out = _report(tmp, run_id)
    assert f"wrote {tmp / 'report.html'}" in out
    assert len(html.encode()) < MAX_BYTES
    # nothing that a browser would fetch: no URL in src/href, no external stylesheet, script or import
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert not re.search(r"<script|<link|@import|<iframe|<img", html, re.I)
    assert "http://" not in html and "https://" not in html


def test_verdicts_come_first_then_the_plots(run: tuple[Path, str]) -> None:
    tmp, run_id = run
    html, _ = _report(tmp, run_id)
    for gate in ("fps &gt;= 1 [local]", "consistency == bitexact [all]", "failures == 0 [all]"):
        assert gate in html
    assert 'id="overall">PASSED<' in html
    assert re.search(r"<td>bd_rate.psnr_yuv &lt; 1 \[local\]</td><td>PASS</td><td>-\d+\.\d\d%</td>", html)  # in %
    assert html.index('id="verdicts"') < html.index('id="rd"') < html.index('id="speed"') < html.index('id="power"')
    # one rate-quality chart per quality metric for the one sequence, each with the bundle and anchor curves
    rd = re.findall(r'<svg class="chart rd".*?</svg>', html, re.S)
    assert len(rd) == 2
    for chart in rd:
        assert 'data-name="local bundle"' in chart and 'data-name="local anchor"' in chart
        assert chart.count("<circle") == 8  # 4 rate points per curve
    assert re.search(r"<td>psnr_yuv</td><td>[+-]\d+\.\d\d% \(overlap \d+%\)", html)  # BD-rate per sequence
    assert html.count('<svg class="chart frametimes"') == 1 and html.count('<svg class="chart frameseries"') == 1
    # the local device has no meter: power is shown as missing with the session's reason, not drawn as 0
    assert "power_w missing: device has no power meter" in html
    assert "power trace missing for 12 job(s): device has no power meter" in html  # schema 8 traces
    assert html.index('id="power"') < html.index('id="traces"') < html.index('id="consistency"')
    # per-frame quality (schema 6): PSNR-YUV, VMAF and flicker over the 12 frames, bundle and anchor per rate point
    assert html.index('id="rd"') < html.index('id="frames"') < html.index('id="speed"')
    for metric in ("psnr_yuv", "vmaf", "flicker"):
        chart = re.findall(rf'<svg class="chart frame-{metric}".*?</svg>', html, re.S)
        assert len(chart) == 1, metric
        assert chart[0].count("<polyline") == 8 and 'data-name="bundle 60k"' in chart[0], metric  # 4 rates x 2
        assert chart[0].count("<circle") == 8 * (11 if metric == "flicker" else 12), metric  # frame 0: no flicker


def test_strings_from_the_store_are_escaped(run: tuple[Path, str], tmp_path: Path) -> None:
    tmp, run_id = run
    shutil.copytree(tmp / "state", tmp_path / "state")
    db = Store(tmp_path / "state" / "results.db")
    evil = "<script>alert(1)</script>"
    db.add_device(run_id, f"x{evil}", "linux", "linux-x86_64", [], {"cpu": evil}, "failed", evil)
    db.close()
    html, _ = _report(tmp_path, run_id)
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html


def _chromium(tmp: Path, page: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    argv = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp / 'profile'}",
        "--enable-logging=stderr", "--v=0", *extra, page.as_uri(),
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _console_errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line]


def _distinct_rows(png: bytes) -> int:
    """How many different scanlines the PNG has: a blank page has one (no image library needed)."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width, channels = 8, b"", 0, 0
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, _, depth, color = struct.unpack(">IIBB", body[:10])
            assert depth == 8
            channels = {2: 3, 6: 4}[color]
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = 1 + width * channels
    return len({raw[i : i + stride] for i in range(0, len(raw), stride)})


def test_chromium_sees_console_errors(tmp_path: Path) -> None:
    """The browser check below can fail: a page that logs an error is caught by the same parsing."""
    require_tool(CHROMIUM, "chromium")
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("boom")</script></body></html>')
    res = _chromium(tmp_path, page, "--dump-dom")
    assert any("boom" in line for line in _console_errors(res.stderr)), res.stderr[-2000:]


def test_chromium_renders_the_report(run: tuple[Path, str], tmp_path: Path) -> None:
    require_tool(CHROMIUM, "chromium")
    tmp, run_id = run
    _report(tmp, run_id)
    page = tmp / "report.html"
    shot = tmp_path / "report.png"
    res = _chromium(tmp_path, page, f"--screenshot={shot}", "--window-size=1280,2400")
    assert res.returncode == 0, res.stderr[-2000:]
    assert not _console_errors(res.stderr), _console_errors(res.stderr)
    assert shot.stat().st_size > 20_000
    assert _distinct_rows(shot.read_bytes()) > 200  # text, tables and charts, not a blank page
    dom = _chromium(tmp_path, page, "--dump-dom")
    assert dom.returncode == 0 and not _console_errors(dom.stderr), dom.stderr[-2000:]
    # the parsed DOM (not just the file) holds the charts as SVG elements, with their curves
    assert len(re.findall(r'<svg class="chart rd"', dom.stdout)) == 2
    assert 'data-name="local bundle"' in dom.stdout and "<polyline" in dom.stdout
    assert 'id="overall">PASSED<' in dom.stdout
    assert len(re.findall(r'<svg class="chart frame-(psnr_yuv|vmaf|flicker)"', dom.stdout)) == 3
    # the local device has no meter: no power trace is drawn (never zeros), and the page says why
    assert '<svg class="chart trace-power"' not in dom.stdout
    assert re.search(r'<p class="note trace-missing">local: bars: power trace missing for 12 job\(s\): ', dom.stdout)


def test_fleet_page_shows_power_against_baseline_and_labels_simulated_sensors(ssh_fleet: Fleet, tmp_path: Path) -> None:
    """Two virtual boards (simulated power and temperature) and the local device (no meter) in one run."""
    inv = inventory_with_local(ssh_fleet.inventory_path, tmp_path / "devices.yaml")
    code, out = farm(tmp_path, "run", sim_suite(tmp_path), *bundle_args(), "--inventory", str(inv))
    assert code == 0, out
    html, _ = _report(tmp_path, re.findall(r"run (\d{8}-\d{6}-[0-9a-f]+): ", out)[-1])
    for board in ("board-1", "board-2"):
        power = re.search(rf'<svg class="chart power"[^>]*aria-label="{board}: power per job \(SIMULATED\)".*?</svg>',
                          html, re.S)  # fmt: skip
        assert power, board
        assert power.group(0).count("<circle") == 12  # 8 bundle jobs + 4 anchor jobs (not repeated), one point each
        assert "idle baseline" in power.group(0)
        label = f"{board}: temperature \\(SIMULATED\\)"
        temp = re.search(rf'<svg class="chart temperature"[^>]*aria-label="{label}".*?</svg>', html, re.S)
        assert temp and "<circle" in temp.group(0)
        assert f"{board}: power and temperature are SIMULATED" in html
        label = f"{board}: bars power trace \\(SIMULATED\\)"
        trace = re.search(rf'<svg class="chart trace-power"[^>]*aria-label="{label}".*?</svg>', html, re.S)
        assert trace and trace.group(0).count("<polyline") == 8 and "idle baseline" in trace.group(0)
    assert "local: power per job<" in html and "no measured values to plot" in html
    # consistency matrix: 3 x 3, every pair decoded the 8 bitstreams identically (same decoder everywhere)
    matrix = html[html.index('id="consistency"') : html.index('id="devices"')]
    assert matrix.count("<td>8/8</td>") == 9
