"""LRC, the learned example codec: round trips on the host, the INT8 model, bundle integrity, broken bitstreams.

The codec is run as the farm runs it: ``python lrc.py`` from the bundle folder, a subprocess per encode and decode.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest

from farm.bundle import verify_dir
from farm.media import host_ffmpeg
from tests.conftest import EXAMPLES, ROOT

FP32 = EXAMPLES / "learned-fp32"
INT8 = EXAMPLES / "learned-int8"
FRAMES = 4


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lrc") / "src.y4m"
    subprocess.run(
        [host_ffmpeg(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate=30",
         "-frames:v", str(FRAMES), "-pix_fmt", "yuv420p", str(out)],
        check=True,
    )  # fmt: skip
    return out


def encode(src: Path, out: Path, kbps: float) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(FP32 / "lrc.py"), "encode", "--model", str(FP32 / "analysis.onnx"),
            "--prior", str(FP32 / "prior.json"), "--rate", f"{kbps:g}", str(src), str(out)]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def decode(bundle: Path, model: str, src: Path, out: Path) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, str(bundle / "lrc.py"), "decode", "--model", str(bundle / model),
            "--prior", str(bundle / "prior.json"), str(src), str(out), str(out.with_suffix(".jsonl"))]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, check=False)


def y4m_frames(path: Path) -> list[np.ndarray]:
    data = path.read_bytes()
    header = data[: data.index(b"\n")].split()
    w, h = int(header[1][1:]), int(header[2][1:])
    size = w * h * 3 // 2
    frames, pos = [], data.index(b"\n") + 1
    while pos < len(data):
        pos = data.index(b"\n", pos) + 1
        frames.append(np.frombuffer(data, np.uint8, size, pos).astype(np.float64))
        pos += size
    return frames


def psnr(a: Path, b: Path) -> float:
    fa, fb = y4m_frames(a), y4m_frames(b)
    assert len(fa) == len(fb)
    mse = np.mean([np.mean((x - y) ** 2) for x, y in zip(fa, fb, strict=True)])
    return float(10 * np.log10(255.0**2 / mse))


@pytest.fixture(scope="module")
def encoded(source: Path) -> dict[float, Path]:
    out = {}
    for kbps in (100.0, 400.0, 1600.0):
        path = source.parent / f"{kbps:g}.lrc"
        res = encode(source, path, kbps)
        assert res.returncode == 0, res.stderr
        out[kbps] = path
    return out


def test_round_trip_rate_rises_with_the_target_and_quality_with_the_rate(
    source: Path, encoded: dict[float, Path]
) -> None:
    sizes, quality = [], []
    for kbps, path in sorted(encoded.items()):
        bits = path.stat().st_size * 8
        target = kbps * 1000 * FRAMES / 30
        assert bits <= target * 1.02, f"{kbps} kbps: {bits} bits for a budget of {target:.0f}"
        out = path.with_suffix(".y4m")
        res = decode(FP32, "synthesis.onnx", path, out)
        assert res.returncode == 0, res.stderr
        sizes.append(bits)
        quality.append(psnr(source, out))
    assert sizes == sorted(sizes) and len(set(sizes)) == 3
    assert quality == sorted(quality), quality
    assert quality[0] > 18 and quality[-1] < 60, quality


def test_stats_have_one_time_per_frame_and_the_runtime_report(encoded: dict[float, Path]) -> None:
    out = encoded[400.0].with_name("stats.y4m")
    assert decode(FP32, "synthesis.onnx", encoded[400.0], out).returncode == 0
    lines = [json.loads(line) for line in out.with_suffix(".jsonl").read_text().splitlines()]
    runtime = [rec["runtime"] for rec in lines if "runtime" in rec]
    frames = [rec for rec in lines if "frame" in rec]
    assert [f["frame"] for f in frames] == list(range(FRAMES)) and all(f["decode_ns"] > 0 for f in frames)
    assert len(runtime) == 1
    import onnxruntime

    assert runtime[0]["name"] == "onnxruntime" and runtime[0]["version"] == onnxruntime.__version__
    assert runtime[0]["providers_requested"] == ["CPUExecutionProvider"]
    assert runtime[0]["providers_used"] == ["CPUExecutionProvider"]
    assert runtime[0]["cpu_fallback_nodes"] == 0 and runtime[0]["nodes_by_provider"]["CPUExecutionProvider"] > 5


def test_int8_model_is_qdq_and_decodes_close_to_float(source: Path, encoded: dict[float, Path]) -> None:
    graph = onnx.load(str(INT8 / "synthesis-int8.onnx")).graph
    ops = Counter(n.op_type for n in graph.node)
    assert ops["QuantizeLinear"] > 0 and ops["DequantizeLinear"] > 0, ops
    int8_weights = [t.name for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]
    convs = [n for n in graph.node if n.op_type in ("Conv", "ConvTranspose")]
    producers = {o: n for n in graph.node for o in n.output}
    for conv in convs:  # every convolution's weight is an INT8 tensor dequantized in the graph
        weight = producers[conv.input[1]]
        assert weight.op_type == "DequantizeLinear" and weight.input[0] in int8_weights, conv.name
    out_f, out_q = source.parent / "f.y4m", source.parent / "q.y4m"
    assert decode(FP32, "synthesis.onnx", encoded[1600.0], out_f).returncode == 0
    res = decode(INT8, "synthesis-int8.onnx", encoded[1600.0], out_q)
    assert res.returncode == 0, res.stderr
    gap = psnr(source, out_f) - psnr(source, out_q)
    assert -0.5 < gap < 3.0, gap


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda b: b[:-7], "truncated"),
        (lambda b: b"XXXX" + b[4:], "bad magic"),
        (lambda b: b[:29] + bytes([b[29] ^ 0xFF]) + b[30:], "another entropy model"),
        (lambda b: b + b"\0\0\0\0", "trailing bytes"),
    ],
)
def test_a_broken_bitstream_exits_1_and_says_why(encoded: dict[float, Path], damage: object, message: str) -> None:
    bad = encoded[100.0].with_name("bad.lrc")
    bad.write_bytes(damage(encoded[100.0].read_bytes()))  # type: ignore[operator]
    res = decode(FP32, "synthesis.onnx", bad, bad.with_suffix(".y4m"))
    assert res.returncode == 1 and message in res.stderr, res.stderr


def test_bundles_verify_and_share_the_codec_and_its_encoder_side() -> None:
    for bundle in (FP32, INT8):
        verify_dir(bundle)
        assert (bundle / "lrc.py").read_bytes() == (ROOT / "examples/learned/lrc.py").read_bytes(), bundle
    for shared in ("analysis.onnx", "prior.json"):  # so the two bundles' bitstreams are the same bytes
        assert (FP32 / shared).read_bytes() == (INT8 / shared).read_bytes()
