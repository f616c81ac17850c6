"""The MAC counter against counts worked out by hand, QDQ models against their float originals, and refusals."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import yaml
from onnx import TensorProto, helper

from farm.bundle import open_bundle
from farm.complexity.count import Uncountable, count
from farm.complexity.decoder import NO_MODELS, decoder_complexity
from farm.complexity.record import record_complexity
from farm.config.inventory import load_inventory
from farm.config.manifest import Model, load_manifest
from farm.config.suite import Gate
from farm.errors import InputError
from farm.gates import evaluate, load_view
from farm.store import Store
from tests.conftest import EXAMPLES, ROOT
from tests.support.onnx_models import bundle_with_model, save, tensor, tiny_decoder, tiny_decoder_macs, weight


def _conv(tmp_path: Path, **attrs: object) -> Path:
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], **attrs)
    return save(tmp_path / "conv.onnx", [node], [tensor("x", [1, 4, 16, 16])], [tensor("y", [1, 8, None, None])],
                [weight("w", [8, 2, 3, 3]), weight("b", [8])])  # fmt: skip


def test_conv_with_stride_groups_dilation_and_pads(tmp_path: Path) -> None:
    # H_out = floor((16 + 2 - 2*(3-1) - 1) / 2) + 1 = 7; each of 8x7x7 outputs takes (4/2 groups) x 3x3 products
    path = _conv(tmp_path, strides=[2, 2], group=2, dilations=[2, 2], pads=[1, 1, 1, 1])
    result = count(path, {})
    assert result.macs == 8 * 7 * 7 * 2 * 3 * 3 == 7056
    assert result.params == 8 * 2 * 9 + 8
    assert result.bytes == path.stat().st_size


def test_conv_transpose_with_stride_and_output_padding(tmp_path: Path) -> None:
    # out = (5-1)*2 - 2 + 3 + 1 = 10; every input element meets C_out/groups x 3x3 weights, however placed
    for group, w_shape in ((1, [4, 3, 3, 3]), (2, [4, 3, 3, 3])):
        node = helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2], pads=[1, 1, 1, 1],
                                output_padding=[1, 1], group=group)  # fmt: skip
        path = save(tmp_path / f"ct{group}.onnx", [node], [tensor("x", [1, 4, 5, 5])],
                    [tensor("y", [1, 3 * group, 10, 10])], [weight("w", w_shape)])  # fmt: skip
        assert count(path, {}).macs == 4 * 5 * 5 * 3 * 3 * 3 == 2700


def test_gemm_and_batched_matmul(tmp_path: Path) -> None:
    gemm = helper.make_node("Gemm", ["a", "b", "c"], ["y"], transA=1)
    path = save(tmp_path / "gemm.onnx", [gemm], [tensor("a", [7, 5])], [tensor("y", [5, 3])],
                [weight("b", [7, 3]), weight("c", [3])])  # fmt: skip
    assert count(path, {}).macs == 5 * 3 * 7 == 105
    mm = helper.make_node("MatMul", ["a", "b"], ["y"])
    path = save(tmp_path / "mm.onnx", [mm], [tensor("a", [2, 3, 4, 5])], [tensor("y", [2, 3, 4, 6])],
                [weight("b", [5, 6])])  # fmt: skip
    assert count(path, {}).macs == 2 * 3 * 4 * 6 * 5 == 720


def _qdq_conv(tmp_path: Path) -> Path:
    """The conv of test_conv... as onnxruntime's QDQ format writes it: int8 weights behind DequantizeLinear,
    the activation through QuantizeLinear -> DequantizeLinear."""
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        helper.make_node("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
        helper.make_node("DequantizeLinear", ["wq", "ws", "wz"], ["wd"]),
        helper.make_node("Conv", ["xd", "wd", "b"], ["y"], strides=[2, 2], group=2, dilations=[2, 2],
                         pads=[1, 1, 1, 1]),
    ]  # fmt: skip
    scalars = [helper.make_tensor("xs", TensorProto.FLOAT, [], [0.05]), helper.make_tensor("ws", TensorProto.FLOAT,
               [], [0.01]), helper.make_tensor("xz", TensorProto.INT8, [], [0]),
               helper.make_tensor("wz", TensorProto.INT8, [], [0])]  # fmt: skip
    return save(tmp_path / "qdq.onnx", nodes, [tensor("x", [1, 4, 16, 16])], [tensor("y", [1, 8, None, None])],
                [weight("wq", [8, 2, 3, 3], np.int8), weight("b", [8]), *scalars])  # fmt: skip


def test_qdq_and_qlinear_conv_count_as_their_float_original(tmp_path: Path) -> None:
    flt = count(_conv(tmp_path, strides=[2, 2], group=2, dilations=[2, 2], pads=[1, 1, 1, 1]), {})
    qdq = count(_qdq_conv(tmp_path), {})
    assert (qdq.macs, qdq.params) == (flt.macs, flt.params)  # scales and zero points are not parameters
    qlinear = helper.make_node("QLinearConv", ["x", "xs", "xz", "w", "ws", "wz", "ys", "yz"], ["y"], strides=[2, 2],
                               group=2, dilations=[2, 2], pads=[1, 1, 1, 1])  # fmt: skip
    scalars = [helper.make_tensor(n, TensorProto.FLOAT if n.endswith("s") else TensorProto.INT8, [], [1])
               for n in ("xs", "xz", "ws", "wz", "ys", "yz")]  # fmt: skip
    path = save(
        tmp_path / "ql.onnx",
        [qlinear],
        [tensor("x", [1, 4, 16, 16], TensorProto.INT8)],
        [tensor("y", [1, 8, None, None], TensorProto.INT8)],
        [weight("w", [8, 2, 3, 3], np.int8), *scalars],
    )
    assert count(path, {}).macs == flt.macs


def test_an_operator_without_a_rule_makes_the_count_missing_naming_it(tmp_path: Path) -> None:
    lstm = helper.make_node("LSTM", ["x", "w", "r"], ["y"], hidden_size=4)
    path = save(tmp_path / "synthesis.onnx", [lstm], [tensor("x", [3, 1, 2])], [tensor("y", [3, 1, 1, 4])],
                [weight("w", [1, 16, 2]), weight("r", [1, 16, 4])])  # fmt: skip
    with pytest.raises(Uncountable, match=r"cannot count op LSTM in synthesis\.onnx"):
        count(path, {})
    got = decoder_complexity(tmp_path, [Model(file="synthesis.onnx")], [(64, 64)])
    assert got.kmac_per_pixel is None and "cannot count op LSTM in synthesis.onnx" in got.detail
    assert got.params == 16 * 2 + 16 * 4  # what can still be counted is kept


def test_symbolic_shapes_without_declared_inputs_are_refused(tmp_path: Path) -> None:
    tiny_decoder(tmp_path / "dec.onnx")
    with pytest.raises(Uncountable, match="unknown: declare the model's input shapes"):
        count(tmp_path / "dec.onnx", {})


def test_a_real_model_per_pixel_at_the_frame_size_and_its_int8_quantization(tmp_path: Path) -> None:
    """The tiny decoder runs in ONNX Runtime (it is a real model), its per-pixel count matches the hand count at
    two frame sizes, and onnxruntime's own static QDQ quantization of it counts the same MACs."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    path = tiny_decoder(tmp_path / "dec.onnx")
    z = np.random.default_rng(0).standard_normal((1, 8, 4, 6)).astype(np.float32)
    (y,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"z": z})
    assert y.shape == (1, 3, 32, 48)
    model = Model(file="dec.onnx", inputs={"z": (1, 8, "H/8", "W/8")})
    got = decoder_complexity(tmp_path, [model], [(48, 32), (128, 96)])
    per_px = [tiny_decoder_macs(w, h) / (w * h) / 1000 for w, h in ((48, 32), (128, 96))]
    assert got.kmac_per_pixel == pytest.approx(max(per_px))
    assert got.params == 8 * 16 * 9 + 16 + 16 * 6 * 9 + 12 * 6

    class Calib(CalibrationDataReader):
        def __init__(self) -> None:
            self.left = [{"z": z}, {"z": z * 0.5}]

        def get_next(self) -> dict[str, np.ndarray] | None:
            return self.left.pop() if self.left else None

    quantize_static(str(path), str(tmp_path / "int8.onnx"), Calib(), quant_format=QuantFormat.QDQ)
    q = decoder_complexity(tmp_path, [model.model_copy(update={"file": "int8.onnx"})], [(48, 32), (128, 96)])
    assert q.kmac_per_pixel == pytest.approx(got.kmac_per_pixel)
    assert q.model_bytes is not None and got.model_bytes is not None and q.model_bytes < got.model_bytes


