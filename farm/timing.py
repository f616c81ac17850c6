"""Frame-rate statistics per the design's conventions.

Steady state excludes the suite's warm-up frames (decoder start-up, caches, JIT, clock ramp). Quantiles are
of frame *time*; the fps figures are their reciprocals, so ``fps.p90`` is the rate of the slowest 10 %.
When a decoder gives no per-frame times, only the start/end wall clock is known: fps then comes from it and
the quantiles are missing rather than invented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from farm.measures import FRAME_QUANTILES, quantile_name


@dataclass(frozen=True)
class FrameStats:
    fps: float | None
    fps_p50: float | None
    fps_p90: float | None
    fps_p99: float | None
    frame_ms_p50: float | None
    frame_ms_p90: float | None
    frame_ms_p99: float | None
    deadline_misses: int | None
    steady_frames: int
    wall_s: float | None
    source: str  # "per-frame" | "wall-clock" | "none"

    def as_metrics(self) -> dict[str, float | None]:
        """The values under their declared names (farm/measures.py), quantile names spelt by quantile_name."""
        fps = (self.fps_p50, self.fps_p90, self.fps_p99)
        ms = (self.frame_ms_p50, self.frame_ms_p90, self.frame_ms_p99)
        return {
            "fps": self.fps,
            **{quantile_name("fps", q): v for q, v in zip(FRAME_QUANTILES, fps, strict=True)},
            **{quantile_name("frame_time_ms", q): v for q, v in zip(FRAME_QUANTILES, ms, strict=True)},
            "deadline_misses": None if self.deadline_misses is None else float(self.deadline_misses),
            "wall_s": self.wall_s,
        }


def frame_stats(
    frame_times_ns: Sequence[int],
    *,
    warmup: int,
    sequence_fps: float,
    wall_ns: int | None,
    frames: int,
) -> FrameStats:
    import numpy as np  # here, not at the top: `farm run` reaches its first device command without numpy

    wall_s = wall_ns / 1e9 if wall_ns is not None and wall_ns > 0 else None
    steady = np.asarray(frame_times_ns[warmup:], dtype=np.float64)
    if steady.size and steady.sum() > 0:
        q50, q90, q99 = (float(np.percentile(steady, q)) for q in FRAME_QUANTILES)
        deadline_ns = 1e9 / sequence_fps
        return FrameStats(
            fps=steady.size / (steady.sum() / 1e9),
            fps_p50=_rate(q50),
            fps_p90=_rate(q90),
            fps_p99=_rate(q99),
            frame_ms_p50=q50 / 1e6,
            frame_ms_p90=q90 / 1e6,
            frame_ms_p99=q99 / 1e6,
            deadline_misses=int((steady > deadline_ns).sum()),
            steady_frames=int(steady.size),
            wall_s=wall_s,
            source="per-frame",
        )
    if wall_s is not None and frames > 0:
        # no per-frame times: the whole wall time, start-up included, is all that is known
        return FrameStats(frames / wall_s, None, None, None, None, None, None, None, frames, wall_s, "wall-clock")
    return FrameStats(None, None, None, None, None, None, None, None, 0, wall_s, "none")


def _rate(ns: float) -> float | None:
    return 1e9 / ns if ns > 0 else None
