"""An iPhone or iPad over usbmux (pymobiledevice3, the optional ``ios`` extra).

This module is imported only when an inventory entry uses usbmux, and ``connect_ios`` imports pymobiledevice3
only then (checking the extra is installed), so a farm without iOS devices never loads it.
"""

from __future__ import annotations

from farm.devices.ios import connect_ios
from farm.devices.kind import DeviceKind, register

KIND = register(DeviceKind("usbmux", connect_ios))
