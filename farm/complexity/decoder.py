"""A bundle's decoder complexity for one device target: kMAC per decoded pixel, parameters, model bytes.

MAC per pixel = MACs of decoding one frame (each model at its shapes for that frame, times its runs per frame)
/ (W x H). Shapes given as functions of W and H are evaluated at every frame size of the suite's sequences and
the largest per-pixel figure is kept, so a gate holds at every size the run decoded (fully convolutional
decoders differ between sizes only by rounding at the borders).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from farm.complexity import dims
from farm.complexity.count import ModelCount, Uncountable, count, load, model_bytes, params
from farm.config.manifest import Model

NO_MODELS = "bundle declares no models"


@dataclass(frozen=True)
class Complexity:
    """The three figures for one bundle target; a figure that could not be had is None, and ``detail`` says
    how the others were taken or why it is missing."""

    kmac_per_pixel: float | None
    params: int | None
    model_bytes: int | None
    detail: str


def decoder_complexity(root: Path, models: Sequence[Model], frames: Sequence[tuple[int, int]]) -> Complexity:
    """Count ``models`` (paths relative to the bundle ``root``) for frames of the given (width, height)."""
    if not models:
        return Complexity(None, None, None, NO_MODELS)
    try:
        sizes = _sizes(root, models)
    except Uncountable as exc:
        return Complexity(None, None, None, str(exc))
    n_params, n_bytes = (sum(s[i] for s in sizes.values()) for i in (0, 1))
    try:
        per_size = [(w, h, _kmac_per_pixel(root, models, w, h)) for w, h in sorted(set(frames))]
    except (Uncountable, dims.DimError) as exc:
        return Complexity(None, n_params, n_bytes, str(exc))
    if not per_size:
        return Complexity(None, n_params, n_bytes, "no frame size to count at")
    worst = max(k for _, _, k in per_size)
    detail = ", ".join(f"{w}x{h}: {k:.3f} kMAC/px" for w, h, k in per_size)
    return Complexity(worst, n_params, n_bytes, f"{detail} ({_names(models)})")


def _sizes(root: Path, models: Sequence[Model]) -> dict[str, tuple[int, int]]:
    """Parameters and bytes per distinct model file (a file listed twice is stored once on the device)."""
    out = {}
    for m in models:
        if m.file not in out:
            model = load(root / m.file)
            out[m.file] = (params(model), model_bytes(root / m.file, model))
    return out


def _kmac_per_pixel(root: Path, models: Sequence[Model], width: int, height: int) -> float:
    total = 0.0
    for m in models:
        w, h = m.resolution if m.resolution is not None else (width, height)
        shapes = {name: [dims.evaluate(d, w, h) for d in shape] for name, shape in m.inputs.items()}
        counted: ModelCount = count(root / m.file, shapes)
        total += counted.macs * m.runs_per_frame / (w * h)
    return total / 1000


def _names(models: Sequence[Model]) -> str:
    return " + ".join(m.file if m.runs_per_frame == 1 else f"{m.file} x{m.runs_per_frame:g}" for m in models)
