"""The flicker measure (farm/quality/temporal.py) on sequences whose flicker is known by construction.

Clips are written from numpy, so the expected value is computed by hand, not by the code under test; the
scoring path that adds flicker to ffmpeg's per-frame scores runs the real ffmpeg.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import cast

import imageio_ffmpeg
import numpy as np
import pytest

from farm import scoring
from farm.config.suite import Suite
from farm.quality.score import QualityScores, score
from farm.quality.temporal import flicker, with_temporal
from farm.quality.y4m import QualityError

W, H = 32, 16


def write_y4m(path: Path, frames: list[np.ndarray]) -> Path:
    """Frames are (H, W) luma arrays; chroma is a flat 128 so only luma differs."""
    chroma = np.full((H // 2) * (W // 2) * 2, 128, np.uint8)
    with path.open("wb") as f:
        f.write(f"YUV4MPEG2 W{W} H{H} F25:1 Ip A1:1 C420jpeg\n".encode())
        for y in frames:
            f.write(b"FRAME\n" + np.ascontiguousarray(y, np.uint8).tobytes() + chroma.tobytes())
    return path


def texture(seed: int = 3) -> np.ndarray:
    """A static textured frame kept away from 0 and 255, so an offset of a few levels never clips."""
    return np.random.default_rng(seed).integers(20, 230, (H, W)).astype(np.uint8)


@pytest.mark.parametrize("k", [1, 4, 9])
def test_alternate_frames_brightened_by_k_levels_flicker_by_k(tmp_path: Path, k: int) -> None:
    # static source; the decode adds k to every odd frame: |(d_t - d_t-1) - 0| = k at every pixel, every t >= 1
    src = [texture()] * 8
    dec = [s + (k if t % 2 else 0) for t, s in enumerate(src)]
    got = flicker(write_y4m(tmp_path / "d.y4m", dec), write_y4m(tmp_path / "s.y4m", src))
    assert got.per_frame[0] is None  # frame 0 has no previous frame
    assert got.per_frame[1:] == (float(k),) * 7
    assert got.mean == k and got.worst == k


def test_a_static_error_does_not_flicker(tmp_path: Path) -> None:
    src = [texture(seed) for seed in range(6)]  # a changing source: only the error's change counts
    ref = write_y4m(tmp_path / "s.y4m", src)
    assert flicker(write_y4m(tmp_path / "same.y4m", src), ref).mean == 0.0
    offset = flicker(write_y4m(tmp_path / "offset.y4m", [s + 5 for s in src]), ref)
    assert offset.mean == 0.0 and offset.worst == 0.0
    fixed_noise = np.random.default_rng(9).integers(-3, 4, (H, W))
    blurred = [(s.astype(np.int16) + fixed_noise).astype(np.uint8) for s in src]  # the same error every frame
    assert flicker(write_y4m(tmp_path / "fixed.y4m", blurred), ref).mean == 0.0


def test_a_hand_computed_pair_with_a_moving_source(tmp_path: Path) -> None:
    s0 = texture()
    s1 = s0 + 2  # the source brightens by 2: a decode that follows it does not flicker
    d0, d1 = s0.copy(), s1.copy()
    d0[0, 0] += 6  # error +6 at one pixel in frame 0 ...
    d1[1, 1] -= 10  # ... and -10 at another in frame 1: |e1 - e0| is 6 and 10 there, 0 elsewhere
    got = flicker(write_y4m(tmp_path / "d.y4m", [d0, d1]), write_y4m(tmp_path / "s.y4m", [s0, s1]))
    assert got.per_frame[0] is None and got.per_frame[1] == pytest.approx((6 + 10) / (W * H))


def test_one_frame_has_no_flicker_and_mismatched_inputs_are_refused(tmp_path: Path) -> None:
    one = write_y4m(tmp_path / "one.y4m", [texture()])
    got = flicker(one, one)
    assert got.per_frame == (None,) and got.mean is None and got.worst is None  # missing, never 0
    two = write_y4m(tmp_path / "two.y4m", [texture()] * 2)
    with pytest.raises(QualityError, match="not comparable"):
        flicker(two, one)


def test_scoring_adds_flicker_and_the_worst_frame_to_ffmpeg_scores(tmp_path: Path) -> None:
    src = [texture()] * 6
    dec = [s + (3 if t % 2 else 0) for t, s in enumerate(src)]
    dec[4] = (dec[4].astype(np.int16) + np.random.default_rng(1).integers(-40, 41, (H, W))).clip(0, 255)
    ref, dist = write_y4m(tmp_path / "s.y4m", src), write_y4m(tmp_path / "d.y4m", dec)
    s = with_temporal(score(dist, ref, ffmpeg=imageio_ffmpeg.get_ffmpeg_exe(), metrics=("psnr",)), dist, ref)
    assert [f.flicker for f in s.per_frame] == list(flicker(dist, ref).per_frame)
    assert s.flicker == pytest.approx(np.mean([f.flicker for f in s.per_frame[1:]]))
    worst = max(f.flicker for f in s.per_frame[1:] if f.flicker is not None)
    assert s.flicker_max == worst and worst > 3
    psnr = [f.psnr_yuv or 0.0 for f in s.per_frame]
    assert min(range(6), key=lambda t: psnr[t]) == 4  # the noisy frame
    assert s.psnr_yuv_min == psnr[4] and s.psnr_yuv is not None and psnr[4] < s.psnr_yuv
    assert "flicker" in s.conventions


def test_a_cached_score_keeps_its_frames(tmp_path: Path) -> None:
    # a second run of the same outputs reads the host's score cache: it must still have every frame to store
    src = [texture()] * 4
    ref = write_y4m(tmp_path / "s.y4m", src)
    dist = write_y4m(tmp_path / "d.y4m", [s + (2 if t % 2 else 0) for t, s in enumerate(src)])
    suite = cast(Suite, SimpleNamespace(metrics=("psnr",)))
    todo = {("out", "src"): (dist, ref)}
    first = scoring.score_outputs(todo, suite, tmp_path / "cache")[("out", "src")]
    assert list((tmp_path / "cache" / "scores").iterdir())  # written to the cache
    again = scoring.score_outputs(todo, suite, tmp_path / "cache")[("out", "src")]
    assert isinstance(first, QualityScores) and again == first
    assert [f.flicker for f in again.per_frame] == [None, 2.0, 2.0, 2.0] and again.flicker == 2.0
    rows = scoring.frame_rows("out", "src", again.per_frame)
    assert [r.frame for r in rows] == [0, 1, 2, 3] and rows[1].psnr_yuv == again.per_frame[1].psnr_yuv
