"""LRC, a small learned intra video codec: encoder (host) and decoder (device) of the farm's learned example bundles.

Each 4:2:0 frame becomes 6 channels at half resolution (the 4 luma phases + U + V), an analysis transform (ONNX)
maps it to latents at 1/8 of the luma resolution, the latents are quantized with a step ``q`` chosen by rate
control, and coded with a factorized per-channel Laplace prior by constriction's ANS coder. The decoder entropy-
decodes the latents and runs the synthesis transform (ONNX, float or INT8 QDQ). The format is in
docs/learned-codec.md. Needs numpy, onnxruntime and constriction only (no torch): this file is copied verbatim
into examples/bundles/learned-*/ by examples/learned/train.py, and a test keeps the copies identical.

    python3 lrc.py encode --model analysis.onnx --prior prior.json --rate KBPS INPUT.y4m OUTPUT.lrc
    python3 lrc.py decode --model synthesis.onnx --prior prior.json INPUT.lrc OUTPUT.y4m STATS.jsonl
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

MAGIC = b"LRC1"
HEADER = struct.Struct("<4sBHHIIIH8s")  # magic, version, width, height, fps num, fps den, frames, channels, prior id
FRAME = struct.Struct("<fHI")  # quantization step q, symbol bound R, number of 32-bit ANS words
ALIGN = 8  # luma: the 6-channel half-resolution frame goes through two stride-2 stages


class CodecError(Exception):
    """A bitstream or input the codec cannot handle (bad magic, truncated, wrong model): exit 1 with the reason."""


@dataclass(frozen=True)
class Prior:
    """The learned factorized entropy model: per latent channel, a Laplace mean and scale at step 1."""

    mean: np.ndarray
    scale: np.ndarray
    ident: bytes  # first 8 bytes of sha256 of prior.json: a bitstream names the model it was made for

    @classmethod
    def load(cls, path: Path) -> Prior:
        raw = path.read_bytes()
        doc = json.loads(raw)
        mean = np.asarray(doc["mean"], dtype=np.float64)
        scale = np.asarray(doc["scale"], dtype=np.float64)
        return cls(mean, scale, hashlib.sha256(raw).digest()[:8])


@dataclass(frozen=True)
class Header:
    width: int
    height: int
    fps_num: int
    fps_den: int
    frames: int
    channels: int
    prior: bytes


# ---- Y4M and the 6-channel frame representation -------------------------------------------------------------


def read_y4m(path: Path) -> tuple[Header, list[np.ndarray]]:
    """Frames of an 8-bit 4:2:0 Y4M as 6-channel float arrays in [-0.5, 0.5] at half resolution."""
    data = path.read_bytes()
    end = data.find(b"\n")
    tokens = data[:end].split()
    if end < 0 or tokens[:1] != [b"YUV4MPEG2"]:
        raise CodecError(f"{path}: not a Y4M file")
    fields = {t[:1]: t[1:].decode() for t in tokens[1:]}
    if fields.get(b"C", "420jpeg")[:3] != "420":
        raise CodecError(f"{path}: only 8-bit 4:2:0 is supported, got C{fields[b'C']}")
    w, h = int(fields[b"W"]), int(fields[b"H"])
    num, _, den = fields.get(b"F", "30:1").partition(":")
    size = w * h * 3 // 2
    frames: list[np.ndarray] = []
    pos = end + 1
    while pos < len(data):
        pos = data.index(b"\n", pos) + 1
        if pos + size > len(data):
            raise CodecError(f"{path}: truncated frame {len(frames)}")
        frames.append(to_channels(np.frombuffer(data, np.uint8, size, pos), w, h))
        pos += size
    return Header(w, h, int(num), int(den or 1), len(frames), 0, b""), frames


def to_channels(yuv: np.ndarray, w: int, h: int) -> np.ndarray:
    """One I420 frame -> [6, H/2, W/2] (space-to-depth luma + chroma), padded by edge replication to ALIGN."""
    y = yuv[: w * h].reshape(h, w)
    u = yuv[w * h : w * h * 5 // 4].reshape(h // 2, w // 2)
    v = yuv[w * h * 5 // 4 :].reshape(h // 2, w // 2)
    planes = np.stack([y[0::2, 0::2], y[0::2, 1::2], y[1::2, 0::2], y[1::2, 1::2], u, v])
    ph, pw = -(h // 2) % (ALIGN // 2), -(w // 2) % (ALIGN // 2)
    planes = np.pad(planes, ((0, 0), (0, ph), (0, pw)), mode="edge")
    return (planes.astype(np.float32) / 255.0 - 0.5)[None]


def to_i420(chan: np.ndarray, w: int, h: int) -> bytes:
    """The inverse of ``to_channels``: crop, round and clip to 8 bits, interleave the luma phases."""
    c = np.clip(np.rint((chan[0, :, : h // 2, : w // 2] + 0.5) * 255.0), 0, 255).astype(np.uint8)
    y = np.empty((h, w), np.uint8)
    y[0::2, 0::2], y[0::2, 1::2], y[1::2, 0::2], y[1::2, 1::2] = c[0], c[1], c[2], c[3]
    return bytes(y.tobytes() + c[4].tobytes() + c[5].tobytes())


def y4m_header(h: Header) -> bytes:
    return f"YUV4MPEG2 W{h.width} H{h.height} F{h.fps_num}:{h.fps_den} Ip A1:1 C420jpeg\n".encode()


# ---- entropy model -----------------------------------------------------------------------------------------


def laplace_bits(symbols: np.ndarray, scale: np.ndarray) -> float:
    """Ideal code length (bits) of integer ``symbols`` under a zero-mean Laplace of ``scale`` quantized to unit bins.

    The rate controller's estimate; constriction's ANS comes within a few words of it.
    """
    k = np.abs(symbols).astype(np.float64).ravel()
    p = np.where(
        k == 0,
        -np.expm1(-0.5 / scale),
        0.5 * (np.exp(-(k - 0.5) / scale) - np.exp(-(k + 0.5) / scale)),
    )
    return float(-np.log2(np.maximum(p, 1e-12)).sum())


def channel_scales(prior: Prior, q: float, shape: tuple[int, ...]) -> np.ndarray:
    """Per-symbol Laplace scales, in units of the step ``q``, in C-order of a [C, h, w] latent."""
    return np.repeat(np.maximum(prior.scale / q, 1e-6), shape[1] * shape[2])


def quantize(latent: np.ndarray, prior: Prior, q: float) -> np.ndarray:
    symbols: np.ndarray = np.rint((latent[0] - prior.mean[:, None, None]) / q).astype(np.int32)
    return symbols


def dequantize(symbols: np.ndarray, prior: Prior, q: float) -> np.ndarray:
    return (symbols.astype(np.float32) * np.float32(q) + prior.mean[:, None, None].astype(np.float32))[None]


# ---- encoder -------------------------------------------------------------------------------------------------


def sequence_step(latents: list[np.ndarray], prior: Prior, budget_bits: float) -> float:
    """The smallest step (best quality) whose estimated size fits ``budget_bits``: bisection on log2 q.

    One step for the whole sequence (constant quality, like a CRF with an ABR target), so frames of different
    difficulty get the bits they need; the size falls monotonically with q, so rate points stay ordered.
    """

    def size(q: float) -> float:
        return sum(
            laplace_bits(quantize(y, prior, q), channel_scales(prior, q, y.shape[1:])) + 8 * FRAME.size + 32
            for y in latents
        )

    lo, hi = -6.0, 8.0
    if size(2.0**hi) > budget_bits:
        return float(2.0**hi)
    for _ in range(24):
        mid = (lo + hi) / 2
        lo, hi = (lo, mid) if size(2.0**mid) <= budget_bits else (mid, hi)
    return float(2.0**hi)


def code_frame(symbols: np.ndarray, prior: Prior, q: float) -> bytes:
    import constriction

    bound = max(1, int(np.abs(symbols).max()))
    model = constriction.stream.model.QuantizedLaplace(-bound, bound)
    coder = constriction.stream.stack.AnsCoder()
    scales = channel_scales(prior, q, symbols.shape)
    coder.encode_reverse(symbols.ravel(), model, np.zeros_like(scales), scales)
    words = coder.get_compressed().astype("<u4")
    return bytes(FRAME.pack(q, bound, len(words)) + words.tobytes())


def encode(model: Path, prior_path: Path, src: Path, dst: Path, rate_kbps: float) -> None:
    import onnxruntime as ort

    head, frames = read_y4m(src)
    prior = Prior.load(prior_path)
    analysis = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    latents = [analysis.run(None, {"x": f})[0] for f in frames]
    fps = head.fps_num / head.fps_den
    budget = rate_kbps * 1000.0 * len(frames) / fps - 8 * HEADER.size
    q = float(np.float32(sequence_step(latents, prior, budget)))  # the decoder sees q as the header's float32
    channels = latents[0].shape[1] if latents else len(prior.mean)
    out = HEADER.pack(MAGIC, 1, head.width, head.height, head.fps_num, head.fps_den, len(frames), channels, prior.ident)
    dst.write_bytes(out + b"".join(code_frame(quantize(y, prior, q), prior, q) for y in latents))


# ---- decoder -------------------------------------------------------------------------------------------------


def read_header(blob: bytes, prior: Prior) -> Header:
    if len(blob) < HEADER.size or blob[:4] != MAGIC:
        raise CodecError("not an LRC1 bitstream (bad magic)")
    _magic, version, w, h, num, den, frames, channels, ident = HEADER.unpack_from(blob)
    if version != 1:
        raise CodecError(f"LRC version {version} is not supported (1 only)")
    if ident != prior.ident or channels != len(prior.mean):
        raise CodecError("bitstream was made for another entropy model (prior id or channel count differs)")
    if w % 2 or h % 2 or not w or not h or not den:
        raise CodecError(f"bad frame geometry {w}x{h} or fps {num}/{den}")
    return Header(w, h, num, den, frames, channels, ident)


def frame_payloads(blob: bytes, head: Header) -> Iterator[tuple[float, int, np.ndarray]]:
    pos = HEADER.size
    for i in range(head.frames):
        if pos + FRAME.size > len(blob):
            raise CodecError(f"bitstream truncated in the header of frame {i}")
        q, bound, n = FRAME.unpack_from(blob, pos)
        pos += FRAME.size
        if pos + 4 * n > len(blob) or not q > 0 or not np.isfinite(q):
            raise CodecError(f"bitstream truncated or corrupt in frame {i}")
        yield q, bound, np.frombuffer(blob, "<u4", n, pos).astype(np.uint32)
        pos += 4 * n
    if pos != len(blob):
        raise CodecError(f"{len(blob) - pos} trailing bytes after the last frame")


def decode_latent(words: np.ndarray, bound: int, q: float, prior: Prior, shape: tuple[int, int, int]) -> np.ndarray:
    import constriction

    model = constriction.stream.model.QuantizedLaplace(-bound, bound)
    coder = constriction.stream.stack.AnsCoder(words)
    scales = channel_scales(prior, q, shape)
    symbols = np.asarray(coder.decode(model, np.zeros_like(scales), scales), dtype=np.int32).reshape(shape)
    if not coder.is_empty():
        raise CodecError("entropy decoding did not consume the frame's words: corrupt bitstream")
    return dequantize(symbols, prior, q)


def decode(model: Path, prior_path: Path, src: Path, dst: Path, stats: Path, providers: list[str]) -> None:
    prior = Prior.load(prior_path)
    blob = src.read_bytes()
    head = read_header(blob, prior)
    session, runtime = open_session(model, providers, dst.parent)
    shape = (head.channels, -(-head.height // ALIGN), -(-head.width // ALIGN))
    with dst.open("wb") as out, stats.open("w") as log:
        log.write(json.dumps({"runtime": runtime}) + "\n")
        out.write(y4m_header(head))
        for i, (q, bound, words) in enumerate(frame_payloads(blob, head)):
            t0 = time.monotonic_ns()
            latent = decode_latent(words, bound, q, prior, shape)
            frame = to_i420(session.run(None, {"y_hat": latent})[0], head.width, head.height)
            ns = time.monotonic_ns() - t0
            out.write(b"FRAME\n" + frame)
            log.write(json.dumps({"frame": i, "decode_ns": ns}) + "\n")


# ---- runtime provenance ---------------------------------------------------------------------------------------


def open_session(model: Path, providers: list[str], scratch: Path) -> tuple[Any, dict[str, object]]:
    """The decode session and what the device really ran it on (docs/learned-codec.md, "Runtime provenance").

    With any provider but the CPU requested, fallback to the CPU is disabled (the session fails instead of quietly
    running nodes on the CPU); node placement is read from a one-inference profile either way.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    accelerated = [p for p in providers if p != "CPUExecutionProvider"]
    if accelerated:
        opts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
    session = ort.InferenceSession(str(model), opts, providers=providers)
    nodes = node_placement(model, providers, bool(accelerated), scratch)
    on_cpu = nodes.get("CPUExecutionProvider", 0)
    runtime: dict[str, object] = {
        "name": "onnxruntime",
        "version": ort.__version__,
        "providers_requested": providers,
        "providers_used": session.get_providers(),
        "cpu_fallback_disabled": bool(accelerated),
        "nodes_by_provider": nodes,
        "cpu_fallback_nodes": on_cpu if accelerated else 0,
        "model_sha256": hashlib.sha256(model.read_bytes()).hexdigest(),
    }
    return session, runtime