def test_fixed_resolution_and_runs_per_frame(tmp_path: Path) -> None:
    tiny_decoder(tmp_path / "dec.onnx")
    tile = Model(file="dec.onnx", inputs={"z": (1, 8, 4, 4)}, resolution=(32, 32), runs_per_frame=2)
    got = decoder_complexity(tmp_path, [tile], [(640, 480)])
    assert got.kmac_per_pixel == pytest.approx(2 * tiny_decoder_macs(32, 32) / (32 * 32) / 1000)


def test_a_bundle_without_models_is_missing_with_the_reason(tmp_path: Path) -> None:
    got = decoder_complexity(tmp_path, [], [(64, 64)])
    assert (got.kmac_per_pixel, got.params, got.model_bytes, got.detail) == (None, None, None, NO_MODELS)


def test_a_dimension_that_does_not_divide_is_missing_not_rounded(tmp_path: Path) -> None:
    tiny_decoder(tmp_path / "dec.onnx")
    got = decoder_complexity(tmp_path, [Model(file="dec.onnx", inputs={"z": (1, 8, "H/8", "W/8")})], [(100, 64)])
    assert got.kmac_per_pixel is None and "'W/8' is not a whole number at 100x64" in got.detail


def _bundle_with_models(tmp_path: Path, models: str) -> Path:
    dest = tmp_path / "b"
    shutil.copytree(EXAMPLES / "av1-svt", dest)
    tiny_decoder(dest / "synthesis.onnx")
    with (dest / "bundle.yaml").open("a") as f:
        f.write(models)
    return dest / "bundle.yaml"


