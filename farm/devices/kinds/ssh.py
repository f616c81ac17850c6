"""A Linux board over SSH (paramiko): a POSIX device whose default workdir is under the login's home."""

from __future__ import annotations

from pathlib import Path

from farm.config.inventory import Device, SshTransport
from farm.devices.kind import DeviceKind, register
from farm.devices.posix import PosixDevice
from farm.devices.runtime import resolve_runtime
from farm.errors import InfraError
from farm.transports.ssh import SshLink

REMOTE_WORKDIR_UNDER_HOME = ".cache/codec-farm"


def connect(device: Device, state_dir: Path) -> PosixDevice:
    if not isinstance(device.transport, SshTransport):
        raise InfraError(f"{device.id}: the ssh kind needs an ssh transport, not {device.transport.kind}")
    link = SshLink(device.id, device.transport)
    link.connect()
    return PosixDevice(device.id, link, device.workdir or "", resolve_runtime(device))


def setup(dev: PosixDevice, device: Device) -> None:
    """Scripts cd into job folders, so the workdir must be absolute: without one, put it under the login's home
    (known only once the link is up)."""
    if not device.workdir:
        home = dev.sh('printf %s "$HOME"').strip()
        dev.workdir = f"{home.rstrip('/')}/{REMOTE_WORKDIR_UNDER_HOME}"


KIND = register(DeviceKind("ssh", connect, setup))
