"""Multiply-accumulates of one ONNX node, from the shapes shape inference gave its inputs and outputs.

What counts as a MAC (docs/complexity.md has the reasons): one product of a learned weight (or, in MatMul, a
second activation) with an activation, accumulated. Conv, ConvTranspose, Gemm, MatMul and their quantized forms
count; interpolating Resize counts its filter taps. Everything else of a decoder is either data movement
(reshape, transpose, depth-to-space, pad, concat), quantization bookkeeping (Q/DQ: the float original has no
such node, so an INT8 model counts what its float original counts), or at most a few operations per element of
a tensor some counted layer just produced (activations, bias adds, GDN's Sqrt/Div after its counted 1x1 Conv,
batch normalisation that folds into the previous convolution): those count zero, as in the published kMAC/pixel
figures this number is compared with. An operator in neither list is not guessed at: the count is refused.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

Shape = tuple[int, ...]
ShapeOf = Callable[[str], Shape]  # a tensor's static shape; raises Unknown when shape inference left it open


class Unknown(LookupError):
    """A tensor whose shape is not known statically (declare the model's input shapes in bundle.yaml)."""


def _prod(dims: Sequence[int]) -> int:
    return math.prod(dims) if dims else 1


def conv(inputs: Sequence[str], outputs: Sequence[str], shape: ShapeOf, weight: int = 1) -> int:
    """Each output element takes (C_in / groups) x kernel products: strides, dilation, pads and groups are
    already in the output shape and the weight shape (C_out, C_in / groups, k...)."""
    return _prod(shape(outputs[0])) * _prod(shape(inputs[weight])[1:])


def conv_transpose(inputs: Sequence[str], outputs: Sequence[str], shape: ShapeOf, weight: int = 1) -> int:
    """Each input element is scattered through (C_out / groups) x kernel weights (C_in, C_out / groups, k...);
    stride, output_padding and pads place the products but do not change how many there are."""
    return _prod(shape(inputs[0])) * _prod(shape(inputs[weight])[1:])


def matmul(inputs: Sequence[str], outputs: Sequence[str], shape: ShapeOf, b: int = 1) -> int:
    """Every output element is a dot product over the shared dimension K (batched dimensions broadcast)."""
    a_shape = shape(inputs[0])
    k = a_shape[-1] if a_shape else 1
    return _prod(shape(outputs[0])) * k


def gemm(inputs: Sequence[str], outputs: Sequence[str], shape: ShapeOf, trans_a: bool) -> int:
    """Y (M, N) = A (M, K) x B (K, N): M x N x K; the bias C and alpha/beta scalings are not counted."""
    a_shape = shape(inputs[0])
    k = a_shape[0] if trans_a else a_shape[-1]
    return _prod(shape(outputs[0])) * k


def resize(outputs: Sequence[str], shape: ShapeOf, mode: str, in_shape: Shape) -> int:
    """Linear interpolation weighs 2 taps per resized axis, cubic 4; nearest copies (0)."""
    if mode == "nearest":
        return 0
    out = shape(outputs[0])
    axes = sum(1 for i, o in zip(in_shape, out, strict=False) if i != o)
    taps = (2 if mode == "linear" else 4) ** axes
    return _prod(out) * taps if axes else 0


# counted as zero: data movement, Q/DQ bookkeeping, and per-element operations on what a counted layer produced
ZERO = frozenset(
    [
        "Identity",
        "Reshape",
        "Flatten",
        "Squeeze",
        "Unsqueeze",
        "Transpose",
        "Concat",
        "Split",
        "Slice",
        "Gather",
        "GatherElements",
        "GatherND",
        "Pad",
        "Expand",
        "Tile",
        "DepthToSpace",
        "SpaceToDepth",
        "Shape",
        "Size",
        "Cast",
        "CastLike",
        "Constant",
        "ConstantOfShape",
        "Range",
        "Where",
        "QuantizeLinear",
        "DequantizeLinear",
        "DynamicQuantizeLinear",
        "Add",
        "Sub",
        "Mul",
        "Div",
        "Pow",
        "Sqrt",
        "Reciprocal",
        "Neg",
        "Abs",
        "Exp",
        "Log",
        "Round",
        "Floor",
        "Ceil",
        "Sign",
        "Clip",
        "Min",
        "Max",
        "Mod",
        "Relu",
        "LeakyRelu",
        "PRelu",
        "Elu",
        "Selu",
        "Celu",
        "Gelu",
        "Sigmoid",
        "HardSigmoid",
        "HardSwish",
        "Tanh",
        "Softplus",
        "Softsign",
        "Mish",
        "Erf",
        "Softmax",
        "LogSoftmax",
        "BatchNormalization",
        "InstanceNormalization",
        "LayerNormalization",
        "ReduceMean",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
        "ReduceL1",
        "ReduceL2",
        "ReduceSumSquare",
        "ArgMax",
        "ArgMin",
        "Equal",
        "Less",
        "LessOrEqual",
        "Greater",
        "GreaterOrEqual",
        "Not",
        "And",
        "Or",
        "Xor",
        "IsNaN",
        "IsInf",
        "MaxPool",
        "AveragePool",
        "GlobalAveragePool",
        "GlobalMaxPool",
    ]
)
