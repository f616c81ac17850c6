"""Small ONNX graphs built with onnx.helper, for the complexity counter's tests (no torch needed)."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx
import yaml
from onnx import TensorProto, helper, numpy_helper

from farm.bundle import write_sums
from tests.conftest import EXAMPLES

OPSET = [helper.make_opsetid("", 17)]


def tensor(name: str, dims: Sequence[int | str | None], elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, list(dims))


def weight(name: str, shape: Sequence[int], dtype: type = np.float32, seed: int = 0) -> onnx.TensorProto:
    rng = np.random.default_rng(seed)
    if dtype is np.int8:
        return numpy_helper.from_array(rng.integers(-100, 100, size=shape).astype(np.int8), name)
    return numpy_helper.from_array(rng.standard_normal(shape).astype(dtype), name)


def save(
    path: Path, nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], outputs: list[onnx.ValueInfoProto],
    inits: Sequence[onnx.TensorProto] = (),
) -> Path:  # fmt: skip
    graph = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    model = helper.make_model(graph, opset_imports=OPSET)
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def tiny_decoder(path: Path) -> Path:
    """A synthesis transform a learned codec would recognise: latent (1, 8, H/8, W/8) -> two stride-2
    transposed convolutions with a ReLU between them -> a 3x3 conv to 12 channels -> depth-to-space x2
    (the frame at W x H, 3 channels). Input spatial dims are symbolic, as a real export leaves them."""
    nodes = [
        helper.make_node("ConvTranspose", ["z", "w1", "b1"], ["t1"], strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1], kernel_shape=[3, 3]),
        helper.make_node("Relu", ["t1"], ["r1"]),
        helper.make_node("ConvTranspose", ["r1", "w2"], ["t2"], strides=[2, 2], pads=[1, 1, 1, 1],
                         output_padding=[1, 1], kernel_shape=[3, 3]),
        helper.make_node("Conv", ["t2", "w3"], ["c3"], pads=[0, 0, 0, 0], kernel_shape=[1, 1]),
        helper.make_node("DepthToSpace", ["c3"], ["y"], blocksize=2, mode="CRD"),
    ]  # fmt: skip
    inits = [weight("w1", [8, 16, 3, 3], seed=1), weight("b1", [16], seed=2), weight("w2", [16, 6, 3, 3], seed=3),
             weight("w3", [12, 6, 1, 1], seed=4)]  # fmt: skip
    return save(path, nodes, [tensor("z", [1, 8, "h", "w"])], [tensor("y", [1, 3, None, None])], inits)


def tiny_decoder_macs(width: int, height: int) -> int:
    """By hand: ConvT1 scatters each latent element (8 x H/8 x W/8) through 16 x 3 x 3 weights; ConvT2 each of
    its outputs (16 x H/4 x W/4) through 6 x 3 x 3; the 1x1 conv gives 12 x H/2 x W/2 outputs of 6 products.
    ReLU, the bias and depth-to-space (which doubles H/2 x W/2 to the frame) count zero (docs/complexity.md)."""
    h8, w8 = height // 8, width // 8
    convt1 = 8 * h8 * w8 * 16 * 9
    convt2 = 16 * (2 * h8) * (2 * w8) * 6 * 9
    conv3 = 12 * (4 * h8) * (4 * w8) * 6
    return convt1 + convt2 + conv3


def bundle_with_model(parent: Path, name: str = "av1-model") -> Path:
    """A copy of the av1-svt bundle (same name, so the same labels) that declares the tiny decoder as its
    bundle-wide model: its decode stays dav1d, but its complexity is known by hand (tiny_decoder_macs)."""
    dest = parent / name
    shutil.copytree(EXAMPLES / "av1-svt", dest)
    tiny_decoder(dest / "synthesis.onnx")
    manifest = yaml.safe_load((dest / "bundle.yaml").read_text())
    manifest["models"] = [{"file": "synthesis.onnx", "inputs": {"z": [1, 8, "H/8", "W/8"]}}]
    (dest / "bundle.yaml").write_text(yaml.safe_dump(manifest))
    write_sums(dest)
    return dest
