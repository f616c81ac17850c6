"""Score a decoded Y4M against its source with ffmpeg's psnr, ssim and libvmaf filters.

Quality numbers are only comparable when they are measured the same way every time (DESIGN.md,
"Measurement conventions"), so this module owns the one way the farm measures them:

* one ffmpeg run per (distorted, reference) pair computes every requested metric, from per-frame logs
  written into a private temporary directory (ffmpeg runs with that directory as its cwd, so the log names
  in the filtergraph are plain relative names that need no filtergraph escaping);
* frames are paired by index, not by timestamp: both inputs are re-stamped ``settb=1,setpts=N`` because
  ffmpeg's framesync pairs by timestamp and a decoder that writes a different ``F`` rate would otherwise
  be compared against the wrong source frames;
* colour metadata is neutralised (``setparams=...=unknown``) on both inputs, because a Y4M with
  ``XCOLORRANGE=FULL`` against one without it makes ffmpeg insert a scaler that converts one input's pixels
  before comparing them (identical pixels then score about 29 dB instead of infinity);
* the per-frame PSNR comes from the frame metadata (``metadata=print``), printed with 6 decimals, and not
  from the psnr filter's ``stats_file``, which rounds every PSNR and MSE to 2 decimals;
* PSNR is capped at 100 dB per plane and frame (a frame with MSE 0 is ``inf`` in ffmpeg), PSNR-YUV is
  (6Y+U+V)/8 per frame, and every summary is the mean of per-frame values;
* ffmpeg's own summary lines (``average:``, ``All:``, the VMAF ``pooled_metrics``) are never used.

After the run, every log must hold exactly one entry per frame of the inputs; ffmpeg silently stops early
on some Y4M it cannot read (a FRAME marker longer than 80 bytes ends its demuxer with exit code 0).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from farm.quality.y4m import EIGHT_BIT_420, QualityError, Y4MInfo, read_y4m_info

__all__ = [
    "CONVENTIONS",
    "METRICS",
    "PSNR_CAP_DB",
    "VMAF_MODEL",
    "FrameScores",
    "QualityError",
    "QualityScores",
    "bits_per_pixel",
    "score",
]

METRICS = ("psnr", "ssim", "vmaf")
PSNR_CAP_DB = 100.0
VMAF_MODEL = "vmaf_v0.6.1"
STDERR_TAIL_LINES = 25

T = TypeVar("T")

#: What each metric means, recorded with every result. Keys for metrics not requested are left out.
CONVENTIONS: dict[str, dict[str, str]] = {
    "psnr": {
        "psnr": (
            "ffmpeg psnr filter, 8-bit MAX 255, per plane per frame (frame metadata, 6 decimals), "
            f"capped at {PSNR_CAP_DB:g} dB (inf from mse 0 becomes {PSNR_CAP_DB:g}), mean of frames"
        ),
        "psnr_yuv": "(6Y+U+V)/8 per frame from the capped plane PSNRs, mean of frames (not ffmpeg's psnr_avg)",
    },
    "ssim": {
        "ssim": "ffmpeg ssim filter, per-frame All (plane-size weighted: (4Y+U+V)/6 for 4:2:0), mean of frames",
    },
    "vmaf": {
        "vmaf": f"libvmaf {VMAF_MODEL} via ffmpeg, per-frame vmaf from the JSON log, mean of frames",
    },
}
PAIRING = "frames paired by index (timestamps and Y4M frame rate ignored), colour metadata ignored"


@dataclass(frozen=True)
class FrameScores:
    """One frame's scores; a metric that was not requested is None."""

    psnr_y: float | None = None
    psnr_u: float | None = None
    psnr_v: float | None = None
    psnr_yuv: float | None = None
    ssim: float | None = None
    vmaf: float | None = None
    flicker: float | None = None  # farm.quality.temporal; None for frame 0 and until it is computed


