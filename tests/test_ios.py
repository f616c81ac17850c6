"""iOS devices over usbmux, against autospecced pymobiledevice3 fakes (tests/ios_fakes.py) and real decodes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from farm.config.inventory import Device, load_inventory
from farm.devices import ios
from farm.devices.base import AppRef
from farm.devices.ipa import read_ipa
from farm.errors import InfraError, InputError
from farm.fileio import sha256_file
from farm.power import ios_battery
from farm.transports.base import Unreachable
from tests.conftest import EXAMPLES, ROOT, write
from tests.ios_fakes import UDID, FakePhone, FakeServices, ios_bundle, ios_entry, write_ipa
from tests.support.runs import farm

IOS_SUITE = """name: ios
sequences:
  - id: bars
    generate: {{source: testsrc2, width: 128, height: 96, fps: 30, frames: 8}}
rates_kbps: [60, 120, 240, 480]
repeats: 1
warmup_frames: 2
timeout_s: {timeout}
power: {{baseline_s: 0.3, sample_hz: 20}}
gates:
  - {{metric: failures, op: "==", value: 0, scope: all}}
"""


@pytest.fixture
def phone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakePhone]:
    fake = FakePhone(tmp_path / "phone")
    monkeypatch.setattr(ios, "SERVICES", lambda: FakeServices(fake))
    monkeypatch.setattr(ios, "POLL_S", 0.02)
    yield fake
    fake.stop()


@pytest.fixture(scope="module")
def bundles(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("ios-bundles")
    return ios_bundle(EXAMPLES / "av1-svt", base / "av1"), ios_bundle(EXAMPLES / "hevc-x265", base / "hevc")


def device(**extra: object) -> Device:
    return Device.model_validate(ios_entry(**extra))


def app_of(bundle: Path) -> AppRef:
    manifest = yaml.safe_load((bundle / "bundle.yaml").read_text())
    target = manifest["targets"]["ios-arm64"]
    return AppRef(target["bundle_id"], bundle / target["app"], sha256_file(bundle / target["app"]))


def inventory(tmp_path: Path, *entries: dict[str, object], local: bool = True) -> Path:
    data = {"devices": list(entries)}
    if local:
        data["devices"] += yaml.safe_load((ROOT / "devices.yaml").read_text())["devices"]
    return write(tmp_path / "devices.yaml", yaml.safe_dump(data))


def run(tmp_path: Path, inv: Path, bundles: tuple[Path, Path], timeout: int = 60) -> tuple[int, str, dict]:
    suite = write(tmp_path / "ios.yaml", IOS_SUITE.format(timeout=timeout))
    report = tmp_path / "r.json"
    code, out = farm(tmp_path, "run", str(suite), "--bundle", str(bundles[0]), "--anchor", str(bundles[1]),
                     "--inventory", str(inv), "--json", str(report))  # fmt: skip
    return code, out, json.loads(report.read_text()) if report.is_file() else {}


def jobs(tmp_path: Path, device_id: str) -> list[tuple[str, str | None]]:
    db = sqlite3.connect(tmp_path / "state" / "results.db")
    return list(db.execute("SELECT status, error FROM jobs WHERE device_id = ? ORDER BY id", (device_id,)))


# -- pure parts ----------------------------------------------------------------------------------------------
def test_battery_maths_discharging_is_positive_watts() -> None:
    r = ios_battery.parse({"InstantAmperage": -900, "Voltage": 3870, "Temperature": 3125, "IsCharging": False,
                           "ExternalConnected": False, "CurrentCapacity": 81, "MaxCapacity": 100})  # fmt: skip
    assert r.watts == pytest.approx(0.9 * 3.87)
    assert r.temp_c == pytest.approx(31.25) and r.level == pytest.approx(0.81)
    assert r.state().charging is False and r.status == "Discharging"


def test_battery_maths_unsigned_current_fallbacks_and_missing() -> None:
    # a gauge that reports the 16-bit current unsigned: 65535 - 499 is -500 mA
    r = ios_battery.parse({"Amperage": 65036, "AppleRawBatteryVoltage": 4000})
    assert r.watts == pytest.approx(0.5 * 4.0)
    assert r.state().charging is None  # no IsCharging: charging cannot be ruled out
    charging = ios_battery.parse({"InstantAmperage": 1500, "Voltage": 4100, "IsCharging": True})
    assert charging.watts is not None and charging.watts < 0 and charging.state().charging is True
    full_on_cable = ios_battery.parse({"InstantAmperage": 0, "Voltage": 4300, "IsCharging": False,
                                       "ExternalConnected": True})  # fmt: skip
    assert full_on_cable.status == "Not charging" and full_on_cable.state().charging is True
    assert ios_battery.parse(None).watts is None
    assert ios_battery.parse({"InstantAmperage": -900}).watts is None  # no voltage: missing, never 0
    assert ios_battery.parse({"InstantAmperage": -900000, "Voltage": 3870}).watts is None  # implausible units


def test_ipa_reader(tmp_path: Path) -> None:
    info = read_ipa(write_ipa(tmp_path / "a.ipa", "org.example.dec", "2.1", "77"))
    assert (info.bundle_id, info.short_version, info.build) == ("org.example.dec", "2.1", "77")
    assert info.digest == sha256_file(tmp_path / "a.ipa")
    with zipfile.ZipFile(tmp_path / "bad.ipa", "w") as z:
        z.writestr("../../Payload/X.app/Info.plist", b"x")
    with pytest.raises(InputError, match="exactly one"):
        read_ipa(tmp_path / "bad.ipa")
    (tmp_path / "junk.ipa").write_bytes(b"not a zip")
    with pytest.raises(InputError, match="not a readable"):
        read_ipa(tmp_path / "junk.ipa")


def test_inventory_ios_needs_usbmux_and_ios_target(tmp_path: Path) -> None:
    assert load_inventory(inventory(tmp_path, ios_entry(), local=False)).devices[0].platform == "ios"
    bad = ios_entry(target="linux-x86_64")
    with pytest.raises(InputError) as exc:
        load_inventory(inventory(tmp_path, bad, local=False))
    assert "devices.yaml" in str(exc.value) and "ios-*" in str(exc.value)
    with pytest.raises(InputError, match="usbmux"):
        load_inventory(inventory(tmp_path, ios_entry(transport={"kind": "local"}), local=False))
    with pytest.raises(InputError, match="udid"):
        load_inventory(inventory(tmp_path, ios_entry(transport={"kind": "usbmux", "udid": "x; rm"}), local=False))


# -- the device, call by call --------------------------------------------------------------------------------
def test_install_skipped_when_version_and_digest_match(phone: FakePhone, tmp_path: Path, bundles: tuple) -> None:
    app = app_of(bundles[0])
    for _ in range(2):
        dev = ios.connect_ios(device(), tmp_path)
        try:
            dev.install_app(app)
        finally:
            dev.close()
    assert phone.installs == [app.bundle_id]  # the second session found the same version and digest
    # a new build of the same app is installed again
    newer = tmp_path / "newer"
    ios_bundle(EXAMPLES / "av1-svt", newer, build="2")
    dev = ios.connect_ios(device(), tmp_path)
    try:
        dev.install_app(app_of(newer))
    finally:
        dev.close()
    assert phone.installs == [app.bundle_id, app.bundle_id]
    assert phone.apps[app.bundle_id]["CFBundleVersion"] == "2"


def test_push_skips_what_the_container_has(phone: FakePhone, tmp_path: Path, bundles: tuple) -> None:
    app = app_of(bundles[0])
    stream = write(tmp_path / "s.ivf", "bitstream bytes")
    files = [(stream, f"{ios.WORKDIR}/cas/{sha256_file(stream)}.ivf", sha256_file(stream))]
    counters = []
    for _ in range(2):
        dev = ios.connect_ios(device(), tmp_path)
        try:
            dev.prepare("jobs/r1")
            dev.install_app(app)
            dev.stage(files)
            counters.append((dev.counter.pushed_files, dev.counter.reused_files))
        finally:
            dev.close()
    assert counters == [(2, 0), (0, 2)]  # app + bitstream, then both reused
    assert phone.host(app.bundle_id, files[0][1]).read_bytes() == b"bitstream bytes"


def test_launch_passes_the_contract_arguments_and_collects(phone: FakePhone, tmp_path: Path, bundles: tuple) -> None:
    code, out, report = run(tmp_path, inventory(tmp_path, ios_entry(), local=False), bundles)
    assert code == 0, out
    args = phone.launches[0]
    assert len(args) == 3 and args[0].startswith(f"{ios.WORKDIR}/cas/") and args[1].endswith("/out.y4m")
    assert args[2].endswith("/stats.jsonl")
    rows = [r for r in report["results"] if r["device"] == "iphone-1"]
    assert rows and all(r["fps_p50"] is not None for r in rows)
    assert all(r["power_w"] is not None and r["power_w"] > 0 for r in rows)  # host-sampled, sign normalised
    db = sqlite3.connect(tmp_path / "state" / "results.db")
    (props,) = db.execute("SELECT properties_json FROM run_devices WHERE device_id = 'iphone-1'").fetchone()
    assert "IORegistry" in props and "iPhone14,5" in props
    charging = db.execute(
        "SELECT m.value FROM measurements m JOIN jobs j ON j.id = m.job_id WHERE j.device_id = 'iphone-1' "
        "AND m.name = 'charging'"
    ).fetchall()
    assert charging and all(v == (0.0,) for v in charging)
    conventions = dict(db.execute(
        "SELECT m.name, m.convention FROM measurements m JOIN jobs j ON j.id = m.job_id WHERE j.device_id = "
        "'iphone-1' AND m.name IN ('power_w', 'battery_level', 'battery_temp_c')"
    ).fetchall())  # fmt: skip
    # the conventions say what an iPhone measures with, not what a phone's sysfs would have been
    assert "20 Hz polled from the host over usbmux" in conventions["power_w"]
    assert all("IORegistry" in conventions[n] for n in ("battery_level", "battery_temp_c")), conventions


def test_charging_phone_reports_power_missing(phone: FakePhone, tmp_path: Path, bundles: tuple) -> None:
    phone.charging = True
    code, out, report = run(tmp_path, inventory(tmp_path, ios_entry(), local=False), bundles)
    assert code == 0, out
    assert "warning: battery Charging" in out or "Charging" in out
    rows = [r for r in report["results"] if r["device"] == "iphone-1"]
    assert rows and all(r["power_w"] is None for r in rows)


def test_timeout_kills_the_app(phone: FakePhone, tmp_path: Path, bundles: tuple) -> None:
    phone.app_behaviour = "hang"
    code, _, _ = run(tmp_path, inventory(tmp_path, ios_entry(), local=False), bundles, timeout=1)
    assert code == 1
    rows = jobs(tmp_path, "iphone-1")
    assert rows and all(s == "failed" and "timed out after 1s" in (e or "") for s, e in rows)
    assert phone.kills and not phone.running()


def test_app_crash_fails_the_job_with_the_reason(phone: FakePhone, tmp_path: Path, bundles: tuple) -> None:
    phone.app_behaviour = "crash"
    code, _, _ = run(tmp_path, inventory(tmp_path, ios_entry(), local=False), bundles)
    assert code == 1
    rows = jobs(tmp_path, "iphone-1")
    assert rows and all(s == "failed" and "without writing result.json" in (e or "") for s, e in rows)


def test_nonzero_exit_keeps_the_log(phone: FakePhone, tmp_path: Path, bundles: tuple) -> None:
    phone.app_behaviour = "fail"
    code, _, _ = run(tmp_path, inventory(tmp_path, ios_entry(), local=False), bundles)
    assert code == 1
    rows = jobs(tmp_path, "iphone-1")
    assert rows and all(e == "decoder exited 3: no such codec" for _, e in rows)


def test_unplugged_mid_run_fails_its_jobs_and_the_run_continues(
    phone: FakePhone, tmp_path: Path, bundles: tuple
) -> None:
    phone.unplug_on_launch = True
    code, out, _ = run(tmp_path, inventory(tmp_path, ios_entry()), bundles)
    assert code == 1, out
    rows = jobs(tmp_path, "iphone-1")
    assert rows and all(s == "failed" and "disconnected" in (e or "") for s, e in rows)
    assert jobs(tmp_path, "local") and all(s == "ok" for s, _ in jobs(tmp_path, "local"))


@pytest.mark.parametrize(
    ("version", "tunnel", "mounted", "says"),
    [
        ("17.4", "tunneld-down", True, "tunneld is not running"),
        ("17.4", "none", True, "has no tunnel to"),
        ("16.7", "up", False, "developer disk image"),
    ],
)
def test_missing_tunnel_or_developer_image_is_named(
    phone: FakePhone, tmp_path: Path, version: str, tunnel: str, mounted: bool, says: str
) -> None:
    phone.ios_version, phone.tunnel, phone.ddi_mounted = version, tunnel, mounted
    with pytest.raises(InfraError, match=says):
        ios.connect_ios(device(), tmp_path)


def test_ios17_with_tunnel_connects(phone: FakePhone, tmp_path: Path) -> None:
    phone.ios_version = "17.4"
    dev = ios.connect_ios(device(), tmp_path)
    try:
        props = dev.info()
        assert props["ios.version"] == "17.4" and props["udid"] == UDID
        dev.check_target("ios-arm64", props)
        with pytest.raises(InfraError):
            dev.check_target("ios-x86_64", props)
    finally:
        dev.close()


def test_unplugged_device_is_unreachable(phone: FakePhone, tmp_path: Path) -> None:
    phone.present = False
    with pytest.raises(Unreachable, match="cannot reach"):
        ios.connect_ios(device(), tmp_path)


def test_farm_devices_lists_usbmux_devices(phone: FakePhone, tmp_path: Path) -> None:
    code, out = farm(tmp_path, "devices", "--inventory", str(inventory(tmp_path, ios_entry())), "--usbmux")
    assert code == 0, out
    assert UDID in out and "iPhone14,5" in out and "16.7" in out


# -- without the extra ---------------------------------------------------------------------------------------
BLOCK = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "pymobiledevice3" or name.startswith("pymobiledevice3."):
            raise ImportError("No module named 'pymobiledevice3' (blocked by the test)")
sys.meta_path.insert(0, Block())
"""


