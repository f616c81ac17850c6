"""How far apart are two decodes of the same bitstream? Sample differences of two decoded Y4M files.

Used for decoders with a float path, whose outputs may legitimately differ by rounding from one CPU to the
next: digests then only say "different", while a consistency tolerance needs "by how much". Files are read
frame by frame (never whole), so long 1080p outputs cost memory of two frames.

Conventions match the scoring ones (docs/quality-metrics.md): 8-bit 4:2:0 only, MAX 255, plane PSNR capped
at 100 dB (identical planes), PSNR-YUV = (6Y+U+V)/8 per frame. The summary is the worst frame, because one
frame that drifted is exactly what a consistency gate must catch, and a mean over frames would hide it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from farm.quality.y4m import EIGHT_BIT_420, QualityError, iter_frames, read_y4m_info

if TYPE_CHECKING:  # numpy is imported where outputs are compared, not when `farm run` starts
    import numpy as np

PSNR_CAP_DB = 100.0


@dataclass(frozen=True)
class OutputComparison:
    frames: int | None
    max_abs_diff: float | None
    psnr_min_db: float | None
    detail: str | None = None  # why the two could not be compared (then the numbers are None)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    import numpy as np

    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return PSNR_CAP_DB if mse == 0 else min(PSNR_CAP_DB, 10 * math.log10(255.0**2 / mse))


def compare_outputs(a: Path, b: Path) -> OutputComparison:
    """Largest absolute sample difference and worst-frame PSNR-YUV of ``b`` against ``a``."""
    import numpy as np

    try:
        ia, ib = read_y4m_info(a), read_y4m_info(b)
    except QualityError as exc:
        return OutputComparison(None, None, None, f"not comparable: {exc}")
    shape_a = (ia.width, ia.height, ia.frames)
    shape_b = (ib.width, ib.height, ib.frames)
    if shape_a != shape_b:
        return OutputComparison(
            None, None, None, f"not comparable: {'x'.join(map(str, shape_a))} vs {'x'.join(map(str, shape_b))} "
            "(width x height x frames)"
        )  # fmt: skip
    if ia.chroma not in EIGHT_BIT_420 or ib.chroma not in EIGHT_BIT_420:
        return OutputComparison(None, None, None, f"not comparable: only 8-bit 4:2:0 (C{ia.chroma}, C{ib.chroma})")
    luma = ia.width * ia.height
    chroma = ((ia.width + 1) // 2) * ((ia.height + 1) // 2)
    cuts = (luma, luma + chroma)
    worst_diff = 0
    worst_psnr = PSNR_CAP_DB
    for fa, fb in zip(iter_frames(a, ia), iter_frames(b, ib), strict=True):
        worst_diff = max(worst_diff, int(np.max(np.abs(fa.astype(np.int16) - fb.astype(np.int16)))))
        y, u, v = (_psnr(pa, pb) for pa, pb in zip(np.split(fa, cuts), np.split(fb, cuts), strict=True))
        worst_psnr = min(worst_psnr, (6 * y + u + v) / 8)
    return OutputComparison(ia.frames, float(worst_diff), worst_psnr)
