"""An Android phone over ADB (adb-shell): the POSIX device layer plus getprop, ABIs and the charger."""

from __future__ import annotations

from pathlib import Path

from farm.config.inventory import AdbTransport, Device
from farm.devices.android import AndroidDevice
from farm.devices.kind import DeviceKind, register
from farm.devices.runtime import resolve_runtime
from farm.errors import InfraError
from farm.transports.adb import AdbLink

ANDROID_WORKDIR = "/data/local/tmp/farm"  # shell-writable and exec-able on stock Android


def connect(device: Device, state_dir: Path) -> AndroidDevice:
    if not isinstance(device.transport, AdbTransport):
        raise InfraError(f"{device.id}: the adb kind needs an adb transport, not {device.transport.kind}")
    adb = AdbLink(device.id, device.transport)
    adb.connect()
    return AndroidDevice(device.id, adb, device.workdir or ANDROID_WORKDIR, resolve_runtime(device))


KIND = register(DeviceKind("adb", connect))