@dataclass(frozen=True)
class QualityScores:
    """Means over frames of the per-frame values, the per-frame values, and how they were measured."""

    frames: int
    psnr_y: float | None
    psnr_u: float | None
    psnr_v: float | None
    psnr_yuv: float | None
    ssim: float | None
    vmaf: float | None
    per_frame: tuple[FrameScores, ...]
    conventions: dict[str, str] = field(default_factory=dict)
    psnr_yuv_min: float | None = None  # the worst frame's PSNR-YUV: drift or one broken frame hides in a mean
    flicker: float | None = None  # farm.quality.temporal adds these two
    flicker_max: float | None = None


def bits_per_pixel(bitstream_bytes: int, width: int, height: int, frames: int) -> float:
    """Bits per pixel of a bitstream: ``bytes * 8 / (width * height * frames)`` (luma pixels only)."""
    if bitstream_bytes < 0:
        raise ValueError(f"bitstream_bytes must be >= 0, got {bitstream_bytes}")
    if width <= 0 or height <= 0 or frames <= 0:
        raise ValueError(f"width, height and frames must be > 0, got {width}x{height}x{frames}")
    return bitstream_bytes * 8 / (width * height * frames)


def _check_inputs(distorted: Path, reference: Path) -> Y4MInfo:
    dist, ref = read_y4m_info(distorted), read_y4m_info(reference)
    for path, info in ((distorted, dist), (reference, ref)):
        if info.chroma not in EIGHT_BIT_420:
            raise QualityError(f"{path}: chroma C{info.chroma} is not supported; only 8-bit 4:2:0 is scored")
        if info.frames == 0:
            raise QualityError(f"{path}: no frames")
    if (dist.width, dist.height) != (ref.width, ref.height):
        raise QualityError(
            f"size mismatch: {distorted} is {dist.width}x{dist.height}, "
            f"reference {reference} is {ref.width}x{ref.height}"
        )
    if dist.frames != ref.frames:
        raise QualityError(
            f"frame count mismatch: {distorted} has {dist.frames} frames, reference {reference} has {ref.frames}"
        )
    return ref


def _filtergraph(metrics: Sequence[str], vmaf_threads: int) -> tuple[str, list[str]]:
    """Build the filtergraph and the output labels to map; input 0 is distorted, input 1 the reference.

    Every filter takes the distorted ("main") video first and the reference second, as ffmpeg documents
    for psnr, ssim and libvmaf.
    """
    n = len(metrics)
    neutral = "setparams=range=unknown:color_primaries=unknown:color_trc=unknown:colorspace=unknown"
    prep = f"{neutral},settb=1,setpts=N"
    chains = [
        f"[0:v]{prep},split={n}" + "".join(f"[d{i}]" for i in range(n)),
        f"[1:v]{prep},split={n}" + "".join(f"[r{i}]" for i in range(n)),
    ]
    filters = {
        "psnr": "psnr,metadata=mode=print:file=psnr.log",
        "ssim": "ssim=stats_file=ssim.log",
        "vmaf": f"libvmaf=model=version={VMAF_MODEL}:log_fmt=json:log_path=vmaf.json:n_threads={vmaf_threads}",
    }
    outputs = []
    for i, metric in enumerate(metrics):
        chains.append(f"[d{i}][r{i}]{filters[metric]}[o{i}]")
        outputs.append(f"[o{i}]")
    return ";".join(chains), outputs


def _psnr_value(text: str) -> float:
    value = float(text)  # "inf" parses to math.inf
    if math.isnan(value):
        raise ValueError("nan")
    return min(value, PSNR_CAP_DB)


def _parse_psnr(path: Path) -> list[tuple[float, float, float]]:
    """Per-frame (Y, U, V) PSNR from ``metadata=print``: ``frame:N pts:..`` then ``key=value`` lines."""
    frames: list[dict[str, str]] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("frame:"):
            try:
                index = int(line.split()[0].removeprefix("frame:"))
            except ValueError as exc:
                raise QualityError(f"ffmpeg psnr log line {lineno}: cannot parse {line!r}") from exc
            if index != len(frames):
                raise QualityError(f"ffmpeg psnr log line {lineno}: frame {index}, expected {len(frames)}")
            frames.append({})
        elif "=" in line and frames:
            key, _, value = line.partition("=")
            frames[-1][key.strip()] = value.strip()
    out: list[tuple[float, float, float]] = []
    for i, kv in enumerate(frames):
        try:
            y, u, v = (_psnr_value(kv[f"lavfi.psnr.psnr.{c}"]) for c in "yuv")
        except (KeyError, ValueError) as exc:
            raise QualityError(f"ffmpeg psnr log: frame {i}: missing or bad value ({exc})") from exc
        out.append((y, u, v))
    return out


