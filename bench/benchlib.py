"""What every benchmark in bench/ prints the same way: interleaved repeats, min/median/max, a target, PASS/FAIL.

A ratio from one or three repeats on a shared machine swings by a third; the reports show the spread beside the
median so a reader sees how much the number can be trusted, and each names its target and whether it was met.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable

MIN_REPEATS = 5


def timed(fn: Callable[[], object]) -> float:
    """Wall seconds of one call."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def spread(values: list[float], fmt: str = ".3f") -> str:
    """``min X  median Y  max Z`` of a series."""
    return f"min {min(values):{fmt}}  median {statistics.median(values):{fmt}}  max {max(values):{fmt}}"


def rates(size_bytes: int, seconds: list[float]) -> list[float]:
    """MiB/s of each repeat of a transfer of ``size_bytes``."""
    return [size_bytes / s / (1 << 20) for s in seconds]


def verdict(what: str, value: float, op: str, target: float, repeats: int) -> bool:
    """Print ``target: WHAT OP TARGET -> VALUE: PASS|FAIL`` (FAIL as well when too few repeats to judge)."""
    met = value >= target if op == ">=" else value <= target
    enough = repeats >= MIN_REPEATS
    word = "PASS" if met and enough else "FAIL"
    note = "" if enough else f" (only {repeats} repeats: at least {MIN_REPEATS} to judge)"
    print(f"target: {what} {op} {target:g} -> {value:.3g}: {word}{note}")
    return met and enough


def machine() -> str:
    """The host's cores and load average: on a shared machine a timing means little without them."""
    one, five, _ = os.getloadavg()
    return f"machine: {os.cpu_count()} cores, load average {one:.1f} (1 min), {five:.1f} (5 min)"
