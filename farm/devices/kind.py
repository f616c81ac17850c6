"""The registry of device kinds: how an inventory entry's transport becomes a connected, set-up device.

Why a registry: ``connect`` used to be a closed ``isinstance`` chain over every transport, so a QEMU board or a
Jetson with its own quirks meant editing the one function every run goes through. Now each kind is a module
``farm/devices/kinds/<transport>.py`` that calls :func:`register` when imported, with Mobly's controller contract
in small: ``connect`` opens the link (create), ``setup`` finishes what needs the link (resolve a workdir), and
``teardown`` lets the device go (destroy). Modules are imported on first use of their transport, so a run that
touches no iPhone never imports the iOS kind, let alone pymobiledevice3.
"""

from __future__ import annotations

import contextlib
import importlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from farm.config.inventory import Device
from farm.devices.base import FarmDevice
from farm.errors import InfraError

D = TypeVar("D", bound=FarmDevice)

KINDS_PACKAGE = "farm.devices.kinds"


def _no_setup(dev: FarmDevice, device: Device) -> None:
    """Most kinds are ready once their link is open."""


def _close(dev: FarmDevice) -> None:
    dev.close()


@dataclass(frozen=True)
class DeviceKind(Generic[D]):
    """One way of reaching a device, keyed by the inventory's ``transport.kind``."""

    transport: str
    connect: Callable[[Device, Path], D]
    """Open the link (raise InfraError when the device cannot be reached); ``Path`` is the farm's state dir."""
    setup: Callable[[D, Device], None] = _no_setup
    """Finish what needs the open link; on failure the device is torn down before the error propagates."""
    teardown: Callable[[FarmDevice], None] = _close
    """Let the device go (close its link): after a failed setup, and by :func:`farm.devices.connect.disconnect`."""

    def open(self, device: Device, state_dir: Path) -> D:
        """connect + setup, tearing down what was opened when setup fails (a half-open link is never leaked)."""
        dev = self.connect(device, state_dir)
        try:
            self.setup(dev, device)
        except BaseException:
            self.teardown(dev)
            raise
        return dev


@dataclass(frozen=True)
class _Entry:
    """A registered kind with its device type erased (the registry only opens and tears down)."""

    open: Callable[[Device, Path], FarmDevice]
    teardown: Callable[[FarmDevice], None]


_KINDS: dict[str, _Entry] = {}


def register(kind: DeviceKind[D]) -> DeviceKind[D]:
    """Make ``kind`` the way to reach devices of its transport (a later registration replaces an earlier one)."""
    _KINDS[kind.transport] = _Entry(kind.open, kind.teardown)
    return kind


def _entry(transport: str) -> _Entry:
    if transport not in _KINDS:
        try:
            importlib.import_module(f"{KINDS_PACKAGE}.{transport}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{KINDS_PACKAGE}.{transport}":
                raise
    entry = _KINDS.get(transport)
    if entry is None:
        raise InfraError(f"transport {transport!r} is not available in this build of the farm yet")
    return entry


def preload(transports: Iterable[str]) -> None:
    """Import these kinds now: a ``farm agent`` does it at start, so its first run's sessions do not all wait on
    the import lock at once (seconds on a loaded host; docs/scale-out.md). A kind that cannot load (unknown, or a
    library missing) is left to fail its own sessions later, named, as before."""
    for transport in sorted(set(transports)):
        with contextlib.suppress(InfraError, ImportError):
            _entry(transport)


def open_device(device: Device, state_dir: Path) -> FarmDevice:
    """Connect and set up the device of an inventory entry through its kind."""
    try:
        entry = _entry(device.transport.kind)
    except InfraError as exc:
        raise InfraError(f"{device.id}: {exc}") from None
    return entry.open(device, state_dir)


def teardown(device: Device, dev: FarmDevice) -> None:
    """Let a device opened by :func:`open_device` go, the way its kind says."""
    _entry(device.transport.kind).teardown(dev)


def registered() -> tuple[str, ...]:
    """The transports whose kinds are registered so far (kinds load on first use)."""
    return tuple(sorted(_KINDS))
