"""Whole-run helpers shared by the end-to-end tests: a tiny suite, the in-process CLI, bundle variants."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from typer.testing import CliRunner

from farm.bundle import write_sums
from farm.cli import app
from tests.conftest import EXAMPLES, ROOT, write

TINY_SUITE = """name: tiny
sequences:
  - id: bars
    generate: {{source: testsrc2, width: 128, height: 96, fps: 30, frames: 12}}
rates_kbps: [60, 120, 240, 480]
repeats: 2
warmup_frames: 2
timeout_s: 60
power: {{baseline_s: 0}}
gates:
{gates}
"""
PASSING = """  - {metric: fps, op: ">=", value: 1}
  - {metric: consistency, op: "==", value: bitexact, scope: all}
  - {metric: failures, op: "==", value: 0, scope: all}
  - {metric: bd_rate.psnr_yuv, op: "<", value: 1.0}"""


def farm(tmp_path: Path, *args: str) -> tuple[int, str]:
    env = {"FARM_STORE": str(tmp_path / "state" / "results.db"), "FARM_INVENTORY": str(ROOT / "devices.yaml")}
    res = CliRunner().invoke(app, list(args), env=env, catch_exceptions=False)
    return res.exit_code, res.output


def suite(tmp_path: Path, gates: str = PASSING, name: str = "tiny.yaml") -> str:
    return str(write(tmp_path / name, TINY_SUITE.format(gates=gates)))


def bundle_args(test: Path | None = None) -> list[str]:
    return ["--bundle", str(test or EXAMPLES / "av1-svt"), "--anchor", str(EXAMPLES / "hevc-x265")]


GATES = """  - {metric: fps, op: ">=", value: 1}
  - {metric: failures, op: "==", value: 0, scope: all}
  - {metric: consistency, op: "==", value: bitexact, scope: all}
  - {metric: energy_per_frame_j, op: "<=", value: 100, scope: "tag:sim"}"""


def inventory_with_local(fleet_inventory: Path, out: Path) -> Path:
    data = yaml.safe_load(fleet_inventory.read_text())
    data["devices"] += yaml.safe_load((ROOT / "devices.yaml").read_text())["devices"]
    return write(out, yaml.safe_dump(data))


def sim_suite(tmp_path: Path, gates: str = GATES, timeout_s: int = 60) -> str:
    text = TINY_SUITE.format(gates=gates).replace("power: {baseline_s: 0}", "power: {baseline_s: 0.5, sample_hz: 20}")
    return str(write(tmp_path / "sim.yaml", text.replace("timeout_s: 60", f"timeout_s: {timeout_s}")))


def variant(tmp_path: Path, name: str, wrapper: list[str]) -> Path:
    """A copy of the av1-svt bundle whose decode runs behind a shell wrapper (sleep, hang, ...)."""
    dest = tmp_path / name
    shutil.copytree(EXAMPLES / "av1-svt", dest)
    manifest = yaml.safe_load((dest / "bundle.yaml").read_text())
    for target in manifest["targets"].values():
        target["decode"] = [*wrapper, *target["decode"]]
    (dest / "bundle.yaml").write_text(yaml.safe_dump(manifest))
    write_sums(dest)
    return dest
