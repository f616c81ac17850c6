"""End to end on the local device: real encodes, real decodes, real scoring, real store, the real CLI.

These are the slow tests (seconds each, not milliseconds); they stay in the default run because they are the
only proof that the pieces fit.
"""

from __future__ import annotations

import json
import shutil
import tarfile
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from farm.bundle import write_sums
from tests.conftest import EXAMPLES, ROOT, write
from tests.support.runs import PASSING, TINY_SUITE, bundle_args, farm, suite

pytestmark = pytest.mark.slow


def test_smoke_suite_from_the_readme(tmp_path: Path) -> None:
    report = tmp_path / "run.json"
    junit = tmp_path / "junit.xml"
    code, out = farm(tmp_path, "run", str(ROOT / "suites/smoke.yaml"), *bundle_args(), "--json", str(report),
                     "--junit", str(junit))  # fmt: skip
    assert code == 0, out
    data = json.loads(report.read_text())
    assert data["passed"] is True
    rows = [r for r in data["results"] if r["role"] == "test"]
    assert len(rows) == 2
    for row in rows:
        assert row["fps_p50"] > 30 and 0 < row["bpp"] < 2 and 25 < row["psnr_yuv"] < 100
        assert 0.8 < row["ssim"] <= 1 and 40 < row["vmaf"] <= 100
        if data["devices"][0]["properties"]["power_meter"].startswith("none"):
            assert row["power_w"] is None  # no readable meter on this machine: missing, never 0
        else:
            assert row["power_w"] > 0
    bd = data["device_metrics"]["local"]["bd_rate.psnr_yuv"]["value"]
    assert -0.6 < bd < 0.0
    assert "missing" in out and "BD-rate of av1-svt" in out
    cases = ET.parse(junit).getroot().findall(".//testcase")
    assert len(cases) == 4 and not ET.parse(junit).getroot().findall(".//failure")
    # a second run of the same suite and bundle re-encodes and pushes nothing
    code, out = farm(tmp_path, "run", str(ROOT / "suites/smoke.yaml"), *bundle_args())
    assert code == 0, out
    assert "encodes: 0 new, 16 reused" in out and "pushed 0 bytes in 0 files" in out


def test_failing_gate_exits_1_and_names_it_then_gate_and_report_replay_it(tmp_path: Path) -> None:
    gates = PASSING + '\n  - {metric: fps, op: ">=", value: 1.0e+12}'
    code, out = farm(tmp_path, "run", suite(tmp_path, gates), *bundle_args())
    assert code == 1
    assert "gate fail: fps >= 1e+12 [local]" in out
    run_id = out.split("run ")[-1].split(":")[0]
    code, out = farm(tmp_path, "gate", run_id[:15])
    assert code == 1 and "FAIL" in out
    code, out = farm(tmp_path, "report", run_id)
    assert code == 0 and "hevc-x265" in out
    code, out = farm(tmp_path, "runs")
    assert run_id in out


def test_power_gate_on_a_machine_without_meter_is_missing_and_fails(tmp_path: Path) -> None:
    gates = '  - {metric: energy_per_frame_j, op: "<=", value: 1000}'
    code, out = farm(tmp_path, "run", suite(tmp_path, gates), *bundle_args())
    assert code == 1 and "gate missing: energy_per_frame_j" in out


