"""Step 6 for complexity: each device's figures stored as run metrics, counted once per device target.

Per device rather than per run because a bundle may ship different models per target (a smaller network for a
phone): the device's row holds what its target decodes with, and gates read it like a BD-rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from farm.bundle import Bundle
from farm.complexity.decoder import Complexity, decoder_complexity
from farm.config.inventory import Device
from farm.measures import unit
from farm.store import Store

CONVENTION = (
    "MACs of decoding one frame / (W x H), thousands; Conv/ConvTranspose/Gemm/MatMul (and their quantized forms) "
    "and interpolating Resize count, per docs/complexity.md; largest over the run's frame sizes"
)


def target_complexity(bundle: Bundle, target: str, frames: Sequence[tuple[int, int]]) -> Complexity:
    return decoder_complexity(Path(bundle.root), bundle.manifest.models_for(target), frames)


def record_complexity(
    store: Store, run_id: str, bundle: Bundle, devices: Sequence[Device], frames: Sequence[tuple[int, int]]
) -> None:
    """Store complexity.kmac_per_pixel, .params and .model_bytes for every device of the run."""
    by_target = {t: target_complexity(bundle, t, frames) for t in sorted({d.target for d in devices})}
    for device in devices:
        got = by_target[device.target]
        values = (
            ("complexity.kmac_per_pixel", got.kmac_per_pixel, CONVENTION),
            ("complexity.params", got.params, "elements of the models' initializers, quantization scales excluded"),
            ("complexity.model_bytes", got.model_bytes, "bytes of the model files and their external weights"),
        )
        for name, value, convention in values:
            number = None if value is None else float(value)
            store.add_run_metric(run_id, device.id, name, number, unit(name), convention, got.detail)
