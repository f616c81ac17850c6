"""A fast drop-in for adb-shell's message checksum (the byte sum the ADB protocol puts in every header).

Why: adb-shell 0.4.4 sums every payload byte with Python's ``sum()``, on every message sent and received. On a
1 MiB WRTE that is about 7 ms, a third of the farm's push time (bench/bench_adb_push.py --profile). numpy sums
the same bytes in well under a millisecond. The value is identical (a test checks it against the library's own
function), so nothing on the wire changes; only where the time goes.

The library is patched at two module attributes (``adb_message.checksum``, used by ``AdbMessage.pack``, and the
name ``adb_device`` imported from it, used to verify received data). :func:`install` refuses, and the farm keeps
the library's function, if either attribute is not the function it expects: a later adb-shell that renames or
reworks it then only loses the speed-up, never correctness.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from adb_shell import adb_device, adb_message

ORIGINAL: Callable[[Any], int] = adb_message.checksum


def fast_checksum(data: bytes | bytearray | memoryview | str) -> int:
    """The ADB checksum of ``data``: the sum of its bytes modulo 2**32 (str is summed by code point, as adb-shell)."""
    if isinstance(data, str):
        return sum(ord(c) for c in data) & 0xFFFFFFFF
    if not len(data):
        return 0
    return int(np.frombuffer(data, dtype=np.uint8).sum(dtype=np.uint64)) & 0xFFFFFFFF


def install() -> bool:
    """Use :func:`fast_checksum` inside adb-shell; False (and nothing changed) if the library is not as expected."""
    if adb_message.checksum is fast_checksum:
        return True
    if adb_message.checksum is not ORIGINAL or getattr(adb_device, "checksum", None) is not ORIGINAL:
        return False
    probe = bytes(range(256)) * 3
    if fast_checksum(probe) != ORIGINAL(probe):
        return False
    adb_message.checksum = fast_checksum
    adb_device.checksum = fast_checksum
    return True
