"""Power instruments and device kinds as registries: chosen by devices.yaml and what a device offers, extensible by
one module, and measuring the same watts as before (real scripts on this machine against fake sysfs trees)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from farm.config.inventory import Device, PowerSettings
from farm.devices import kind as kinds
from farm.devices.android import AndroidDevice
from farm.devices.base import FarmDevice
from farm.devices.posix import PosixDevice
from farm.errors import InfraError
from farm.power import probe as power_probe
from farm.power.instrument import Channel, DeviceShell, Instrument, Probe, Window
from farm.power.ios_battery import IosBatteryInstrument, IosBatteryReading
from farm.power.probe import PowerSource, ProbeContext
from farm.power.sampler import PowerSample
from farm.power.sysfs import SysfsInstrument
from farm.transports.local import LocalTransport

REPO = Path(__file__).resolve().parent.parent


def put(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{value}\n")


def ina3221(root: Path) -> None:
    """A Jetson's INA3221: three rails, the board's input labelled VDD_IN (5 V x 400 mA = 2 W)."""
    hw = root / "class" / "hwmon" / "hwmon3"
    put(hw / "name", "ina3221")
    for ch, label, mv, ma in ((1, "VDD_CPU_GPU_CV", 5000, 100), (2, "VDD_IN", 5000, 400), (3, "VDD_SOC", 5000, 50)):
        put(hw / f"in{ch}_label", label)
        put(hw / f"in{ch}_input", mv)
        put(hw / f"curr{ch}_input", ma)


def fuel_gauge(root: Path, status: str = "Discharging") -> None:
    """A phone battery discharging at 3.8 V x 450 mA (uV, uA, positive while discharging)."""
    bat = root / "class" / "power_supply" / "battery"
    for name, value in (("type", "Battery"), ("status", status), ("voltage_now", 3_800_000),
                        ("current_now", 450_000), ("capacity", 80), ("temp", 301)):  # fmt: skip
        put(bat / name, value)


def posix(tmp_path: Path, cls: type[PosixDevice] = PosixDevice) -> PosixDevice:
    return cls("t", LocalTransport(), str(tmp_path / "work"), command_timeout=20)


def settings(root: Path, **kw: object) -> PowerSettings:
    return PowerSettings.model_validate({"sysfs_root": str(root), **kw})


# -- probing: devices.yaml and what the device offers, never the platform string ----------------------------
def test_a_board_finds_its_ina3221_input_rail_whatever_platform_is_claimed(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    ina3221(root)
    fuel_gauge(root)  # a laptop-like battery: a board's auto never measures with it
    for platform in ("linux", "android", "ios"):
        found = posix(tmp_path).probe_power(settings(root), platform, charger_suspended=False)
        assert isinstance(found.meter, SysfsInstrument)
        assert "VDD_IN" in found.meter.description
        assert found.meter.channels == (Channel("hwmon3", "voltage", "V"), Channel("hwmon3", "current", "A"))


def test_a_phone_prefers_its_fuel_gauge_and_falls_back_to_sysfs_meters(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    ina3221(root)
    fuel_gauge(root)
    phone = posix(tmp_path, AndroidDevice)
    found = phone.probe_power(settings(root), "linux", charger_suspended=False)
    assert found.meter is not None and "battery fuel gauge" in found.meter.description
    state = phone.battery()
    assert state is not None and state.level == pytest.approx(0.8) and state.temp_c == pytest.approx(30.1)
    bare = tmp_path / "bare"
    ina3221(bare)  # an Android dev board without a battery
    found = phone.probe_power(settings(bare), "android", charger_suspended=False)
    assert found.meter is not None and "VDD_IN" in found.meter.description and phone.battery() is None


def test_a_charging_phone_has_no_meter_but_says_why_and_keeps_its_battery_state(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    fuel_gauge(root, status="Charging")
    phone = posix(tmp_path, AndroidDevice)
    found = phone.probe_power(settings(root), "android", charger_suspended=False)
    assert found.meter is None and found.reason is not None and "power.sign" in found.reason
    state = phone.battery()
    assert state is not None and state.charging is True


def test_explicit_meters_and_none(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    ina3221(root)
    dev = posix(tmp_path)
    assert dev.probe_power(settings(root, meter="none"), "linux", False).meter is None
    node = str(root / "class" / "hwmon" / "hwmon3" / "curr1_input")
    found = dev.probe_power(settings(root, meter="sysfs", nodes=[node], unit="mW"), "linux", False)
    assert isinstance(found.meter, SysfsInstrument) and found.meter.meter.nodes == (node,)
    found = dev.probe_power(settings(root, meter="battery"), "linux", False)  # asked for, but there is none
    assert found.meter is None and found.reason is None


def test_a_meter_the_device_cannot_reach_is_named_with_what_it_can(tmp_path: Path) -> None:
    @dataclass
    class Phone:
        device_id: str = "ios"
        command_timeout: float = 5.0

        def battery_reading(self) -> IosBatteryReading:
            return IosBatteryReading(1.0, 3.9, -0.25, 30.0, 0.5, False, False)

    rapl = settings(tmp_path, meter="rapl", nodes=["/sys/class/powercap/intel-rapl:0/energy_uj"])
    found = power_probe.probe(Phone(), rapl, auto=("ios-battery",))
    assert found.instrument is None and found.reason is not None
    assert "'rapl'" in found.reason and "battery" in found.reason
    found = power_probe.probe(Phone(), settings(tmp_path), auto=("ios-battery",))
    assert isinstance(found.instrument, IosBatteryInstrument)
    samples = found.instrument.measure(Window("-", "w", 50.0, 10.0), lambda: None)
    assert len(samples) >= 2 and all(s.watts == 1.0 for s in samples)


# -- one new module: a source registered at run time is used like the built-in ones --------------------------
@dataclass
class BenchMeter:
    """An external meter polled from the host: no device shell involved (an Instrument all the same)."""

    description: str = "bench meter (test)"
    channels: tuple[Channel, ...] = (Channel("usb", "power", "W"),)
    windows: list[Window] = field(default_factory=list)

    def measure(self, window: Window, during: Callable[[], object]) -> list[PowerSample]:
        self.windows.append(window)
        during()
        return [PowerSample(0.0, 1.5), PowerSample(1.0, 1.5)]


@pytest.fixture
def bench_source() -> Iterator[BenchMeter]:
    meter = BenchMeter()

    def found(target: object, s: PowerSettings, c: ProbeContext) -> Probe | None:
        return Probe(meter)

    before = power_probe.sources()
    power_probe.register(PowerSource("bench", frozenset({"sysfs"}), lambda t: isinstance(t, DeviceShell), found))
    yield meter
    power_probe._SOURCES.clear()
    power_probe._SOURCES.update(before)


def test_a_registered_source_serves_auto_and_the_window_keeps_thermal(tmp_path: Path, bench_source: BenchMeter) -> None:
    zone = tmp_path / "zone"
    put(zone, 41000)
    dev = posix(tmp_path)
    dev.prepare("jobs/w")
    found = power_probe.probe(dev, settings(tmp_path), auto=("bench",))
    assert found.instrument is bench_source and isinstance(found.instrument, Instrument)
    ran: list[int] = []

    def decode() -> None:  # long enough for the thermal sampler (5 Hz at most) to take a few samples
        time.sleep(1.0)
        ran.append(1)

    power, temps = dev.power_window(bench_source, [str(zone)], f"{dev.workdir}/jobs/w", "j", 20.0, 30.0, decode)
    assert ran == [1] and [s.watts for s in power] == [1.5, 1.5] and bench_source.windows[0].hz == 20.0
    assert temps and all(t == pytest.approx(41.0) for t in temps)


def test_the_on_device_sampler_measures_a_rail_in_watts(tmp_path: Path) -> None:
    root = tmp_path / "sys"
    ina3221(root)
    dev = posix(tmp_path)
    dev.prepare("jobs/w")
    meter = dev.probe_power(settings(root), "linux", False).meter
    power, temps = dev.power_window(meter, [], f"{dev.workdir}/jobs/w", "j", 20.0, 30.0, lambda: None)
    assert len(power) >= 2 and all(s.watts == pytest.approx(2.0) for s in power) and temps == []
    with pytest.raises(TypeError, match="not a power instrument"):
        dev.power_window(object(), [], dev.workdir, "j", 20.0, 30.0, lambda: None)  # type: ignore[arg-type]


# -- device kinds ---------------------------------------------------------------------------------------------
def local_entry(**kw: object) -> Device:
    return Device.model_validate(
        {"id": "here", "platform": "linux", "target": "linux-x86_64", "transport": {"kind": "local"}, **kw}
    )


@pytest.fixture
def restore_kinds() -> Iterator[None]:
    before = dict(kinds._KINDS)
    yield
    kinds._KINDS.clear()
    kinds._KINDS.update(before)


def test_a_registered_kind_is_set_up_and_torn_down_when_setup_fails(tmp_path: Path, restore_kinds: None) -> None:
    closed: list[str] = []

    @dataclass
    class Board(PosixDevice):
        def close(self) -> None:
            closed.append(self.device_id)
            super().close()

    def connect(device: Device, state_dir: Path) -> Board:
        return Board(device.id, LocalTransport(), str(state_dir / "w"))

    def setup(dev: Board, device: Device) -> None:
        if device.workdir == "/refused":
            raise InfraError("setup refused")
        dev.workdir = "/set/up"

    kinds.register(kinds.DeviceKind("local", connect, setup))
    dev: FarmDevice = kinds.open_device(local_entry(), tmp_path)
    assert isinstance(dev, Board) and dev.workdir == "/set/up" and closed == []
    kinds.teardown(local_entry(), dev)
    assert closed == ["here"]
    with pytest.raises(InfraError, match="setup refused"):
        kinds.open_device(local_entry(workdir="/refused"), tmp_path)
    assert closed == ["here", "here"]


def test_kinds_load_on_first_use_and_ios_never_for_other_devices() -> None:
    code = (
        "import sys; from pathlib import Path; import tempfile\n"
        "from farm.devices.connect import connect, disconnect\n"
        "from farm.config.inventory import Device\n"
        "d = Device.model_validate({'id': 'h', 'platform': 'linux', 'target': 'linux-x86_64',"
        " 'transport': {'kind': 'local'}})\n"
        "disconnect(d, connect(d, Path(tempfile.mkdtemp())))\n"
        "from farm.devices import kind\n"
        "print(kind.registered(), sorted(m for m in sys.modules if 'ios' in m or 'pymobiledevice3' in m))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env={"PYTHONPATH": str(REPO)}
    )
    assert out.stdout.strip() == "('local',) []"


def test_a_sign_is_inferred_only_once_two_discharging_readings_agree(tmp_path: Path) -> None:
    """Right after the charger is suspended the gauge may say Discharging while current_now still shows the
    charge (separate files, updated one after the other): that first reading alone would flip every energy."""
    root = tmp_path / "sys"
    fuel_gauge(root)  # positive while discharging: +450 mA
    current = root / "class" / "power_supply" / "battery" / "current_now"
    put(current, -1_200_000)  # still the charge current, with the status already Discharging
    settle = threading.Timer(0.15, lambda: put(current, 450_000))
    settle.start()
    try:
        found = posix(tmp_path, AndroidDevice).probe_power(settings(root), "android", charger_suspended=True)
    finally:
        settle.cancel()
    assert isinstance(found.meter, SysfsInstrument) and found.meter.meter.sign == 1.0, found
    assert "sign inferred from a discharging reading of 450000" in found.meter.description


def test_a_sign_that_never_settles_leaves_power_missing_with_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from farm.power import battery
    from farm.power.sources import fuel_gauge as source

    monkeypatch.setattr(source, "CHARGER_SETTLE_S", 1.0)
    monkeypatch.setattr(source, "SIGN_CONFIRM_S", 0.05)
    root = tmp_path / "sys"
    fuel_gauge(root)
    current = root / "class" / "power_supply" / "battery" / "current_now"
    real_probe, flips = battery.probe, [450_000]

    def flipping(*args: Any, **kwargs: Any) -> battery.Gauge | None:
        flips.append(-flips[-1])  # the gauge's current changes sign before each reading the farm takes
        put(current, flips[-1])
        return real_probe(*args, **kwargs)

    monkeypatch.setattr(battery, "probe", flipping)
    found = posix(tmp_path, AndroidDevice).probe_power(settings(root), "android", charger_suspended=True)
    assert found.meter is None and "changed sign between two discharging readings" in (found.reason or ""), found
    assert len(flips) > 3
