"""Runtime values an inventory entry names (``runtime: {ffmpeg: "@imageio-ffmpeg"}``) resolved to paths.

``@`` values are resolved on the host, so devices.yaml stays portable between machines; that only makes sense
for a device that is the host itself, which is why a kind says whether it may resolve them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable

from farm.config.inventory import Device
from farm.errors import InfraError


def _imageio_ffmpeg() -> str:
    from farm.media import host_ffmpeg

    return host_ffmpeg()


HOST_RUNTIME: dict[str, Callable[[], str]] = {"@imageio-ffmpeg": _imageio_ffmpeg, "@python": lambda: sys.executable}


def resolve_runtime(device: Device, *, on_host: bool = False) -> dict[str, str]:
    """The device's runtime values; ``@`` names resolve only ``on_host`` (the local device)."""
    out: dict[str, str] = {}
    for name, value in device.runtime.items():
        if value.startswith("@"):
            if not on_host or value not in HOST_RUNTIME:
                raise InfraError(f"{device.id}: runtime {name}={value!r} can only be resolved for a local device")
            out[name] = HOST_RUNTIME[value]()
        else:
            out[name] = value
    return out
