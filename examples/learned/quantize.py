"""The INT8 synthesis of LRC: onnxruntime static quantization (QDQ) of synthesis.onnx, calibrated on real latents.

The calibration set is what the decoder really sees: latents of training frames, quantized and dequantized at the
steps the rate control picks for the suites' rate points (not random noise), so activation ranges fit decoding.
MinMax calibration and a fixed frame subset make the result reproducible.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import lrc  # noqa: E402

STEPS = (3.1, 4.7, 6.5, 9.0, 12.9, 17.6)  # about the steps the smoke suite's rate points select (docs/learned-codec.md)


def calibration_latents(model: Path, frames: list[np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    prior = lrc.Prior.load(model / "prior.json")
    analysis = ort.InferenceSession(str(model / "analysis.onnx"), providers=["CPUExecutionProvider"])
    out = []
    for i, frame in enumerate(frames[::6]):
        y = analysis.run(None, {"x": frame[None]})[0]
        q = STEPS[i % len(STEPS)]
        out.append(lrc.dequantize(lrc.quantize(y, prior, q), prior, q))
    return out


class Reader:
    """onnxruntime's CalibrationDataReader protocol over a fixed list of inputs."""

    def __init__(self, latents: list[np.ndarray]) -> None:
        self._items = iter([{"y_hat": y} for y in latents])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._items, None)


def int8_synthesis(model: Path, frames: list[np.ndarray]) -> Path:
    """Write ``synthesis-int8.onnx`` (QDQ, per-channel INT8 weights, UINT8 activations) next to ``synthesis.onnx``."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = model / "synthesis-prep.onnx"
    quant_pre_process(str(model / "synthesis.onnx"), str(prepared), skip_symbolic_shape=True)
    out = model / "synthesis-int8.onnx"
    quantize_static(
        str(prepared),
        str(out),
        Reader(calibration_latents(model, frames)),
        quant_format=QuantFormat.QDQ,
        per_channel=True,
        activation_type=QuantType.QUInt8,
        weight_type=QuantType.QInt8,
        calibrate_method=CalibrationMethod.MinMax,
    )
    prepared.unlink()
    return out
