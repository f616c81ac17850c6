"""Turn an inventory entry into a connected device object, through the kind its transport registered.

The entry point every caller uses; which kinds exist is :mod:`farm.devices.kind`'s business (one module per
transport under ``farm/devices/kinds/``), so adding a kind never touches this file.
"""

from __future__ import annotations

from pathlib import Path

from farm.config.inventory import Device
from farm.devices import kind
from farm.devices.base import FarmDevice
from farm.devices.runtime import HOST_RUNTIME, resolve_runtime

__all__ = ["HOST_RUNTIME", "connect", "disconnect", "resolve_runtime"]


def connect(device: Device, state_dir: Path) -> FarmDevice:
    """Open the device's transport and set it up. Raises InfraError if it cannot be reached."""
    return kind.open_device(device, state_dir)


def disconnect(device: Device, dev: FarmDevice) -> None:
    """Let a connected device go the way its kind says (today: close its link)."""
    kind.teardown(device, dev)
