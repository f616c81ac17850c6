"""An Android phone: the POSIX device layer plus what only Android has (system properties, ABIs, the charger).

Everything else (content-addressed staging, the decode script, the samplers, kill) is shared with the SSH boards
through :class:`farm.devices.posix.PosixDevice`: Android's toybox and mksh run the same fixed scripts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from farm.config.inventory import ChargerSuspend
from farm.devices.posix import PosixDevice
from farm.errors import InfraError

# recorded with every result of the device (the store's run_devices row, shown by reports and exports)
PROPERTIES = {
    "model": "ro.product.model",
    "manufacturer": "ro.product.manufacturer",
    "device": "ro.product.device",
    "abi": "ro.product.cpu.abi",
    "abilist": "ro.product.cpu.abilist",
    "sdk": "ro.build.version.sdk",
    "release": "ro.build.version.release",
    "fingerprint": "ro.build.fingerprint",
    "hardware": "ro.hardware",
    "soc": "ro.soc.model",
    "serialno": "ro.serialno",
}

ABI_ARCH = {"arm64-v8a": "arm64", "armeabi-v7a": "armv7", "armeabi": "armv7", "x86_64": "x86_64", "x86": "x86"}
"""Android ABI names -> the farm's target arch (``android-<arch>``)."""

# $1.. property names; one "name=value" line each (getprop prints an empty line for an unset property)
_GETPROP_SCRIPT = r"""
for k do echo "$k=$(getprop "$k")"; done
"""

# $1 node, $2 value: write a sysfs control value
_WRITE_SCRIPT = r"""
echo "$2" >"$1"
"""


@dataclass
class AndroidDevice(PosixDevice):
    """A phone reached over ADB. ``info`` adds ``android.*`` properties from ``getprop``."""

    POWER_SOURCES: ClassVar[tuple[str, ...]] = ("battery", "sysfs")
    """A phone's meter is its fuel gauge; a phone without a battery (a dev board running Android) falls back to
    the sysfs meters a Linux board would have."""

    def info(self) -> dict[str, str]:
        props = super().info()
        out = self.sh(_GETPROP_SCRIPT, *PROPERTIES.values())
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        for name, key in PROPERTIES.items():
            value = values.get(key, "").strip()
            if value:
                props[f"android.{name}"] = value
        return props

    def check_target(self, target: str, props: dict[str, str]) -> None:
        """Refuse a phone whose ABIs cannot run ``target`` (a bundle built for arm64 on an x86 emulator)."""
        abis = [a for a in props.get("android.abilist", props.get("android.abi", "")).split(",") if a]
        if not abis:
            raise InfraError(f"getprop reports no ABI (ro.product.cpu.abi); cannot check {target}")
        archs = [ABI_ARCH.get(abi, abi) for abi in abis]
        if target.partition("-")[2] not in archs:
            raise InfraError(
                f"devices.yaml says target {target} but the phone's ABIs are {', '.join(abis)} "
                f"(targets {', '.join(f'android-{a}' for a in archs)})"
            )

    def set_charging(self, control: ChargerSuspend, enabled: bool) -> bool:
        """Rooted phones: write the charger-suspend node (``power.charger_suspend``)."""
        self.write_node(control.node, control.resume if enabled else control.suspend)
        return True

    def write_node(self, node: str, value: str) -> None:
        """Write a control value to a sysfs node (e.g. the charger-suspend node on a rooted phone)."""
        self.sh(_WRITE_SCRIPT, node, value)
