"""What an emulated CPU means for a result: its timing is not a hardware measurement, and reports say so.

Why a label rather than dropping the numbers: an emulated board (QEMU TCG) still proves that the bundle runs
and decodes bit-exactly on another ISA, and its fps still shows gross regressions; but a frame rate from a
binary translator is not what the real chip would do, so every place that shows it marks it EMULATED, the way
SIMULATED marks the virtual boards' modelled power.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

EMULATED_NOTE = "EMULATED CPU (QEMU TCG): frame rates are not a hardware measurement"
"""The device property (``cpu_timing``) a session records for an inventory entry with ``emulated: true``."""


class StoredDevice(Protocol):
    """A stored device row (SQLite or PostgreSQL), read by column name."""

    def __getitem__(self, key: str, /) -> Any: ...


def emulated_devices(devices: Iterable[StoredDevice]) -> set[str]:
    """Ids of the stored devices (rows with ``device_id`` and ``properties_json``) whose CPU was emulated."""
    return {str(d["device_id"]) for d in devices if "EMULATED CPU" in str(d["properties_json"])}
