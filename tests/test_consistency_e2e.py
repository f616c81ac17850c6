"""Cross-device consistency end to end: two devices whose decodes differ slightly, as float paths do.

Both devices are this machine (the local transport, each with its own workdir); the second one's decoder
nudges one luma sample of every output by 2, the way a different rounding on another CPU would. The digests
then differ, and the tolerance gates decide on the sample differences the run measured on the host.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm.bundle import write_sums
from farm.cli import app
from tests.conftest import EXAMPLES, write

pytestmark = pytest.mark.slow

DITHER = """import subprocess
import sys

nudge = int(sys.argv[1])
status = subprocess.call(sys.argv[2:])
if status == 0 and nudge:
    out = sys.argv[-2]
    with open(out, "rb") as f:
        data = bytearray(f.read())
    first = data.index(b"FRAME", data.index(b"\\n")) + len(b"FRAME\\n")
    data[first] = data[first] + nudge if data[first] + nudge <= 255 else data[first] - nudge
    with open(out, "wb") as f:
        f.write(data)
sys.exit(status)
"""

SUITE = """name: float-path
sequences:
  - id: bars
    generate: {source: testsrc2, width: 128, height: 96, fps: 30, frames: 6}
rates_kbps: [60, 240]
repeats: 1
timeout_s: 60
power: {baseline_s: 0}
gates:
  - {metric: consistency.max_abs_diff, op: "<=", value: 2, scope: all}
  - {metric: consistency.psnr_db, op: ">=", value: 60, scope: all}
  - {metric: consistency.max_abs_diff, op: "<=", value: 1, scope: all}
  - {metric: consistency, op: "==", value: bitexact, scope: all}
"""


def device(name: str, workdir: Path, nudge: int) -> str:
    return (
        f"  - id: {name}\n    platform: linux\n    transport: {{kind: local}}\n    target: auto\n"
        f"    workdir: {workdir}\n"
        f"    runtime: {{ffmpeg: '@imageio-ffmpeg', python: '@python', nudge: '{nudge}'}}\n"
    )


def test_tolerance_gates_and_the_report_name_which_devices_disagree(tmp_path: Path) -> None:
    bundle = tmp_path / "float-codec"
    shutil.copytree(EXAMPLES / "av1-svt", bundle)
    write(bundle / "dither.py", DITHER)
    manifest = bundle / "bundle.yaml"
    text = manifest.read_text().replace("name: av1-svt", "name: float-codec")
    text = text.replace("files: [ffdecode.py]", "files: [ffdecode.py, dither.py]")
    wrapped = 'requires: [python, ffmpeg, nudge]\n    decode: ["{python}", "{bundle}/dither.py", "{nudge}", '
    text = text.replace("requires: [python, ffmpeg]\n    decode: [", wrapped)
    manifest.write_text(text)
    write_sums(bundle)
    inventory = write(tmp_path / "devices.yaml", "devices:\n" + device("x86", tmp_path / "w1", 0)
                      + device("arm", tmp_path / "w2", 2))  # fmt: skip
    suite = write(tmp_path / "float.yaml", SUITE)
    env = {"FARM_STORE": str(tmp_path / "state" / "results.db"), "FARM_INVENTORY": str(inventory)}
    res = CliRunner().invoke(app, ["run", str(suite), "--bundle", str(bundle), "--json", str(tmp_path / "r.json")],
                             env=env, catch_exceptions=False)  # fmt: skip
    assert res.exit_code == 1, res.output
    within, psnr, tight, exact = json.loads((tmp_path / "r.json").read_text())["gates"]
    assert (within["value"], within["verdict"]) == (2.0, "pass")
    assert psnr["verdict"] == "pass" and 60 < psnr["value"] < 100
    # the pair is named in output digest order, which depends on the encoder's bytes
    assert tight["verdict"] == "fail"
    assert re.search(r"bars@60kbps: (x86 vs arm|arm vs x86): max \|diff\| 2", tight["detail"]), tight["detail"]
    assert exact["verdict"] == "fail" and "on x86" in exact["detail"] and "on arm" in exact["detail"]
    assert {p["bitstream"] for p in tight["inputs"]["pairs"]} == {"bars@60kbps", "bars@240kbps"}
    assert "decodes that differ" in res.output
    run_id = json.loads((tmp_path / "r.json").read_text())["run"]["id"]
    report = CliRunner().invoke(app, ["report", run_id], env=env, catch_exceptions=False)
    table = report.output[report.output.index("decodes that differ") :]
    assert "bars@240kbps" in table and "x86" in table and "arm" in table and " dB" in table