def test_missing_extra_is_named_and_the_rest_works(tmp_path: Path) -> None:
    inv = inventory(tmp_path, ios_entry())
    code = BLOCK + (
        "from typer.testing import CliRunner\nfrom farm.cli import app\n"
        f"r = CliRunner().invoke(app, ['devices', '--inventory', {str(inv)!r}, '--check'])\n"
        "print(r.output); print('EXIT', r.exit_code)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})  # fmt: skip
    assert "'ios' extra" in res.stdout, res.stdout + res.stderr
    assert "local" in res.stdout and "EXIT 3" in res.stdout  # the local device is still listed and checked


@pytest.mark.skipif(not os.environ.get("FARM_IOS_UDID"), reason="FARM_IOS_UDID is not set (no iPhone attached)")
def test_smoke_suite_on_a_real_iphone(tmp_path: Path) -> None:
    """Hardware: FARM_IOS_UDID names the phone, FARM_IOS_BUNDLE a bundle whose ios-arm64 app is a real decoder."""
    bundle = os.environ.get("FARM_IOS_BUNDLE")
    if not bundle:
        pytest.fail("FARM_IOS_BUNDLE must name a bundle with an ios-arm64 decoder app (docs/ios.md)")
    entry = ios_entry(transport={"kind": "usbmux", "udid": os.environ["FARM_IOS_UDID"]})
    inv = inventory(tmp_path, entry)
    # the bundle is its own anchor: smoke.yaml gates BD-rate, and a BD-rate gate without an anchor is refused
    code, out = farm(tmp_path, "run", str(ROOT / "suites/smoke.yaml"), "--bundle", bundle, "--anchor", bundle,
                     "--inventory", str(inv), "--devices", "iphone-1")  # fmt: skip
    assert code in (0, 1), out
    assert all(s == "ok" for s, _ in jobs(tmp_path, "iphone-1")), out
