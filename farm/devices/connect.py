"""Turn an inventory entry into a connected device object (the only place that knows every transport)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from farm.config.inventory import AdbTransport, Device, LocalTransport, SshTransport, UsbmuxTransport
from farm.devices.android import AndroidDevice
from farm.devices.base import FarmDevice
from farm.devices.posix import PosixDevice
from farm.errors import InfraError
from farm.transports.adb import AdbLink
from farm.transports.local import LocalTransport as LocalLink
from farm.transports.ssh import SshLink

REMOTE_WORKDIR_UNDER_HOME = ".cache/codec-farm"
ANDROID_WORKDIR = "/data/local/tmp/farm"  # shell-writable and exec-able on stock Android


# runtime values the farm resolves on the host for the local device (devices.yaml stays portable)
def _imageio_ffmpeg() -> str:
    from farm.media import host_ffmpeg

    return host_ffmpeg()


HOST_RUNTIME: dict[str, Callable[[], str]] = {"@imageio-ffmpeg": _imageio_ffmpeg, "@python": lambda: sys.executable}


def resolve_runtime(device: Device) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in device.runtime.items():
        if value.startswith("@"):
            if not isinstance(device.transport, LocalTransport) or value not in HOST_RUNTIME:
                raise InfraError(f"{device.id}: runtime {name}={value!r} can only be resolved for a local device")
            out[name] = HOST_RUNTIME[value]()
        else:
            out[name] = value
    return out


def connect(device: Device, state_dir: Path) -> FarmDevice:
    """Open the device's transport. Raises InfraError if it cannot be reached."""
    if isinstance(device.transport, LocalTransport):
        workdir = device.workdir or str((state_dir / "device" / device.id).resolve())
        return PosixDevice(device.id, LocalLink(), workdir, resolve_runtime(device))
    if isinstance(device.transport, SshTransport):
        link = SshLink(device.id, device.transport)
        link.connect()
        dev = PosixDevice(device.id, link, device.workdir or "", resolve_runtime(device))
        if not device.workdir:
            # scripts cd into job folders, so the workdir must be absolute: put it under the login's home
            try:
                home = dev.sh('printf %s "$HOME"').strip()
            except BaseException:
                link.close()
                raise
            dev.workdir = f"{home.rstrip('/')}/{REMOTE_WORKDIR_UNDER_HOME}"
        return dev
    if isinstance(device.transport, AdbTransport):
        adb = AdbLink(device.id, device.transport)
        adb.connect()
        return AndroidDevice(device.id, adb, device.workdir or ANDROID_WORKDIR, resolve_runtime(device))
    if isinstance(device.transport, UsbmuxTransport):
        # pymobiledevice3 is the optional `ios` extra: imported only when an iOS device is reached
        from farm.devices.ios import connect_ios

        return connect_ios(device, state_dir)
    raise InfraError(f"{device.id}: transport {device.transport.kind!r} is not available in this build of the farm yet")