def _parse_ssim(path: Path) -> list[float]:
    """Per-frame SSIM All from the ssim stats file: ``n:1 Y:.. U:.. V:.. All:0.85 (8.48)`` (n from 1)."""
    out: list[float] = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        fields = dict(tok.split(":", 1) for tok in line.split() if ":" in tok)
        try:
            n, value = int(fields["n"]), float(fields["All"])
        except (KeyError, ValueError) as exc:
            raise QualityError(f"ffmpeg ssim log line {lineno}: cannot parse {line!r}") from exc
        if n != len(out) + 1:
            raise QualityError(f"ffmpeg ssim log line {lineno}: frame n:{n}, expected n:{len(out) + 1}")
        out.append(value)
    return out


def _parse_vmaf(path: Path) -> list[float]:
    """Per-frame vmaf from libvmaf's JSON log (``frames[].metrics.vmaf``, frameNum from 0)."""
    try:
        frames = sorted(json.loads(path.read_text())["frames"], key=lambda fr: int(fr["frameNum"]))
        nums = [int(fr["frameNum"]) for fr in frames]
        values = [float(fr["metrics"]["vmaf"]) for fr in frames]
    except (ValueError, KeyError, TypeError) as exc:
        raise QualityError(f"libvmaf JSON log: cannot parse ({exc!r})") from exc
    if nums != list(range(len(nums))):
        raise QualityError(f"libvmaf JSON log: frame numbers are not 0..{len(nums) - 1}")
    return values


def _libvmaf_version(path: Path) -> str:
    version = json.loads(path.read_text()).get("version")
    return str(version) if version else "unknown"


def _covering(parse: Callable[[Path], list[T]], log: Path, name: str, frames: int, context: str) -> list[T]:
    """Parse one per-frame log and insist that it has exactly one entry per input frame.

    ffmpeg can exit 0 having read fewer frames than the file holds (its Y4M demuxer ends a stream at a
    FRAME marker longer than 80 bytes), so a short log is an error, never a shorter result.
    """
    values = parse(log) if log.exists() else []
    if len(values) != frames:
        raise QualityError(
            f"ffmpeg's {name} log covers {len(values)} frames, the inputs have {frames}; "
            f"ffmpeg stopped reading an input early ({context})"
        )
    return values


def _tail(stderr: str) -> str:
    return "\n".join(stderr.strip().splitlines()[-STDERR_TAIL_LINES:])


def _run_ffmpeg(argv: list[str], cwd: str) -> str:
    """Run ffmpeg; return its stderr (warnings and errors only) or raise with the tail of it."""
    try:
        proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, errors="replace", check=False)
    except OSError as exc:
        raise QualityError(f"cannot run ffmpeg {argv[0]!r}: {exc}") from exc
    if proc.returncode != 0:
        raise QualityError(f"ffmpeg exited with code {proc.returncode}:\n{_tail(proc.stderr)}")
    return proc.stderr


