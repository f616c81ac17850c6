"""Several anchors and decoder complexity through a whole run on the local device (real encodes and decodes).

One run of a bundle that declares a model (av1-svt plus the tiny ONNX decoder, so its kMAC/pixel is known by
hand) against two anchors: x265, and itself under the name ``self`` (its BD-rate against itself must be 0, a
check no hard-coded number could pass). Then the refusals that cost no run.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from tests.conftest import EXAMPLES
from tests.support.onnx_models import bundle_with_model, tiny_decoder_macs
from tests.support.runs import farm, suite

pytestmark = pytest.mark.slow

GATES = """  - {metric: failures, op: "==", value: 0, scope: all}
  - {metric: bd_rate.psnr_yuv, op: "<", value: 1.0}
  - {metric: "bd_rate[x265].psnr_yuv", op: "<", value: 1.0}
  - {metric: "bd_rate[self].psnr_yuv", op: "<=", value: 0.0001}
  - {metric: "bd_rate[self].psnr_yuv", op: ">=", value: -0.0001}
  - {metric: complexity.kmac_per_pixel, op: "<=", value: 50}"""


def _metrics(db: Path, run_id: str) -> dict[str, tuple[float | None, str]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT name, value, detail FROM run_metrics WHERE run_id=?", (run_id,)).fetchall()
    return {name: (value, detail) for name, value, detail in rows}


def test_two_anchors_are_each_scored_stored_and_gated_with_complexity(tmp_path: Path) -> None:
    bundle = bundle_with_model(tmp_path)
    report = tmp_path / "run.json"
    args = ["run", suite(tmp_path, GATES), "--bundle", str(bundle), "--anchor", f"x265={EXAMPLES / 'hevc-x265'}"]
    code, out = farm(tmp_path, *args, "--anchor", f"self={bundle}", "--json", str(report))
    assert code == 0, out
    data = json.loads(report.read_text())
    run_id = data["run"]["id"]
    stored = _metrics(tmp_path / "state" / "results.db", run_id)
    x265, self_ = stored["bd_rate[x265].psnr_yuv"][0], stored["bd_rate[self].psnr_yuv"][0]
    assert x265 is not None and self_ is not None
    assert abs(self_) < 1e-9 and abs(x265) > 0.01  # the same codec against itself, and a different one
    assert stored["bd_rate.psnr_yuv"][0] == x265  # the default alias is the first anchor
    kmac = tiny_decoder_macs(128, 96) / (128 * 96) / 1000
    assert stored["complexity.kmac_per_pixel"][0] == pytest.approx(kmac)
    assert stored["complexity.params"][0] == 8 * 16 * 9 + 16 + 16 * 6 * 9 + 12 * 6
    assert [a["name"] for a in data["anchors"]] == ["x265", "self"]
    assert {r["role"] for r in data["results"]} == {"test", "anchor", "anchor:self"}
    [row] = data["per_operation"]
    assert row["kmac_per_pixel"] == pytest.approx(kmac) and row["bd_rate"]["x265"]["psnr_yuv"] == x265
    assert {v["metric"] for v in data["gates"]} >= {"bd_rate[x265].psnr_yuv", "bd_rate[self].psnr_yuv"}
    assert "compression per operation" in out and "bd_rate[self]" in out
    code, _ = farm(tmp_path, "report", run_id, "--html", str(tmp_path / "run.html"))
    page = (tmp_path / "run.html").read_text()
    assert code == 0 and "Compression per operation" in page and "BD-rate vs self" in page and "anchor self" in page
    # resuming with another bundle as 'self' is refused before any job runs
    code, out = farm(tmp_path, *args, "--anchor", f"self={EXAMPLES / 'av1-svt'}", "--resume", run_id)
    assert code == 2 and f"cannot resume run {run_id}: its anchors changed" in out, out


def test_a_gate_naming_an_unknown_anchor_is_refused_with_its_line(tmp_path: Path) -> None:
    gates = '  - {metric: failures, op: "==", value: 0}\n  - {metric: "bd_rate[fp32].psnr_yuv", op: "<=", value: 0.02}'
    path = suite(tmp_path, gates)
    code, out = farm(tmp_path, "run", path, "--bundle", str(EXAMPLES / "av1-svt"), "--anchor",
                     f"x265={EXAMPLES / 'hevc-x265'}")  # fmt: skip
    assert code == 2
    assert f"{path}:12: gates[1].metric: bd_rate[fp32].psnr_yuv names anchor 'fp32'" in " ".join(out.split())


def test_a_suites_anchors_mapping_and_a_name_given_twice(tmp_path: Path) -> None:
    gates = '  - {metric: "bd_rate[fp32].psnr_yuv", op: "<=", value: 0.02}'
    text = Path(suite(tmp_path, gates)).read_text() + f"anchors:\n  x265: {EXAMPLES / 'hevc-x265'}\n"
    path = tmp_path / "named.yaml"
    path.write_text(text)
    code, out = farm(tmp_path, "run", str(path), "--bundle", str(EXAMPLES / "av1-svt"))
    assert code == 2 and "names anchor 'fp32', which this run does not have (its anchors: x265)" in out, out
    code, out = farm(tmp_path, "run", str(path), "--bundle", str(EXAMPLES / "av1-svt"), "--anchor",
                     str(EXAMPLES / "hevc-x265"), "--anchor", f"hevc-x265={EXAMPLES / 'av1-svt'}")  # fmt: skip
    assert code == 2 and "anchor name 'hevc-x265' is given twice" in out, out
    both = text + f"anchor: {EXAMPLES / 'hevc-x265'}\n"
    path.write_text(both)
    code, out = farm(tmp_path, "run", str(path), "--bundle", str(EXAMPLES / "av1-svt"))
    assert code == 2 and "give either 'anchor' (one bundle) or 'anchors' (by name), not both" in out, out
