"""Live device health for ``farm serve``: a background poller with a bounded period, never driven by a scrape.

Why a poller and not a probe per scrape: a scrape must never talk to a device (a slow phone would make every
scrape slow, and Prometheus scrapes several times a minute from possibly several servers). The poller probes
every inventory device at a fixed period with one ``sh`` round trip each, in parallel, and scrapes read its
latest snapshot from memory.

Why bounded: the period is limited to [MIN_PERIOD_S, MAX_PERIOD_S], a probe that does not answer within its
timeout marks the device down for that round, and a device whose probe is still hanging is not probed again
until it returns, so a dead link can neither pile up threads nor delay the other devices.

What a probe reads (on the device, through its own transport): the hottest readable thermal zone (the
inventory's zones, else every ``/sys/class/thermal/thermal_zone*/temp``), and the battery's ``capacity`` and
``status`` of the first system Battery under ``<power.sysfs_root>/class/power_supply`` (the same sysfs root the
power meter uses, so an emulated phone's virtual battery is found too). What cannot be read is missing (None),
never 0.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from farm.config.inventory import Device
from farm.devices.base import FarmDevice
from farm.devices.connect import connect
from farm.devices.posix import PosixDevice, hottest_millidegrees
from farm.errors import FarmError

MIN_PERIOD_S = 1.0
MAX_PERIOD_S = 3600.0

# $1 the power_supply class directory; then thermal zone files, or "auto". Prints "capacity N", "status TEXT"
# (when a system battery was found: type Battery, scope not Device, i.e. not a peripheral's) and one "temp N"
# line per zone ("-" when unreadable).
_PROBE_SCRIPT = r"""
c=$1; shift
b=
for s in "$c"/*; do
  [ "$(cat "$s/type" 2>/dev/null)" = Battery ] || continue
  [ "$(cat "$s/scope" 2>/dev/null)" = Device ] && continue
  b=$s; break
done
if [ -n "$b" ]; then
  v=; { read -r v <"$b/capacity"; } 2>/dev/null; echo "capacity ${v:--}"
  v=; { read -r v <"$b/status"; } 2>/dev/null; echo "status ${v:--}"
fi
if [ "$1" = auto ]; then set -- /sys/class/thermal/thermal_zone*/temp; fi
for z do v=; { read -r v <"$z"; } 2>/dev/null; echo "temp ${v:--}"; done
exit 0
"""

_CHARGING = {"Charging": True, "Discharging": False, "Not charging": False, "Full": False}


@dataclass(frozen=True)
class Reading:
    """What one successful probe read."""

    temperature_c: float | None
    battery_ratio: float | None
    charging: bool | None


@dataclass(frozen=True)
class Health:
    """A device's state after the latest round. ``seen_at`` survives failures: it is when it last answered."""

    up: bool
    temperature_c: float | None = None
    battery_ratio: float | None = None
    charging: bool | None = None
    seen_at: float | None = None
    error: str | None = None


def parse_probe(text: str) -> Reading:
    temps: list[str] = []
    ratio: float | None = None
    charging: bool | None = None
    for line in text.splitlines():
        key, _, value = line.partition(" ")
        value = value.strip()
        if key == "temp":
            temps.append(value)
        elif key == "capacity":
            try:
                percent = float(value)
            except ValueError:
                continue
            if 0.0 <= percent <= 100.0:
                ratio = percent / 100.0
        elif key == "status":
            charging = _CHARGING.get(value)
    return Reading(hottest_millidegrees(temps), ratio, charging)


def probe(device: Device, state_dir: Path, timeout_s: float) -> Reading:
    """One health round trip to the device. Raises FarmError when it cannot be reached or the probe fails."""
    dev = connect(device, state_dir)
    try:
        if not isinstance(dev, PosixDevice):
            return _device_probe(dev, device)
        zones = ["auto"] if device.thermal.zones == "auto" else list(device.thermal.zones)
        supplies = f"{device.power.sysfs_root.rstrip('/')}/class/power_supply"
        return parse_probe(dev.sh(_PROBE_SCRIPT, supplies, *zones, timeout=timeout_s))
    finally:
        dev.close()


def _device_probe(dev: FarmDevice, device: Device) -> Reading:
    """Health of a device without a shell (iOS), through the device interface the runner uses."""
    props = dev.info()
    auto = device.thermal.zones == "auto"
    zones = [z for z in props.get("thermal_zones", "").split(",") if z] if auto else list(device.thermal.zones)
    temps = [t for t in dev.temperatures(zones) if t is not None]
    dev.probe_power(device.power, device.platform, charger_suspended=False)
    state = dev.battery()
    return Reading(max(temps) if temps else None, state.level if state else None, state.charging if state else None)


class HealthPoller:
    """Probes ``devices`` every ``period_s`` in a daemon thread; ``snapshot()`` is what scrapes export."""

    def __init__(
        self, devices: Sequence[Device], state_dir: Path, *, period_s: float = 30.0, timeout_s: float | None = None,
        log: Callable[[str], None] = lambda _: None, busy: Callable[[str], bool] = lambda _: False,
    ) -> None:  # fmt: skip
        if not MIN_PERIOD_S <= period_s <= MAX_PERIOD_S:
            raise ValueError(f"poll period {period_s:g}s is outside [{MIN_PERIOD_S:g}, {MAX_PERIOD_S:g}] s")
        self.devices = list(devices)
        self.state_dir = state_dir
        self.period_s = period_s
        self.timeout_s = min(period_s, 10.0) if timeout_s is None else timeout_s
        self._log = log
        self._busy = busy
        """A device a session is using is not probed (a probe would run beside its measurement): it keeps its
        last reading (``farm agent`` passes whether the device is leased)."""
        self._state: dict[str, Health] = {}
        self._lock = threading.Lock()
        self._pending: dict[str, Future[Reading]] = {}
        self._pool = ThreadPoolExecutor(max_workers=max(1, min(32, len(self.devices))), thread_name_prefix="health")
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def snapshot(self) -> dict[str, Health]:
        with self._lock:
            return dict(self._state)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="health-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.timeout_s + 1.0)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.poll_once()
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - started)))

    def poll_once(self) -> None:
        """Probe every device whose previous probe has returned, and wait at most ``timeout_s`` for them."""
        for device in self.devices:
            if device.id not in self._pending and not self._busy(device.id):
                self._pending[device.id] = self._pool.submit(probe, device, self.state_dir, self.timeout_s)
        deadline = time.monotonic() + self.timeout_s
        for device in self.devices:
            future = self._pending.get(device.id)
            if future is None:
                continue
            try:
                reading = future.result(timeout=max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                self._record(device.id, None, f"health probe did not answer within {self.timeout_s:g}s")
                continue  # still in flight: not probed again until it returns
            except FarmError as exc:
                self._record(device.id, None, str(exc))
            except Exception as exc:  # a bug or an odd device answer must not stop the poller
                self._record(device.id, None, f"{type(exc).__name__}: {exc}")
            else:
                self._record(device.id, reading, None)
            del self._pending[device.id]

    def _record(self, device_id: str, reading: Reading | None, error: str | None) -> None:
        with self._lock:
            before = self._state.get(device_id)
            seen = before.seen_at if before is not None else None
            if reading is None:
                self._state[device_id] = Health(up=False, seen_at=seen, error=error)
            else:
                self._state[device_id] = Health(
                    True, reading.temperature_c, reading.battery_ratio, reading.charging, time.time(), None
                )
        if before is None or before.up != (reading is not None):
            self._log(f"{device_id}: up" if reading is not None else f"{device_id}: down: {error}")
