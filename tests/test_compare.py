"""`farm compare RUN_A RUN_B`: two real tiny runs, the second with a decoder that is 5 ms slower per frame."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.support.runs import bundle_args, farm, suite, variant

# runs the real decoder, then adds 5 ms to every frame's decode time in its stats file: a slower decoder as the
# farm measures it (per-frame times), with outputs identical to the original (so quality must not change)
SLOWER = """
import json, subprocess, sys
stats = sys.argv[1]
rc = subprocess.call(sys.argv[2:])
if rc == 0:
    rows = [json.loads(line) for line in open(stats) if line.strip()]
    with open(stats, "w") as f:
        for row in rows:
            row["decode_ns"] += 5_000_000
            f.write(json.dumps(row) + "\\n")
sys.exit(rc)
"""


def _run_id(out: str) -> str:
    found = re.search(r"run (\d{8}-\d{6}-[0-9a-f]+): ", out)
    assert found, out
    return found.group(1)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    tmp = tmp_path_factory.mktemp("compare")
    code, out = farm(tmp, "run", suite(tmp), *bundle_args())
    assert code == 0, out
    slow = variant(tmp, "slower", ["{python}", "-c", SLOWER, "{stats}"])
    code_b, out_b = farm(tmp, "run", suite(tmp), *bundle_args(slow))
    assert code_b == 0, out_b
    return tmp, _run_id(out), _run_id(out_b)


def _rows(data: dict[str, object], metric: str) -> list[dict[str, object]]:
    changes = data["changes"]
    assert isinstance(changes, list)
    return [c for c in changes if c["metric"] == metric]


def test_slower_decoder_is_significantly_worse(runs: tuple[Path, str, str]) -> None:
    tmp, a, b = runs
    code, out = farm(tmp, "compare", a, b, "--json", str(tmp / "cmp.json"), "--html", str(tmp / "cmp.html"))
    assert code == 0, out
    assert "worse" in out and "BD-rate of B against A" in out
    data = json.loads((tmp / "cmp.json").read_text())
    assert (data["run_a"], data["run_b"]) == (a, b)
    # 2 repeats x 4 rate points per side: 8 vs 8 values can reach p < 0.01, and 5 ms per frame is far beyond 2 %
    for metric in ("fps", "fps.p50"):
        (row,) = _rows(data, metric)
        assert (row["device"], row["sequence"], row["n_a"], row["n_b"]) == ("local", "bars", 8, 8)
        assert row["verdict"] == "worse", row
        assert row["change"] < -0.5 and row["b"] < row["a"] and row["p_value"] < 0.01
    (slow,) = _rows(data, "frame_time_ms.p50")
    assert slow["verdict"] == "worse" and slow["change"] > 1.0
    # the same bitstreams decode to the same frames: quality did not move, BD-rate of B vs A is 0
    for metric in ("psnr_yuv", "vmaf", "bpp"):
        (row,) = _rows(data, metric)
        assert row["verdict"] == "no change" and row["a"] == row["b"], row
    bd = {x["metric"]: x for x in data["bd_rate_b_vs_a"]}
    assert set(bd) == {"psnr_yuv", "vmaf"}
    assert abs(bd["psnr_yuv"]["value"]) < 1e-9 and bd["psnr_yuv"]["overlap"] == 1.0
    # unmeasured metrics (no power meter here) are not invented
    assert not _rows(data, "power_w")
    html = (tmp / "cmp.html").read_text()
    assert "<script" not in html and "http://" not in html and "https://" not in html
    assert html.count('<svg class="chart rd"') == 2 and '<tr class="fail"><td>local</td><td>bars</td><td>fps<' in html


def test_a_run_against_itself_changes_nothing(runs: tuple[Path, str, str]) -> None:
    tmp, a, _ = runs
    code, out = farm(tmp, "compare", a, a, "--json", str(tmp / "same.json"))
    assert code == 0, out
    data = json.loads((tmp / "same.json").read_text())
    assert data["changes"] and all(c["verdict"] == "no change" and c["change"] == 0 for c in data["changes"])


def test_unknown_run_is_bad_input(runs: tuple[Path, str, str]) -> None:
    tmp, a, _ = runs
    code, out = farm(tmp, "compare", a, "no-such-run")
    assert code == 2, out
