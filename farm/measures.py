"""Every metric the farm produces, declared once; and the value type a measurement travels in.

``Measurement`` lives here rather than in the store so that device sessions, which must not import the store,
can build and send them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Measurement:
    name: str
    value: float | None
    unit: str
    convention: str
    missing_reason: str | None = None
