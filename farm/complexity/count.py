"""Count one ONNX model: MACs of one run at given input shapes, parameters, and bytes on disk.

Built on onnx's own shape inference (docs/decisions.md says why not onnx-tool): the model's symbolic input
dimensions are fixed to the shapes the bundle declares for a frame size, ONNX infers every other tensor, and each
node is counted by the rules in :mod:`farm.complexity.ops`. A node it has no rule for, or whose shapes stay
unknown, ends the count with the operator named: a decoder figure that silently left out an LSTM would be an
undercount that passes a complexity gate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import shape_inference

from farm.complexity import ops
from farm.complexity.ops import Shape, Unknown

# quantization parameters: inputs that are scales and zero points, not weights (not counted as parameters)
_QPARAM_SLOTS = {
    "QuantizeLinear": {1, 2}, "DequantizeLinear": {1, 2}, "QLinearConv": {1, 2, 4, 5, 6, 7},
    "QLinearMatMul": {1, 2, 4, 5, 6, 7}, "ConvInteger": {2, 3}, "MatMulInteger": {2, 3},
}  # fmt: skip


COUNTED = frozenset(
    {"Conv", "ConvInteger", "QLinearConv", "ConvTranspose", "MatMul", "MatMulInteger", "QLinearMatMul", "Gemm",
     "Resize", "Upsample"}
)  # fmt: skip


class Uncountable(ValueError):
    """Why a model's MACs cannot be counted (an operator without a rule, or a shape left unknown)."""


@dataclass(frozen=True)
class ModelCount:
    """One model run once: ``macs`` at the shapes it was given, ``params`` weights, ``bytes`` on disk."""

    macs: int
    params: int
    bytes: int
    by_op: tuple[tuple[str, int], ...]  # op type -> MACs, largest first, for the detail people read


def load(path: Path) -> onnx.ModelProto:
    """The graph and tensor shapes only: external weight files are sized, never read."""
    try:
        return onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises its own DecodeError; any failure means "not an ONNX model"
        raise Uncountable(f"{path.name} is not a readable ONNX model: {exc}") from None


def count(path: Path, inputs: Mapping[str, Sequence[int]]) -> ModelCount:
    """Count ``path`` with its graph inputs set to ``inputs`` (name -> shape); other inputs keep their shape."""
    model = load(path)
    _check_ops(model, path.name)  # before inference, which would fail on a custom op with a vaguer message
    _fix_inputs(model, inputs, path.name)
    try:
        inferred = shape_inference.infer_shapes(model, strict_mode=True, data_prop=True)
    except Exception as exc:  # onnx raises InferenceError and others; the reason is in the message
        raise Uncountable(f"shape inference failed on {path.name}: {exc}") from None
    shapes = _shapes(inferred)
    by_op: dict[str, int] = {}
    for node in inferred.graph.node:
        macs = _node_macs(node, shapes, path.name)
        if macs:
            by_op[node.op_type] = by_op.get(node.op_type, 0) + macs
    ranked = tuple(sorted(by_op.items(), key=lambda kv: -kv[1]))
    return ModelCount(sum(by_op.values()), params(model), model_bytes(path, model), ranked)


def _check_ops(model: onnx.ModelProto, name: str) -> None:
    for node in model.graph.node:
        if node.domain not in ("", "ai.onnx"):
            raise Uncountable(f"cannot count op {node.domain}.{node.op_type} in {name}")
        if node.op_type not in COUNTED and node.op_type not in ops.ZERO:
            raise Uncountable(f"cannot count op {node.op_type} in {name}")


def _fix_inputs(model: onnx.ModelProto, inputs: Mapping[str, Sequence[int]], name: str) -> None:
    graph_inputs = {i.name: i for i in model.graph.input}
    for input_name, dims in inputs.items():
        if input_name not in graph_inputs:
            known = ", ".join(sorted(graph_inputs)) or "none"
            raise Uncountable(f"{name} has no input {input_name!r} (its inputs: {known})")
        tensor = graph_inputs[input_name].type.tensor_type
        del tensor.shape.dim[:]
        for d in dims:
            tensor.shape.dim.add().dim_value = int(d)


def _shapes(model: onnx.ModelProto) -> dict[str, Shape]:
    out: dict[str, Shape] = {}
    graph = model.graph
    for info in (*graph.input, *graph.value_info, *graph.output):
        tensor = info.type.tensor_type
        if tensor.HasField("shape") and all(d.HasField("dim_value") for d in tensor.shape.dim):
            out[info.name] = tuple(int(d.dim_value) for d in tensor.shape.dim)
    for init in graph.initializer:
        out[init.name] = tuple(int(d) for d in init.dims)
    return out


def _node_macs(node: onnx.NodeProto, shapes: Mapping[str, Shape], model: str) -> int:
    op = node.op_type

    def shape(tensor: str) -> Shape:
        if tensor not in shapes:
            raise Unknown(tensor)
        return shapes[tensor]

    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    try:
        return _rule(op, list(node.input), list(node.output), shape, attrs, model)
    except Unknown as exc:
        raise Uncountable(
            f"shape of {exc.args[0]!r} (input or output of {op} {node.name!r}) in {model} is unknown: declare the "
            "model's input shapes in bundle.yaml"
        ) from None


def _rule(op: str, ins: list[str], outs: list[str], shape: ops.ShapeOf, attrs: Mapping[str, object], model: str) -> int:
    if op in ("Conv", "ConvInteger"):
        return ops.conv(ins, outs, shape)
    if op == "QLinearConv":
        return ops.conv(ins, outs, shape, weight=3)
    if op == "ConvTranspose":
        return ops.conv_transpose(ins, outs, shape)
    if op in ("MatMul", "MatMulInteger", "QLinearMatMul"):
        return ops.matmul(ins, outs, shape)
    if op == "Gemm":
        return ops.gemm(ins, outs, shape, trans_a=bool(attrs.get("transA", 0)))
    if op in ("Resize", "Upsample"):
        mode = attrs.get("mode", b"nearest")
        text = mode.decode() if isinstance(mode, bytes) else str(mode)
        return ops.resize(outs, shape, text, shape(ins[0]))
    if op in ops.ZERO:
        return 0
    raise Uncountable(f"cannot count op {op} in {model}")


def params(model: onnx.ModelProto) -> int:
    """Elements of the initializers, except quantization scales and zero points (so a QDQ model has as many
    parameters as its float original)."""
    qparams = {
        node.input[i] for node in model.graph.node for i in _QPARAM_SLOTS.get(node.op_type, ()) if i < len(node.input)
    }
    return sum(_elements(init.dims) for init in model.graph.initializer if init.name not in qparams)


def _elements(dims: Sequence[int]) -> int:
    n = 1
    for d in dims:
        n *= int(d)
    return n


def model_bytes(path: Path, model: onnx.ModelProto) -> int:
    """The model file and any external weight files it names (what a device has to hold)."""
    total = path.stat().st_size
    external = {
        entry.value
        for init in model.graph.initializer
        if init.data_location == onnx.TensorProto.EXTERNAL
        for entry in init.external_data
        if entry.key == "location"
    }
    for rel in sorted(external):
        extra = path.parent / rel
        if extra.is_file():
            total += extra.stat().st_size
    return total
