"""Temporal consistency of a decoded video against its source: the flicker measure, per frame and per job.

Why this measure (docs/quality-metrics.md has the references): a decoder that is good frame by frame can still
flicker, because its error changes from one frame to the next where the source does not change (periodic intra
frames, a learned decoder with no temporal state, INT8 rounding that differs frame to frame). PSNR, SSIM and VMAF
score frames one at a time, and a constant error does not flicker. The intra-flicker literature (Fan et al.,
JVT-E070; the Thomson flicker metric, US 8,755,613) compares the temporal change of the decoded video with the
temporal change of the source, pixel by pixel:

    F_t = mean over luma pixels i of |(d_t(i) - d_{t-1}(i)) - (s_t(i) - s_{t-1}(i))|,   t = 1 .. N-1

in 8-bit code values (0..510). Because ``(d_t - d_{t-1}) - (s_t - s_{t-1}) = e_t - e_{t-1}`` with ``e = d - s``,
it is the mean absolute change of the coding error between consecutive frames: 0 for a lossless decode and for a
constant offset, ``k`` for a static source whose decode alternates by ``k`` levels. Frame 0 has no previous frame
and no value. Computed with numpy on the host, two frames in memory at a time (only the error of the previous
frame is kept), on the luma plane only (where flicker is seen; chroma would dilute it by a quarter each).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from farm.quality.score import QualityScores
from farm.quality.y4m import EIGHT_BIT_420, QualityError, iter_frames, read_y4m_info

if TYPE_CHECKING:  # imported where frames are compared: a run reaches its devices before scoring needs numpy
    import numpy as np
    import numpy.typing as npt

__all__ = ["CONVENTION", "TemporalScores", "flicker", "with_temporal"]

CONVENTION = (
    "flicker F_t = mean over luma pixels |(d_t - d_t-1) - (s_t - s_t-1)| in 8-bit code values, no motion "
    "compensation, frames paired by index, t >= 1 (frame 0 has none); per job the mean (and max) over t"
)


@dataclass(frozen=True)
class TemporalScores:
    """Per-frame flicker (None for frame 0) and its mean and worst frame (None for a one-frame video)."""

    per_frame: tuple[float | None, ...]
    mean: float | None
    worst: float | None


def flicker(distorted: Path, reference: Path) -> TemporalScores:
    """The flicker of ``distorted`` against ``reference`` (8-bit 4:2:0 Y4M of equal size and length)."""
    dist, ref = read_y4m_info(distorted), read_y4m_info(reference)
    for path, info in ((distorted, dist), (reference, ref)):
        if info.chroma not in EIGHT_BIT_420:
            raise QualityError(f"{path}: chroma C{info.chroma} is not supported; only 8-bit 4:2:0 is scored")
    if (dist.width, dist.height, dist.frames) != (ref.width, ref.height, ref.frames):
        raise QualityError(
            f"{distorted} is {dist.width}x{dist.height}x{dist.frames} frames, reference {reference} is "
            f"{ref.width}x{ref.height}x{ref.frames}: not comparable"
        )
    import numpy as np

    luma = dist.width * dist.height
    values: list[float | None] = []
    previous: npt.NDArray[np.int16] | None = None
    for d, s in zip(iter_frames(distorted, dist), iter_frames(reference, ref), strict=True):
        error = d[:luma].astype(np.int16) - s[:luma].astype(np.int16)
        values.append(None if previous is None else float(np.mean(np.abs(error - previous))))
        previous = error
    measured = [v for v in values if v is not None]
    mean = math.fsum(measured) / len(measured) if measured else None
    return TemporalScores(tuple(values), mean, max(measured) if measured else None)


def with_temporal(scores: QualityScores, distorted: Path, reference: Path) -> QualityScores:
    """``scores`` with the flicker of the same pair added, per frame and as the job's mean and worst frame."""
    temporal = flicker(distorted, reference)
    if len(temporal.per_frame) != len(scores.per_frame):
        raise QualityError(
            f"{distorted}: {len(temporal.per_frame)} frames read for flicker, {len(scores.per_frame)} scored"
        )
    frames = tuple(replace(f, flicker=v) for f, v in zip(scores.per_frame, temporal.per_frame, strict=True))
    return replace(
        scores, per_frame=frames, flicker=temporal.mean, flicker_max=temporal.worst,
        conventions={**scores.conventions, "flicker": CONVENTION},
    )  # fmt: skip