def test_bundle_models_are_validated_with_file_line_and_field(tmp_path: Path) -> None:
    path = _bundle_with_models(tmp_path, 'models:\n  - file: synthesis.onnx\n    inputs:\n      z: [1, 8, "W**2", 4]\n')
    with pytest.raises(InputError) as exc:
        load_manifest(path)
    lines = path.read_text().splitlines()
    assert f"{path}:{len(lines) - 1}: models[0].inputs: inputs.z[2]: 'W**2': only integers" in str(exc.value)
    path.write_text("\n".join(lines[:-4]) + "\nmodels:\n  - file: synthesis.onnx\n  - file: gone.onnx\n")
    with pytest.raises(InputError, match=r"bundle.yaml:\d+: models\[1\]\.file: file 'gone.onnx' is not in the bundle"):
        load_manifest(path)


def test_a_targets_own_models_replace_the_bundle_wide_list(tmp_path: Path) -> None:
    path = _bundle_with_models(tmp_path, 'models:\n  - {file: synthesis.onnx, inputs: {z: [1, 8, "H/8", "W/8"]}}\n')
    data = yaml.safe_load(path.read_text())
    data["targets"]["linux-aarch64"] = {**data["targets"]["linux-aarch64"], "models": []}
    path.write_text(yaml.safe_dump(data))
    manifest = load_manifest(path)
    assert [m.file for m in manifest.models_for("linux-x86_64")] == ["synthesis.onnx"]
    assert manifest.models_for("linux-aarch64") == ()


def test_a_complexity_gate_on_a_bundle_without_models_is_missing_and_fails(tmp_path: Path) -> None:
    """Through the store as a run writes it: the traditional bundle's rows are missing with the reason, and the
    gate on them is ``missing`` (not passed), while a bundle with a model passes the same gate."""
    store = Store(tmp_path / "r.db")
    devices = load_inventory(ROOT / "devices.yaml").devices[:1]
    gates = [Gate(metric="complexity.kmac_per_pixel", op="<=", value=50)]
    for run_id, path in (("plain", EXAMPLES / "hevc-x265"), ("model", bundle_with_model(tmp_path))):
        store.start_run(run_id, suite_name="s", suite_digest="d", suite_json="{}", bundle_name="b",
                        bundle_version="1", bundle_digest="x", host="h", farm_version="0", conventions={},
                        plan={"devices": {d.id: {"tags": [], "test_jobs": 0} for d in devices}})  # fmt: skip
        record_complexity(store, run_id, open_bundle(path, tmp_path / "cache"), devices, [(128, 96)])
        store.finish_run(run_id, "complete", {})
    [missing] = evaluate(gates, load_view(store, "plain"))
    assert missing.verdict == "missing" and NO_MODELS in missing.detail
    [passed] = evaluate(gates, load_view(store, "model"))
    assert passed.verdict == "pass" and passed.value == pytest.approx(tiny_decoder_macs(128, 96) / 128 / 96 / 1000)
    store.close()
