"""The learned suite's content: ffmpeg's Perlin clouds, coloured, optionally with film grain, rendered reproducibly.

The BD-rate of LRC against x265 is only computable on content where the two curves share a quality range
(docs/learned-codec.md); these tests pin the properties that choice relies on, so a generator change that made the
clouds flat, grey or static, or the grain unseeded, fails here rather than as a missing figure in a long run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from farm.config.suite import Generate, Sequence
from farm.media import Source, render
from farm.quality.y4m import iter_frames, read_y4m_info

W, H = 160, 120


def frames(source: Source) -> list[np.ndarray]:
    info = read_y4m_info(source.path)
    return [f.astype(np.int16) for f in iter_frames(source.path, info)]


def clouds(grain: int = 0) -> Sequence:
    return Sequence(id=f"c{grain}", generate=Generate(source="clouds", width=W, height=H, frames=4, grain=grain))


def test_clouds_render_identically_in_two_cold_caches_and_carry_texture_colour_and_change(tmp_path: Path) -> None:
    a, b = render(clouds(), tmp_path / "one"), render(clouds(), tmp_path / "two")
    assert a.sha256 == b.sha256 and (a.width, a.height, a.frames) == (W, H, 4)
    first, *rest = frames(a)
    y, u = first[: W * H], first[W * H : W * H * 5 // 4]
    assert y.std() > 3 and u.std() > 3  # texture in luma and chroma: a grey source would code chroma for free
    change = [float(np.abs(f[: W * H] - first[: W * H]).mean()) for f in rest]
    assert min(change) > 2  # the clouds change fast: x265 cannot code frames after the first almost for free


def test_grain_is_seeded_noise_on_luma_that_changes_every_frame(tmp_path: Path) -> None:
    clean = frames(render(clouds(), tmp_path / "c"))
    grainy = render(clouds(grain=8), tmp_path / "g")
    assert grainy.sha256 == render(clouds(grain=8), tmp_path / "g2").sha256  # seeded: the same bytes again
    noisy = frames(grainy)
    noise = [n[: W * H] - c[: W * H] for n, c in zip(noisy, clean, strict=True)]
    assert all(2 < float(np.abs(n).mean()) < 12 for n in noise)
    assert float(np.abs(noise[1] - noise[0]).mean()) > 2  # temporal grain: a new pattern each frame
    for n, c in zip(noisy, clean, strict=True):
        assert np.array_equal(n[W * H :], c[W * H :])  # luma only; chroma untouched


def test_grain_zero_is_the_clean_source_and_out_of_range_grain_is_refused(tmp_path: Path) -> None:
    plain = Sequence(id="p", generate=Generate(source="clouds", width=W, height=H, frames=4))
    assert render(plain, tmp_path).path == render(clouds(grain=0), tmp_path).path
    with pytest.raises(ValueError, match="grain"):
        Generate(source="clouds", width=W, height=H, frames=4, grain=101)