def node_placement(model: Path, providers: list[str], no_fallback: bool, scratch: Path) -> dict[str, int]:
    """Nodes per execution provider, from ORT's profiler over one inference of a zero latent (before timing)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory(dir=scratch) as tmp:
        popts = ort.SessionOptions()
        popts.enable_profiling = True
        popts.profile_file_prefix = str(Path(tmp) / "ort")
        if no_fallback:
            popts.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        probe = ort.InferenceSession(str(model), popts, providers=providers)
        inp = probe.get_inputs()[0]
        dims = [d if isinstance(d, int) else 2 for d in inp.shape]
        probe.run(None, {inp.name: np.zeros(dims, np.float32)})
        events = json.loads(Path(probe.end_profiling()).read_text())
    seen: dict[str, str] = {}
    for ev in events:
        args = ev.get("args", {})
        if ev.get("cat") == "Node" and "provider" in args:
            seen[ev["name"].removesuffix("_kernel_time").removesuffix("_fence_before").removesuffix("_fence_after")] = (
                args["provider"]
            )
    counts: dict[str, int] = {}
    for provider in seen.values():
        counts[provider] = counts.get(provider, 0) + 1
    return counts


# ---- command line ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="lrc", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    enc = sub.add_parser("encode")
    enc.add_argument("--model", type=Path, required=True, help="analysis ONNX model")
    enc.add_argument("--prior", type=Path, required=True, help="prior.json of the entropy model")
    enc.add_argument("--rate", type=float, required=True, help="target kbit/s")
    enc.add_argument("input", type=Path)
    enc.add_argument("output", type=Path)
    dec = sub.add_parser("decode")
    dec.add_argument("--model", type=Path, required=True, help="synthesis ONNX model")
    dec.add_argument("--prior", type=Path, required=True, help="prior.json of the entropy model")
    dec.add_argument("--providers", default="CPUExecutionProvider", help="comma-separated execution providers")
    dec.add_argument("input", type=Path)
    dec.add_argument("output", type=Path)
    dec.add_argument("stats", type=Path)
    args = ap.parse_args(argv)
    try:
        if args.cmd == "encode":
            encode(args.model, args.prior, args.input, args.output, args.rate)
        else:
            decode(args.model, args.prior, args.input, args.output, args.stats, args.providers.split(","))
    except (CodecError, OSError, ValueError, RuntimeError, struct.error) as exc:
        print(f"lrc {args.cmd}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