def _mean(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return math.fsum(v for v in values if v is not None) / len(values)


def _worst(values: Sequence[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return min(v for v in values if v is not None)


def score(
    distorted: Path,
    reference: Path,
    *,
    ffmpeg: str,
    metrics: Collection[str] = METRICS,
    threads: int = 0,
) -> QualityScores:
    """Score ``distorted`` against ``reference`` (both 8-bit 4:2:0 Y4M of equal size and length).

    One ffmpeg invocation computes every metric in ``metrics`` (any of "psnr", "ssim", "vmaf"); metrics
    not requested are None. ``threads`` > 0 sets ffmpeg's filter threads and libvmaf's threads; 0 lets
    ffmpeg choose and gives libvmaf one thread per CPU. Raises :class:`QualityError` for unreadable or
    mismatched inputs, an ffmpeg failure (with the tail of its stderr) or logs that do not cover every frame.
    """
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; choose from {list(METRICS)}")
    if threads < 0:
        raise ValueError(f"threads must be >= 0, got {threads}")
    wanted = [m for m in METRICS if m in metrics]
    distorted, reference = Path(distorted).resolve(), Path(reference).resolve()
    frames = _check_inputs(distorted, reference).frames
    logs = _run_metrics(wanted, distorted, reference, ffmpeg, threads, frames) if wanted else _Logs()
    per_frame = _per_frame(frames, logs)
    return QualityScores(
        frames=frames,
        psnr_y=_mean([f.psnr_y for f in per_frame]),
        psnr_u=_mean([f.psnr_u for f in per_frame]),
        psnr_v=_mean([f.psnr_v for f in per_frame]),
        psnr_yuv=_mean([f.psnr_yuv for f in per_frame]),
        ssim=_mean([f.ssim for f in per_frame]),
        vmaf=_mean([f.vmaf for f in per_frame]),
        per_frame=tuple(per_frame),
        conventions=logs.conventions,
        psnr_yuv_min=_worst([f.psnr_yuv for f in per_frame]),
    )


@dataclass
class _Logs:
    """Per-frame values parsed from ffmpeg's metric logs (None: the metric was not asked for)."""

    psnr: list[tuple[float, float, float]] | None = None
    ssim: list[float] | None = None
    vmaf: list[float] | None = None
    conventions: dict[str, str] = field(default_factory=dict)


def _ffmpeg_argv(wanted: list[str], distorted: Path, reference: Path, ffmpeg: str, threads: int) -> list[str]:
    graph, outputs = _filtergraph(wanted, threads or os.cpu_count() or 1)
    argv = [ffmpeg, "-hide_banner", "-nostdin", "-nostats", "-loglevel", "warning"]
    if threads:
        argv += ["-filter_threads", str(threads)]
    # "file:" keeps ffmpeg from reading a path with a colon in it as a protocol name.
    argv += ["-i", f"file:{distorted}", "-i", f"file:{reference}", "-filter_complex", graph]
    for label in outputs:
        argv += ["-map", label]
    return [*argv, "-f", "null", "-"]


def _run_metrics(wanted: list[str], distorted: Path, reference: Path, ffmpeg: str, threads: int, frames: int) -> _Logs:
    """One ffmpeg invocation for every wanted metric; its logs must cover every frame."""
    logs = _Logs()
    libvmaf_version = ""
    with tempfile.TemporaryDirectory(prefix="farm-quality-") as tmp:
        stderr = _run_ffmpeg(_ffmpeg_argv(wanted, distorted, reference, ffmpeg, threads), cwd=tmp)
        context = f"{distorted} vs {reference}; ffmpeg said:\n{_tail(stderr) or '(nothing)'}"
        folder = Path(tmp)
        if "psnr" in wanted:
            logs.psnr = _covering(_parse_psnr, folder / "psnr.log", "psnr", frames, context)
        if "ssim" in wanted:
            logs.ssim = _covering(_parse_ssim, folder / "ssim.log", "ssim", frames, context)
        if "vmaf" in wanted:
            logs.vmaf = _covering(_parse_vmaf, folder / "vmaf.json", "vmaf", frames, context)
            libvmaf_version = _libvmaf_version(folder / "vmaf.json")
    for metric in wanted:
        logs.conventions.update(CONVENTIONS[metric])
    logs.conventions["pairing"] = PAIRING
    if libvmaf_version:
        logs.conventions["libvmaf"] = libvmaf_version
    return logs


def _per_frame(frames: int, logs: _Logs) -> list[FrameScores]:
    out = []
    for i in range(frames):
        y, u, v = logs.psnr[i] if logs.psnr is not None else (None, None, None)
        yuv = (6 * y + u + v) / 8 if y is not None and u is not None and v is not None else None
        ssim = logs.ssim[i] if logs.ssim is not None else None
        vmaf = logs.vmaf[i] if logs.vmaf is not None else None
        out.append(FrameScores(psnr_y=y, psnr_u=u, psnr_v=v, psnr_yuv=yuv, ssim=ssim, vmaf=vmaf))
    return out
