"""A real encode/decode/score on the local device keeps per-frame quality and flicker, gated and reported.

The per-frame rows and the job's measurements come from the same scoring pass but are stored apart (rows per
decoded output, measurements per job); this checks that they agree, so a curve drawn from the rows and a gate
read from the measurements describe the same decode.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from farm.store import FrameQuality, Store
from tests.support.runs import PASSING, bundle_args, farm, suite

pytestmark = pytest.mark.slow

TEMPORAL_GATES = (
    PASSING
    + """
  - {metric: temporal.flicker, op: "<=", value: 40}
  - {metric: psnr_yuv.min, op: ">=", value: 10}"""
)


def _mean(values: list[float]) -> float:
    return math.fsum(values) / len(values)


def test_per_frame_rows_agree_with_the_job_means_and_gates_read_them(tmp_path: Path) -> None:
    code, out = farm(tmp_path, "run", suite(tmp_path, TEMPORAL_GATES), *bundle_args())
    assert code == 0, out
    run_id = re.search(r"run (\d{8}-\d{6}-[0-9a-f]+): PASSED", out).group(1)  # type: ignore[union-attr]
    assert "temporal.flicker <= 40" in out and "psnr_yuv.min >= 10" in out
    store = Store(tmp_path / "state" / "results.db", readonly=True)
    rows: dict[tuple[str, str], list[FrameQuality]] = {}
    for f in store.frame_quality(run_id):
        rows.setdefault((f.output_sha, f.source_sha), []).append(f)
    measured = store.measurements(run_id)
    jobs = [j for j in store.jobs(run_id) if j["status"] == "ok"]
    assert len(jobs) == 12 and len(rows) == len({(j["output_sha"], j["source_sha"]) for j in jobs})
    for job in jobs:
        frames = rows[(job["output_sha"], job["source_sha"])]
        m = {name: row["value"] for name, row in measured[int(job["id"])].items()}
        assert [f.frame for f in frames] == list(range(12)) and frames[0].flicker is None
        flicker = [f.flicker for f in frames[1:] if f.flicker is not None]
        assert len(flicker) == 11 and m["temporal.flicker"] == pytest.approx(_mean(flicker), abs=1e-12)
        assert m["temporal.flicker_max"] == max(flicker) and m["temporal.flicker"] > 0  # lossy: the error moves
        psnr = [f.psnr_yuv for f in frames if f.psnr_yuv is not None]
        assert m["psnr_yuv"] == pytest.approx(_mean(psnr), abs=1e-9) and m["psnr_yuv.min"] == min(psnr)
        assert m["vmaf"] == pytest.approx(_mean([f.vmaf for f in frames if f.vmaf is not None]), abs=1e-9)
    # the JSON report carries the same per-frame values, per scored output with the jobs that produced it
    code, text = farm(tmp_path, "report", run_id, "--json", "-")
    assert code == 0, text
    doc = json.loads(text[text.index("{") :])
    assert len(doc["per_frame"]) == len(rows)
    first = doc["per_frame"][0]
    assert first["frame"] == list(range(12)) and first["flicker"][0] is None and len(first["psnr_u"]) == 12
    assert {j["device_id"] for j in first["jobs"]} == {"local"}
    assert all(r["flicker"] is not None for r in doc["results"])


def test_a_flicker_gate_fails_and_names_itself(tmp_path: Path) -> None:
    code, out = farm(tmp_path, "run", suite(tmp_path, PASSING + '\n  - {metric: temporal.flicker, op: "<=", value: 0}'),
                     *bundle_args())  # fmt: skip
    assert code == 1 and "temporal.flicker <= 0" in out, out
