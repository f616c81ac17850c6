"""The learned bundles through a whole farm run on the local device: INT8 against its float original as the anchor."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import onnxruntime
import pytest
import yaml

from farm.bundle import write_sums
from tests.conftest import EXAMPLES, ROOT, write
from tests.sim_fixtures import PhoneFactory
from tests.support.runs import farm

pytestmark = pytest.mark.slow

SUITE = """name: learned-tiny
sequences:
  - id: bars
    generate: {source: testsrc2, width: 160, height: 120, fps: 30, frames: 6}
rates_kbps: [100, 200, 400, 800]
repeats: 1
warmup_frames: 1
timeout_s: 120
power: {baseline_s: 0}
gates:
  - {metric: failures, op: "==", value: 0, scope: all}
  - {metric: bd_rate.psnr_yuv, op: "<=", value: 0.5}
"""


def shipped_suite(tmp_path: Path) -> Path:
    """suites/learned.yaml with its gates and anchors, on one sequence and four rate points (test time).

    Frames, frame size and the lowest and highest rate points stay: the curves against x265 share a quality range
    only between x265's lowest point and LRC's highest (docs/learned-codec.md), and on 4 frames x265's lowest point
    is above LRC's highest (its headers weigh more); the INT8 gap grows with bits per pixel.
    """
    data = yaml.safe_load((ROOT / "suites" / "learned.yaml").read_text())
    data["sequences"] = [seq for seq in data["sequences"] if seq["id"] == "clouds"]
    data["rates_kbps"] = [50, 400, 1600, 6400]
    data["anchors"] = {name: str((ROOT / "suites" / path).resolve()) for name, path in data["anchors"].items()}
    return write(tmp_path / "learned.yaml", yaml.safe_dump(data))


def test_the_learned_suite_gates_the_int8_gap_complexity_and_flicker_and_stores_the_runtime(tmp_path: Path) -> None:
    report = tmp_path / "run.json"
    args = ["--bundle", str(EXAMPLES / "learned-int8"), "--json", str(report)]
    code, out = farm(tmp_path, "run", str(shipped_suite(tmp_path)), *args)
    assert code == 0, out
    data = json.loads(report.read_text())
    metrics = data["device_metrics"]["local"]
    gap = metrics["bd_rate[fp32].psnr_yuv"]["value"]
    assert gap is not None and -0.05 < gap < 0.15, metrics
    vs_x265 = metrics["bd_rate[x265].psnr_yuv"]
    assert vs_x265["value"] is not None and vs_x265["value"] > 1, vs_x265  # LRC needs over twice x265's bits
    assert vs_x265["detail"].startswith("clouds +") and "quality overlap" in vs_x265["detail"], vs_x265
    assert 1.0 < metrics["complexity.kmac_per_pixel"]["value"] < 50
    verdicts = {g["metric"]: g["verdict"] for g in data["gates"]}
    assert verdicts["bd_rate[fp32].psnr_yuv"] == verdicts["temporal.flicker"] == "pass", data["gates"]
    assert verdicts["complexity.kmac_per_pixel"] == verdicts["bd_rate[x265].psnr_yuv"] == "pass"
    props = data["devices"][0]["properties"]
    for role in ("test", "anchor"):  # the fp32 anchor is the suite's first: role "anchor"; x265 runs no ONNX
        assert props[f"runtime[{role}].name"] == "onnxruntime"
        assert props[f"runtime[{role}].version"] == onnxruntime.__version__
        assert props[f"runtime[{role}].providers_used"] == "CPUExecutionProvider"
        assert props[f"runtime[{role}].cpu_fallback_nodes"] == "0"
    assert props["runtime[test].model_sha256"] != props["runtime[anchor].model_sha256"]
    assert "runtime[anchor:x265].name" not in props and "runtime_disagreement" not in props
    assert "runtime on local: test: onnxruntime" in out


def test_a_decoder_that_rejects_the_bitstream_fails_its_jobs_with_stderr_kept(tmp_path: Path) -> None:
    bundle = tmp_path / "wrong-prior"
    shutil.copytree(EXAMPLES / "learned-int8", bundle)
    prior = json.loads((bundle / "prior.json").read_text())
    prior["scale"][0] *= 2  # another entropy model: the bitstream's prior id no longer matches
    (bundle / "other-prior.json").write_text(json.dumps(prior))
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    target = manifest["targets"]["linux-x86_64"]
    target["files"].append("other-prior.json")
    target["decode"] = [a.replace("{bundle}/prior.json", "{bundle}/other-prior.json") for a in target["decode"]]
    manifest["targets"] = {"linux-x86_64": target}
    (bundle / "bundle.yaml").write_text(yaml.safe_dump(manifest))
    write_sums(bundle)
    text = SUITE.replace("[100, 200, 400, 800]", "[100]").replace(
        '  - {metric: bd_rate.psnr_yuv, op: "<=", value: 0.5}\n', ""
    )
    suite = write(tmp_path / "s.yaml", text)
    code, out = farm(tmp_path, "run", str(suite), "--bundle", str(bundle))
    assert code == 1, out
    with sqlite3.connect(tmp_path / "state" / "results.db") as db:
        rows = db.execute("SELECT status, error, stderr_tail FROM jobs").fetchall()
    assert rows and all(status == "failed" for status, _, _ in rows), rows
    for _, error, stderr in rows:
        assert "decoder exited 1" in error and "another entropy model" in error
        assert "lrc decode: bitstream was made for another entropy model" in stderr


def test_an_emulated_phone_decodes_with_onnxruntime_and_reports_it(sim_phone: PhoneFactory, tmp_path: Path) -> None:
    sim_phone("phone-l")
    inv = sim_phone.inventory(tmp_path / "devices.yaml")
    text = SUITE.replace("[100, 200, 400, 800]", "[200]").replace(
        '  - {metric: bd_rate.psnr_yuv, op: "<=", value: 0.5}\n', ""
    )
    report = tmp_path / "run.json"
    code, out = farm(tmp_path, "run", str(write(tmp_path / "s.yaml", text)), "--bundle", str(EXAMPLES / "learned-int8"),
                     "--inventory", str(inv), "--json", str(report))  # fmt: skip
    assert code == 0, out
    props = json.loads(report.read_text())["devices"][0]["properties"]
    assert props["runtime[test].providers_used"] == "CPUExecutionProvider"
    assert props["runtime[test].version"] == onnxruntime.__version__
