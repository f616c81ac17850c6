"""This machine as a device: its own shell, a workdir under the farm's state dir, host runtime values."""

from __future__ import annotations

from pathlib import Path

from farm.config.inventory import Device
from farm.devices.kind import DeviceKind, register
from farm.devices.posix import PosixDevice
from farm.devices.runtime import resolve_runtime
from farm.transports.local import LocalTransport


def connect(device: Device, state_dir: Path) -> PosixDevice:
    workdir = device.workdir or str((state_dir / "device" / device.id).resolve())
    return PosixDevice(device.id, LocalTransport(), workdir, resolve_runtime(device, on_host=True))


KIND = register(DeviceKind("local", connect))
