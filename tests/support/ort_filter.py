"""A float ONNX decoder bundle that needs only numpy and onnxruntime: dav1d, then a float conv filter on luma.

Why not the learned bundles: their entropy decoder (constriction) publishes no Linux aarch64 wheel, so they
cannot run on the emulated aarch64 board (docs/qemu-boards.md). This bundle keeps what matters for cross-ISA
consistency, ONNX Runtime's float CPU kernels between the decoder and the output samples, and its dav1d stage
is bit-exact by specification, so any difference between ISAs comes from the ONNX float path.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml
from onnx import TensorProto, helper

from farm.bundle import write_sums
from tests.support.cli import EXAMPLES
from tests.support.onnx_models import save, tensor, weight

DECODER = '''"""dav1d (ffdecode.py), then a float ONNX filter on each frame's luma (ONNX Runtime, CPU provider)."""
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnxruntime as ort

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from ffdecode import frame_bytes  # noqa: E402

ffmpeg, model, src, out, stats = sys.argv[1:6]
raw, raw_stats = out + ".dav1d.y4m", stats + ".dav1d"
status = subprocess.call([sys.executable, os.path.join(here, "ffdecode.py"), "--ffmpeg", ffmpeg,
                          "--decoder", "libdav1d", src, raw, raw_stats])
if status:
    sys.exit(status)
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
with open(raw_stats) as f:
    decode_ns = [json.loads(line)["decode_ns"] for line in f]
with open(raw, "rb") as f, open(out, "wb") as dst, open(stats, "w") as st:
    header = f.readline()
    size = frame_bytes(header)
    tokens = {t[:1]: t[1:] for t in header.split()[1:]}
    width, height = int(tokens[b"W"]), int(tokens[b"H"])
    dst.write(header)
    for index, spent in enumerate(decode_ns):
        marker, data = f.readline(), f.read(size)
        start = time.monotonic_ns()
        luma = np.frombuffer(data[: width * height], np.uint8).reshape(1, 1, height, width)
        (y,) = session.run(None, {"y": luma.astype(np.float32) / 255.0})
        filtered = np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8).tobytes()
        dst.write(marker + filtered + data[width * height:])
        st.write(json.dumps({"frame": index, "decode_ns": spent + time.monotonic_ns() - start}) + "\\n")
os.remove(raw)
os.remove(raw_stats)
print(json.dumps({"runtime": "onnxruntime", "version": ort.__version__,
                  "providers": session.get_providers()}), file=sys.stderr)
'''


def filter_model(path: Path) -> Path:
    """y (1, 1, H, W) in [0, 1] -> y + 0.05 * conv3x3(tanh(conv3x3(y))): a residual float filter whose sums of
    many products round differently wherever a kernel orders or fuses them differently."""
    nodes = [
        helper.make_node("Conv", ["y", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Tanh", ["c1"], ["t1"]),
        helper.make_node("Conv", ["t1", "w2"], ["c2"], pads=[1, 1, 1, 1], kernel_shape=[3, 3]),
        helper.make_node("Mul", ["c2", "gain"], ["g2"]),
        helper.make_node("Add", ["y", "g2"], ["out"]),
    ]
    inits = [weight("w1", [16, 1, 3, 3], seed=11), weight("b1", [16], seed=12), weight("w2", [1, 16, 3, 3], seed=13),
             helper.make_tensor("gain", TensorProto.FLOAT, [1], [0.05])]  # fmt: skip
    return save(path, nodes, [tensor("y", [1, 1, "h", "w"])], [tensor("out", [1, 1, "h", "w"])], inits)


def ort_filter_bundle(parent: Path, name: str = "av1-ortfilter") -> Path:
    """A copy of av1-svt (same encoder, same bitstreams) whose decode adds the float ONNX filter."""
    dest = parent / name
    shutil.copytree(EXAMPLES / "av1-svt", dest)
    (dest / "ortfilter.py").write_text(DECODER)
    filter_model(dest / "filter.onnx")
    manifest = yaml.safe_load((dest / "bundle.yaml").read_text())
    manifest["name"] = name
    target = {
        "files": ["ffdecode.py", "ortfilter.py", "filter.onnx"],
        "requires": ["onnxruntime", "ffmpeg"],
        "decode": ["{onnxruntime}", "{bundle}/ortfilter.py", "{ffmpeg}", "{bundle}/filter.onnx", "{input}",
                   "{output}", "{stats}"],
    }  # fmt: skip
    manifest["targets"] = {"linux-x86_64": target, "linux-aarch64": target}
    (dest / "bundle.yaml").write_text(yaml.safe_dump(manifest))
    write_sums(dest)
    return dest
