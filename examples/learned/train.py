"""Train LRC (examples/learned/lrc.py) here, from frames made here, and write both learned example bundles.

Reproducible: fixed seeds, deterministic torch kernels, a fixed thread count and training data rendered by
imageio-ffmpeg's ffmpeg from lavfi generators. Needs the `train` extra (torch, pinned to a CPU build); the
bundles it writes need only numpy, onnxruntime and constriction.

    PYTHONPATH=. python3 examples/learned/train.py            # ~minutes on 2 cores; see docs/learned-codec.md
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import lrc  # noqa: E402

BUNDLES = HERE.parent / "bundles"
N, M = 48, 96  # hidden and latent channels (96 latents per 8x8 luma block: more than its 96 samples at 4:2:0)
# Training content: the suites' generators at other sizes, zooms and times than the smoke sequences, plus others.
SOURCES = [
    "testsrc2=size=640x480:rate=30",
    "testsrc2=size=480x360:rate=30",
    "mandelbrot=size=640x480:rate=30:start_scale=2:end_scale=0.05",
    "mandelbrot=size=480x360:rate=30:start_x=-0.74:start_y=-0.2:start_scale=1",
    "smptehdbars=size=640x480:rate=30",
    "zoneplate=size=480x360:rate=30:kt2=4:ky2=2:kx2=2",
    "gradients=size=640x480:rate=30:seed=7:speed=0.05",
    "sierpinski=size=640x480:rate=30:seed=3",
    "cellauto=size=480x360:rate=30:rule=110:seed=5",
    "life=size=480x360:rate=30:seed=11:mold=10:ratio=0.2",
    "rgbtestsrc=size=480x360:rate=30",
    "yuvtestsrc=size=480x360:rate=30",
]


def render(spec: str, frames: int, skip_s: float) -> list[np.ndarray]:
    """Frames of one lavfi source as 6-channel half-resolution arrays (lrc.to_channels)."""
    import imageio_ffmpeg

    w, h = (int(v) for v in spec.split("size=")[1].split(":")[0].split("x"))
    argv = [imageio_ffmpeg.get_ffmpeg_exe(), "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", spec,
            "-ss", f"{skip_s}", "-frames:v", str(frames), "-pix_fmt", "yuv420p", "-f", "rawvideo", "-"]  # fmt: skip
    raw = subprocess.run(argv, capture_output=True, check=True).stdout
    size = w * h * 3 // 2
    return [lrc.to_channels(np.frombuffer(raw, np.uint8, size, i * size), w, h)[0] for i in range(len(raw) // size)]


def dataset() -> list[np.ndarray]:
    out: list[np.ndarray] = []
    for i, spec in enumerate(SOURCES):
        out += render(spec, 16, 2.0 + i)
    return out


class GDN(nn.Module):
    """Generalized divisive normalization (Ballé et al. 2016); ``inverse`` gives IGDN for the synthesis."""

    def __init__(self, ch: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta = nn.Parameter(torch.ones(ch))
        self.gamma = nn.Parameter(0.1**0.5 * torch.eye(ch).view(ch, ch, 1, 1) + 1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        beta = self.beta**2 + 1e-4
        gamma = self.gamma**2
        norm = torch.sqrt(nn.functional.conv2d(x * x, gamma, beta))
        return x * norm if self.inverse else x / norm


def conv(cin: int, cout: int, k: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2)


def deconv(cin: int, cout: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(cin, cout, 5, stride=2, padding=2, output_padding=1)


class Codec(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.analysis = nn.Sequential(conv(6, N), GDN(N), conv(N, N), GDN(N), conv(N, M, 3, 1))
        self.synthesis = nn.Sequential(conv(M, N, 3, 1), GDN(N, True), deconv(N, N), GDN(N, True), deconv(N, 6))
        self.mean = nn.Parameter(torch.zeros(M))
        self.log_scale = nn.Parameter(torch.zeros(M))

    def bits(self, y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        """-log2 of the quantized Laplace mass of each noisy latent (the training proxy of lrc.laplace_bits)."""
        b = torch.exp(self.log_scale).view(1, -1, 1, 1)
        d = torch.abs(y - self.mean.view(1, -1, 1, 1))
        upper = torch.clamp((d + q / 2) / b, max=60.0)
        lower = torch.clamp(d - q / 2, min=0.0) / b
        inside = d < q / 2  # the bin straddles the mean
        mass = torch.where(
            inside,
            1 - 0.5 * torch.exp(-(q / 2 - d) / b) - 0.5 * torch.exp(-upper),
            0.5 * (torch.exp(-lower) - torch.exp(-upper)),
        )
        return -torch.log2(torch.clamp(mass, min=1e-9))


def batches(data: list[np.ndarray], rng: np.random.Generator, size: int, patch: int) -> torch.Tensor:
    out = np.empty((size, 6, patch, patch), np.float32)
    for i in range(size):
        f = data[rng.integers(len(data))]
        y, x = rng.integers(f.shape[1] - patch + 1), rng.integers(f.shape[2] - patch + 1)
        out[i] = f[:, y : y + patch, x : x + patch]
    return torch.from_numpy(out)


def train(data: list[np.ndarray], steps: int, lam: float) -> Codec:
    rng = np.random.default_rng(1)
    model = Codec()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for step in range(steps):
        x = batches(data, rng, 8, 64)
        q = torch.from_numpy(np.float32(2.0 ** rng.uniform(-1.0, 3.0, size=(8, 1, 1, 1))))
        y = model.analysis(x)
        y_noisy = y + q * (torch.rand_like(y) - 0.5)
        x_hat = model.synthesis(y_noisy)
        bpp = model.bits(y_noisy, q).sum() / (x.numel() / 6 * 4)  # per luma pixel
        mse = torch.mean((x_hat - x) ** 2)  # equal weight per channel = the 6:1:1 weighting of PSNR-YUV
        loss = bpp + lam * mse
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)  # GDN's divisions make rare huge gradients early on
        opt.step()
        if step == int(steps * 0.8):
            for g in opt.param_groups:
                g["lr"] = 5e-5
        if step % 200 == 0 or step == steps - 1:
            psnr = 10 * np.log10(1.0 / max(float(mse.detach()), 1e-12))
            shown = f"loss {float(loss.detach()):.4f}  bpp {float(bpp.detach()):.4f}  psnr {psnr:.2f} dB"
            print(f"step {step:5d}  {shown}", flush=True)
    return model


def export(model: Codec, out: Path) -> None:
    """analysis.onnx (encoder side), synthesis.onnx (decoder side) and prior.json (the entropy model)."""
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    x = torch.zeros(1, 6, 120, 160)
    y = torch.zeros(1, M, 30, 40)
    axes = {2: "h", 3: "w"}
    with torch.no_grad():
        torch.onnx.export(model.analysis, (x,), str(out / "analysis.onnx"), input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": axes, "y": axes}, opset_version=17, dynamo=False)  # fmt: skip
        torch.onnx.export(model.synthesis, (y,), str(out / "synthesis.onnx"), input_names=["y_hat"],
                          output_names=["x_hat"], dynamic_axes={"y_hat": axes, "x_hat": axes}, opset_version=17,
                          dynamo=False)  # fmt: skip
    prior = {
        "model": "LRC factorized Laplace prior: per latent channel mean and scale at quantization step 1",
        "mean": [float(v) for v in model.mean.detach().double()],
        "scale": [float(v) for v in torch.exp(model.log_scale.detach()).double()],
    }
    (out / "prior.json").write_text(json.dumps(prior, indent=1) + "\n")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--lambda", dest="lam", type=float, default=2000.0)
    ap.add_argument("--out", type=Path, default=HERE / "model")
    ap.add_argument("--no-bundles", action="store_true", help="train and export only")
    ap.add_argument("--bundles-only", action="store_true", help="quantize and write bundles from --out")
    args = ap.parse_args()
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)  # one thread: deterministic, and two spin-wait badly on a shared machine
    t0 = time.monotonic()
    data = dataset()
    print(f"{len(data)} training frames rendered in {time.monotonic() - t0:.1f}s", flush=True)
    if not args.bundles_only:
        export(train(data, args.steps, args.lam), args.out)
        print(f"trained and exported in {time.monotonic() - t0:.1f}s", flush=True)
    if not args.no_bundles:
        import quantize

        quantize.int8_synthesis(args.out, data)
        write_bundles(args.out)
    for f in sorted(args.out.iterdir()):
        print(f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.name}")
    return 0


def write_bundles(model: Path) -> None:
    """Copy the codec and its models into both bundles (their bundle.yaml is kept) and rewrite SHA256SUMS."""
    from farm.bundle import write_sums

    for name, files in (
        ("learned-fp32", ["analysis.onnx", "synthesis.onnx", "prior.json"]),
        ("learned-int8", ["analysis.onnx", "synthesis-int8.onnx", "prior.json"]),
    ):
        dst = BUNDLES / name
        dst.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(HERE / "lrc.py", dst / "lrc.py")
        for f in files:
            shutil.copyfile(model / f, dst / f)
        write_sums(dst)


if __name__ == "__main__":
    sys.exit(main())
