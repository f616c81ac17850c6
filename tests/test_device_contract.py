"""One runner-level contract, run against every device kind: this machine, an SSH board, an Android phone
(the farm's ADB emulator) and an iPhone (autospecced pymobiledevice3 fakes, real decodes).

Whatever reaches the device, a suite must run the same way: every job ok, results and device properties
recorded, the power convention kept (a positive figure, or missing with a reason, never 0), decodes bit-exact
with the other devices, exit code 0. And a run that touches no iOS device never imports pymobiledevice3.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from farm.devices import ios
from tests.conftest import EXAMPLES, ROOT, write
from tests.ios_fakes import FakePhone, FakeServices, ios_bundle, ios_entry
from tests.support.runs import farm

pytestmark = pytest.mark.slow

SUITE = """name: contract
sequences:
  - id: bars
    generate: {source: testsrc2, width: 96, height: 64, fps: 30, frames: 6}
rates_kbps: [60, 120, 240, 480]
repeats: 1
warmup_frames: 1
timeout_s: 60
power: {baseline_s: 0.3, sample_hz: 20}
gates:
  - {metric: failures, op: "==", value: 0, scope: all}
  - {metric: fps, op: ">", value: 0, scope: each}
  - {metric: consistency, op: "==", value: bitexact, scope: all}
"""


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The example bundles with an ios-arm64 app target added (every other target unchanged)."""
    base = tmp_path_factory.mktemp("contract-bundles")
    return ios_bundle(EXAMPLES / "av1-svt", base / "av1"), ios_bundle(EXAMPLES / "hevc-x265", base / "hevc")


def local_entries() -> list[dict[str, object]]:
    entries: list[dict[str, object]] = yaml.safe_load((ROOT / "devices.yaml").read_text())["devices"]
    return entries


def inventory_for(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[Path, str]:
    """devices.yaml with the device under test plus the local device (the reference for bit-exactness)."""
    if kind == "local":
        entries, device_id = [{**local_entries()[0], "id": "local-b"}], "local-b"
    elif kind == "ssh":
        fleet = request.getfixturevalue("ssh_fleet")
        data = yaml.safe_load(fleet.inventory_path.read_text())
        entries, device_id = [d for d in data["devices"] if d["id"] == "board-1"], "board-1"
    elif kind == "phone":
        fleet = request.getfixturevalue("phone_fleet")
        data = yaml.safe_load(fleet.inventory_path.read_text())
        entries, device_id = [d for d in data["devices"] if d["id"] == "phone-1"], "phone-1"
    else:
        phone = FakePhone(tmp_path / "iphone")
        request.addfinalizer(phone.stop)
        monkeypatch = request.getfixturevalue("monkeypatch")
        monkeypatch.setattr(ios, "SERVICES", lambda: FakeServices(phone))
        monkeypatch.setattr(ios, "POLL_S", 0.02)
        monkeypatch.setattr(ios, "PULL_CHUNK", 4096)  # outputs come back in many reads, and must stay bit-exact
        entries, device_id = [ios_entry()], "iphone-1"
    return write(tmp_path / "devices.yaml", yaml.safe_dump({"devices": entries + local_entries()})), device_id


@pytest.mark.parametrize("kind", ["local", "ssh", "phone", "ios"])
def test_device_contract(kind: str, request: pytest.FixtureRequest, tmp_path: Path, bundles: tuple[Path, Path]) -> None:
    inv, device_id = inventory_for(kind, request, tmp_path)
    suite = write(tmp_path / "contract.yaml", SUITE)
    report = tmp_path / "r.json"
    code, out = farm(tmp_path, "run", str(suite), "--bundle", str(bundles[0]), "--anchor", str(bundles[1]),
                     "--inventory", str(inv), "--json", str(report))  # fmt: skip
    assert code == 0, out
    db = sqlite3.connect(tmp_path / "state" / "results.db")
    statuses = [s for (s,) in db.execute("SELECT status FROM jobs WHERE device_id = ?", (device_id,))]
    assert statuses and set(statuses) == {"ok"}  # 4 rates x (test + anchor)
    assert len(statuses) == 8
    (props,) = db.execute("SELECT properties_json FROM run_devices WHERE device_id = ?", (device_id,)).fetchone()
    assert json.loads(props).get("power_meter")  # what measured power (or why nothing could) is recorded
    for value, why in db.execute(
        "SELECT m.value, m.missing_reason FROM measurements m JOIN jobs j ON j.id = m.job_id "
        "WHERE j.device_id = ? AND m.name IN ('power_w', 'energy_j', 'fps')",
        (device_id,),
    ):
        assert (value is not None and value > 0) or (value is None and why), (value, why)
    rows = [r for r in json.loads(report.read_text())["results"] if r["device"] == device_id]
    assert {r["role"] for r in rows} == {"test", "anchor"}


BLOCK_AND_RECORD = """
import sys
tried = []
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "pymobiledevice3" or name.startswith("pymobiledevice3."):
            tried.append(name)
            raise ImportError("pymobiledevice3 is not installed (blocked by the test)")
sys.meta_path.insert(0, Block())
from typer.testing import CliRunner
from farm.cli import app
r = CliRunner().invoke(app, sys.argv[1:])
print(r.output)
print("EXIT", r.exit_code)
print("TRIED", tried, "LOADED", [m for m in sys.modules if m.startswith("pymobiledevice3")])
"""


def test_a_run_without_ios_devices_never_imports_pymobiledevice3(tmp_path: Path) -> None:
    suite = write(tmp_path / "contract.yaml", SUITE.replace("repeats: 1", "repeats: 1").replace(
        '  - {metric: consistency, op: "==", value: bitexact, scope: all}\n', ""))  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "FARM_STORE": str(tmp_path / "s" / "results.db"),
           "FARM_INVENTORY": str(ROOT / "devices.yaml")}  # fmt: skip
    args = ["run", str(suite), "--bundle", str(EXAMPLES / "av1-svt"), "--anchor", str(EXAMPLES / "hevc-x265")]
    res = subprocess.run([sys.executable, "-c", BLOCK_AND_RECORD, *args], capture_output=True, text=True,
                         cwd=tmp_path, env=env, timeout=300)  # fmt: skip
    assert "EXIT 0" in res.stdout, res.stdout + res.stderr
    assert "TRIED [] LOADED []" in res.stdout, res.stdout
