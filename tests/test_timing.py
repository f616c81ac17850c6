"""Frame-rate statistics follow the design's conventions."""

from __future__ import annotations

import pytest

from farm.timing import frame_stats


def test_warmup_is_excluded_and_quantiles_are_of_frame_time() -> None:
    times = [50_000_000] * 3 + [10_000_000] * 90 + [40_000_000] * 10  # 3 slow warm-up frames
    s = frame_stats(times, warmup=3, sequence_fps=30, wall_ns=2_000_000_000, frames=103)
    assert s.steady_frames == 100
    assert s.fps == pytest.approx(100 / 1.3)
    assert s.frame_ms_p50 == pytest.approx(10.0) and s.fps_p50 == pytest.approx(100.0)
    assert s.frame_ms_p99 == pytest.approx(40.0)
    assert s.deadline_misses == 10  # 40 ms > 33.3 ms
    assert s.wall_s == pytest.approx(2.0) and s.source == "per-frame"


def test_without_per_frame_times_only_wall_clock_fps_is_known() -> None:
    s = frame_stats([], warmup=5, sequence_fps=30, wall_ns=500_000_000, frames=50)
    assert s.fps == pytest.approx(100.0) and s.source == "wall-clock"
    assert s.fps_p50 is None and s.frame_ms_p99 is None and s.deadline_misses is None


def test_nothing_measured_is_missing_not_zero() -> None:
    s = frame_stats([], warmup=0, sequence_fps=30, wall_ns=None, frames=0)
    assert s.fps is None and all(v is None for k, v in s.as_metrics().items())