def test_crashing_decoder_fails_jobs_with_stderr_kept(tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(EXAMPLES / "av1-svt", broken)
    manifest = broken / "bundle.yaml"
    manifest.write_text(manifest.read_text().replace('"libdav1d"', '"no_such_decoder"'))
    write_sums(broken)
    code, out = farm(tmp_path, "run", suite(tmp_path), *bundle_args(broken), "--json", str(tmp_path / "r.json"))
    assert code == 1
    assert "gate fail: failures == 0 [all]" in out
    data = json.loads((tmp_path / "r.json").read_text())
    failures = next(g for g in data["gates"] if g["metric"] == "failures")
    assert failures["value"] == 8 and "decoder exited" in failures["detail"]


def test_malformed_suite_and_inventory_exit_2_with_file_and_line(tmp_path: Path) -> None:
    bad = write(tmp_path / "bad.yaml", TINY_SUITE.format(gates='  - {metric: fps, op: "=>", value: 1}'))
    code, out = farm(tmp_path, "run", str(bad), *bundle_args())
    assert code == 2 and f"{bad}:11: gates[0].op: unknown operator '=>'" in out
    inv = write(tmp_path / "devices.yaml", "devices:\n  - id: x\n    platform: linux\n    transport: {kind: lokal}\n")
    code, out = farm(tmp_path, "run", suite(tmp_path), *bundle_args(), "--inventory", str(inv))
    assert code == 2 and f"{inv}:4: devices[0].transport" in out


def test_tampered_and_hostile_bundles_exit_2(tmp_path: Path) -> None:
    tampered = tmp_path / "tampered"
    shutil.copytree(EXAMPLES / "av1-svt", tampered)
    (tampered / "ffdecode.py").write_text("import os\n")
    code, out = farm(tmp_path, "run", suite(tmp_path), *bundle_args(tampered))
    assert code == 2 and "checksum mismatch" in out
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        tar.add(EXAMPLES / "av1-svt" / "bundle.yaml", arcname="../../bundle.yaml")
    code, out = farm(tmp_path, "run", suite(tmp_path), *bundle_args(evil))
    assert code == 2 and "outside the target directory" in out


def test_packed_bundle_runs_like_the_directory(tmp_path: Path) -> None:
    packed = tmp_path / "av1.tar.gz"
    assert farm(tmp_path, "bundle", "pack", str(EXAMPLES / "av1-svt"), "-o", str(packed))[0] == 0
    code, out = farm(tmp_path, "run", suite(tmp_path), *bundle_args(packed))
    assert code == 0, out


def test_unreachable_device_exits_3_with_the_reason(tmp_path: Path) -> None:
    inv = write(
        tmp_path / "devices.yaml",
        "devices:\n  - id: broken\n    platform: linux\n    transport: {kind: local}\n    target: auto\n"
        "    workdir: /proc/cannot/write/here\n    runtime: {ffmpeg: '@imageio-ffmpeg', python: '@python'}\n",
    )
    code, out = farm(tmp_path, "run", suite(tmp_path), *bundle_args(), "--inventory", str(inv))
    assert code == 3 and "no device could run" in out and "broken" in out


def test_power_path_with_a_sysfs_meter(tmp_path: Path) -> None:
    """A declared sysfs meter (a file that reads 2.5 W) goes through sampler, energy maths and the store."""
    node = write(tmp_path / "meter dir" / "power_uw", "2500000\n")
    zone = write(tmp_path / "zone" / "temp", "61500\n")
    inv = write(
        tmp_path / "devices.yaml",
        "devices:\n  - id: metered\n    platform: linux\n    transport: {kind: local}\n    target: auto\n"
        "    runtime: {ffmpeg: '@imageio-ffmpeg', python: '@python'}\n"
        f"    power: {{meter: sysfs, nodes: ['{node}'], unit: uW}}\n"
        f"    thermal: {{zones: ['{zone}'], throttle_c: 60}}\n",
    )
    text = TINY_SUITE.format(gates='  - {metric: energy_per_frame_j, op: "<=", value: 0.01}').replace(
        "power: {baseline_s: 0}", "power: {baseline_s: 0.3, sample_hz: 40}"
    )
    suite_path = write(tmp_path / "metered.yaml", text)
    report = tmp_path / "r.json"
    code, out = farm(tmp_path, "run", str(suite_path), *bundle_args(), "--inventory", str(inv), "--json", str(report))
    assert code == 0, out
    data = json.loads(report.read_text())
    row = next(r for r in data["results"] if r["role"] == "test")
    assert row["power_w"] == pytest.approx(2.5, rel=1e-6)
    assert abs(row["energy_per_frame_j"]) < 1e-3  # constant power: nothing above the idle baseline
    assert "sysfs" in data["devices"][0]["properties"]["power_meter"]
    assert row["temp_max_c"] == pytest.approx(61.5) and row["throttled_jobs"] == 8


def test_bad_meter_settings_are_input_errors(tmp_path: Path) -> None:
    inv = write(
        tmp_path / "devices.yaml",
        "devices:\n  - id: m\n    platform: linux\n    transport: {kind: local}\n    target: auto\n"
        "    runtime: {ffmpeg: '@imageio-ffmpeg', python: '@python'}\n"
        "    power: {meter: sysfs, nodes: [relative/path]}\n",
    )
    code, out = farm(tmp_path, "run", suite(tmp_path), *bundle_args(), "--inventory", str(inv))
    assert code == 2 and f"{inv}:7: devices[0].power: nodes: 'relative/path' is not an absolute path" in out


def test_relative_paths_and_the_default_store_as_the_readme_runs_it(tmp_path: Path) -> None:
    """The README's command runs from a checkout with relative paths and the default `.farm/` state: the
    sandboxed encoder, the device and the store must all work from there (absolute temp paths hide that)."""
    import os
    import subprocess
    import sys

    shutil.copytree(EXAMPLES, tmp_path / "examples" / "bundles")
    shutil.copy(ROOT / "devices.yaml", tmp_path / "devices.yaml")
    suite(tmp_path, '  - {metric: failures, op: "==", value: 0, scope: all}', name="tiny.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARM_")}
    res = subprocess.run(
        [sys.executable, "-m", "farm", "run", "tiny.yaml", "--bundle", "examples/bundles/av1-svt"],
        cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    assert (tmp_path / ".farm" / "results.db").is_file() and "PASSED" in res.stdout
