"""The Android device layer: fuel-gauge inference, battery state, getprop properties, target check, charger
suspend, and the emulated phones that ``farm sim up --adb`` starts (real ADB over TCP, real processes)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from farm.config.inventory import AdbTransport
from farm.devices.android import AndroidDevice
from farm.errors import InfraError
from farm.power import battery
from farm.power.sampler import parse_samples
from farm.sim.battery import Battery, BatteryParams, PowerSupplyTree
from farm.sim.loadmodel import LoadModel
from farm.sim.phone import SimPhone
from farm.transports.adb import AdbLink
from farm.transports.local import LocalTransport
from tests.conftest import alive, wait_for
from tests.sim_fixtures import PhoneFactory

BASE = "/sys/class/power_supply/battery"


def entry(status: str = "Discharging", volt: float | None = 3_850_000, curr: float | None = -450_000,
          power: float | None = None) -> battery.Entry:  # fmt: skip
    return battery.Entry("battery", "Battery", status, volt, curr, power, 80.0, 310.0)


# -- inference: pure ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("volt", "curr", "units", "sign"),
    [
        (3_850_000, -450_000, ("uV", "uA"), -1.0),  # the kernel ABI units, negative while discharging (Pixel)
        (3_850_000, 450_000, ("uV", "uA"), 1.0),
        (3850, 450, ("mV", "mA"), 1.0),  # milli units (seen on some vendors' gauges)
        (3850, -450, ("mV", "mA"), -1.0),
        (7_700_000, 300_000, ("uV", "uA"), 1.0),  # a two-cell tablet pack
    ],
)
def test_units_and_sign_are_inferred_from_a_discharging_reading(
    volt: float, curr: float, units: tuple[str, str], sign: float
) -> None:
    meter, reason = battery.infer(entry(volt=volt, curr=curr), BASE)
    assert reason is None and meter is not None
    assert meter.sign == sign and meter.pairs
    scale = {"uV": 1e-6, "mV": 1e-3, "uA": 1e-6, "mA": 1e-3}
    assert meter.scale == (scale[units[0]], scale[units[1]])
    assert f"{units[0]}, {units[1]}" in meter.description and "inferred" in meter.description
    # and the sampler maths then gives the positive draw: |I| x V
    watts = parse_samples(meter, f"1000000000 {volt:g} {curr:g}\n")[0].watts
    assert watts == pytest.approx(abs(curr) * scale[units[1]] * volt * scale[units[0]])
    assert watts > 0


def test_a_charging_battery_gives_no_sign_unless_configured() -> None:
    meter, reason = battery.infer(entry(status="Charging", curr=900_000), BASE)
    assert meter is None and reason is not None and "'Charging'" in reason and "power.sign" in reason
    meter, reason = battery.infer(entry(status="Charging", curr=900_000), BASE, sign=-1)
    assert meter is not None and meter.sign == -1.0 and "configured sign" in meter.description


@pytest.mark.parametrize(
    ("volt", "curr", "why"),
    [
        (12, 450_000, "neither uV nor mV"),
        (3_850_000, 0, "reads 0"),
        (3_850_000, 50_000_000, "not exactly one plausible"),  # 192 W as uA, 192 kW as mA
    ],
)
def test_implausible_readings_refuse_the_meter(volt: float, curr: float, why: str) -> None:
    meter, reason = battery.infer(entry(volt=volt, curr=curr), BASE)
    assert meter is None and reason is not None and why in reason


def test_configured_unit_overrides_inference() -> None:
    meter, _ = battery.infer(entry(curr=-450), BASE, current_unit="uA")  # 1.7 mW would not be plausible
    assert meter is None or meter.scale[1] == 1e-6
    meter, _ = battery.infer(entry(curr=-450_000), BASE, current_unit="mA")
    assert meter is not None and meter.scale[1] == 1e-3


def test_power_now_is_used_when_current_now_is_missing() -> None:
    meter, reason = battery.infer(entry(curr=None, power=-1_700_000), BASE)
    assert reason is None and meter is not None
    assert meter.nodes == (f"{BASE}/power_now",) and meter.sign == -1.0
    assert parse_samples(meter, "1000000000 -1700000\n")[0].watts == pytest.approx(1.7)


# -- probing a real (virtual) sysfs through a real shell ----------------------------------------------------
def local_run(argv: object) -> tuple[int, str]:
    res = LocalTransport().run(list(argv), timeout=10)  # type: ignore[call-overload]
    return res.exit_status or 0, res.text()


def test_probe_finds_the_battery_and_reads_its_state(tmp_path: Path) -> None:
    model = LoadModel()
    cell = Battery(BatteryParams(charger=False, current_unit="mA", voltage_unit="mV", current_sign=1))
    cell.step(model.power_w, 1.0)
    tree = PowerSupplyTree(tmp_path)
    tree.create(cell, model)
    gauge = battery.probe(local_run, str(tmp_path / "sys"))
    assert gauge is not None and gauge.meter is not None and gauge.reason is None
    assert gauge.meter.sign == 1.0 and gauge.meter.scale == (1e-3, 1e-3)
    state = battery.read_state(local_run, gauge)
    assert state.status == "Discharging" and state.charging is False
    assert state.level == pytest.approx(0.8) and state.temp_c == pytest.approx(34.5)
    (tree.battery_dir / "status").write_text("Charging\n")
    assert battery.read_state(local_run, gauge).charging is True
    (tree.battery_dir / "status").unlink()
    assert battery.read_state(local_run, gauge).charging is None  # unknown, never "not charging"


def test_probe_without_a_battery_is_none(tmp_path: Path) -> None:
    (tmp_path / "sys" / "class" / "power_supply" / "usb").mkdir(parents=True)
    (tmp_path / "sys" / "class" / "power_supply" / "usb" / "type").write_text("USB\n")
    assert battery.probe(local_run, str(tmp_path / "sys")) is None


# -- the simulated battery ---------------------------------------------------------------------------------
def test_simulated_battery_reads_charger_minus_load_while_charging() -> None:
    cell = Battery(BatteryParams(charger=True, charge_w=7.5, level=0.5))
    cell.step(load_w=2.0, dt_s=1.0)
    assert cell.status == "Charging" and cell.current_a < 0  # net current flows into the battery
    cell.suspended = True
    cell.step(load_w=2.0, dt_s=1.0)
    assert cell.status == "Discharging" and cell.current_a == pytest.approx(2.0 / cell.voltage_v, rel=1e-3)


# -- emulated phones over real ADB --------------------------------------------------------------------------
def link(phone: SimPhone, key: Path) -> AdbLink:
    settings = AdbTransport(kind="adb", address=phone.address, key=str(key), tmpdir=str(phone.tmpdir))
    adb = AdbLink(phone.name, settings)
    adb.connect()
    return adb


def test_phone_properties_target_check_and_charger_suspend(sim_phone: PhoneFactory) -> None:
    phone = sim_phone("p1")
    dev = AndroidDevice(phone.name, link(phone, sim_phone.key), str(phone.workdir))
    try:
        props = dev.info()
        assert props["android.serialno"] == "p1" and props["android.sdk"] == "34"
        assert props["android.fingerprint"].startswith("codec-farm/") and props["android.abi"]
        dev.check_target(f"android-{props['machine']}", props)
        with pytest.raises(InfraError, match=r"target android-mips64 but the phone's ABIs are"):
            dev.check_target("android-mips64", props)
        status = phone.supply.battery_dir / "status"
        assert status.read_text().strip() == "Charging"
        dev.write_node(str(phone.supply.suspend_node), "1")
        assert wait_for(lambda: status.read_text().strip() == "Discharging", 3)
        dev.write_node(str(phone.supply.suspend_node), "0")
        assert wait_for(lambda: status.read_text().strip() == "Charging", 3)
    finally:
        dev.transport.close()


def test_phone_power_follows_its_own_load(sim_phone: PhoneFactory) -> None:
    phone = sim_phone("busy", battery=BatteryParams(charger=False))
    current = phone.supply.battery_dir / "current_now"
    idle = abs(int(current.read_text()))
    adb = link(phone, sim_phone.key)
    try:
        adb.run(["sh", "-c", "timeout 1.5 sh -c 'while :; do :; done'; exit 0"], timeout=10)
        busy = abs(int(current.read_text()))
    finally:
        adb.close()
    # one busy core adds 2 W to the model's 1.5 W idle: the discharge current roughly doubles
    assert busy > 1.5 * idle, (idle, busy)


def test_sim_up_and_down_with_phones(tmp_path: Path) -> None:
    env_cwd = tmp_path
    up = subprocess.run(
        ["python3", "-m", "farm", "sim", "up", "--adb", "1"], cwd=env_cwd, capture_output=True, text=True, timeout=60
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert "phone-1: adb connect 127.0.0.1:" in up.stdout and "SIMULATED" in up.stdout
    inventory = (tmp_path / ".farm/sim/devices.yaml").read_text()
    assert "platform: android" in inventory and "board-" not in inventory
    marker = str(tmp_path / ".farm/sim/phones/phone-1")
    assert alive(marker)
    down = subprocess.run(["python3", "-m", "farm", "sim", "down"], cwd=env_cwd, capture_output=True, text=True)
    assert down.returncode == 0 and "stopped phone-1" in down.stdout
    assert wait_for(lambda: not alive(marker), 5)
