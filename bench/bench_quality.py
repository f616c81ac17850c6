"""How much does farm.quality.score() cost over one plain ffmpeg psnr+ssim+libvmaf run?

score() adds Y4M walking, colour-metadata neutralising, index re-stamping, per-frame logs and their
parsing on top of the filters themselves; this prints both throughputs and their ratio so a regression
in that overhead is visible. The peer is the same ffmpeg binary (imageio-ffmpeg's) computing the same
three metrics on the same files, summary only, with the same libvmaf thread count.

Target: the farm's throughput >= 0.8x the plain ffmpeg run's (median of >= 5 interleaved runs): the farm's
extra work (per-frame logs and their parsing, metadata neutralising) may cost a fifth, not more.

Run: python3 bench/bench_quality.py [--width 320 --height 240 --frames 60 --runs 7]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import imageio_ffmpeg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchlib import machine, spread, verdict

from farm.quality.score import score

TARGET = 0.8


def render(ffmpeg: str, out: Path, width: int, height: int, frames: int) -> tuple[Path, Path]:
    """A deterministic reference (testsrc2) and an x264-at-low-bitrate distorted copy, both Y4M."""
    quiet = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    ref, h264, dist = out / "ref.y4m", out / "dist.h264", out / "dist.y4m"
    src = f"testsrc2=size={width}x{height}:rate=30"
    subprocess.run([*quiet, "-f", "lavfi", "-i", src, "-frames:v", str(frames), "-pix_fmt", "yuv420p", ref], check=True)
    subprocess.run([*quiet, "-i", ref, "-c:v", "libx264", "-b:v", "150k", "-f", "h264", h264], check=True)
    subprocess.run([*quiet, "-i", h264, "-pix_fmt", "yuv420p", dist], check=True)
    return ref, dist


def plain_ffmpeg(ffmpeg: str, dist: Path, ref: Path, threads: int) -> None:
    """The peer: one ffmpeg run, psnr + ssim + libvmaf, no per-frame logs, no pre/post-processing."""
    graph = (
        "[0:v]split=3[d0][d1][d2];[1:v]split=3[r0][r1][r2];"
        "[d0][r0]psnr[o0];[d1][r1]ssim[o1];"
        f"[d2][r2]libvmaf=model=version=vmaf_v0.6.1:n_threads={threads}[o2]"
    )
    argv = [
        ffmpeg,
        "-hide_banner",
        "-nostdin",
        "-nostats",
        "-loglevel",
        "error",
        "-i",
        str(dist),
        "-i",
        str(ref),
    ]
    argv += ["-filter_complex", graph, "-map", "[o0]", "-map", "[o1]", "-map", "[o2]", "-f", "null", "-"]
    subprocess.run(argv, check=True)


def seconds(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, list[float]]:
    """Wall times of each callable; runs are interleaved so load drift hits every one alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--runs", type=int, default=7, help="interleaved runs (at least 5 to judge)")
    args = parser.parse_args()
    ffmpeg = str(imageio_ffmpeg.get_ffmpeg_exe())
    threads = os.cpu_count() or 1  # what score(threads=0) gives libvmaf

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        ref, dist = render(ffmpeg, Path(tmp), args.width, args.height, args.frames)
        result = score(dist, ref, ffmpeg=ffmpeg)  # warm-up, and the numbers to show
        plain_ffmpeg(ffmpeg, dist, ref, threads)  # warm-up
        times = seconds(
            {
                "farm": lambda: score(dist, ref, ffmpeg=ffmpeg),
                "ffmpeg": lambda: plain_ffmpeg(ffmpeg, dist, ref, threads),
            },
            args.runs,
        )
    fps = {name: [args.frames / t for t in ts] for name, ts in times.items()}
    print(f"clip: {args.width}x{args.height} x {args.frames} frames, x264 150 kb/s; {args.runs} interleaved runs")
    print(machine())
    print(f"scores: psnr_yuv {result.psnr_yuv:.3f} dB, ssim {result.ssim:.4f}, vmaf {result.vmaf:.2f}")
    print(f"peer: {ffmpeg} psnr+ssim+libvmaf (vmaf_v0.6.1, n_threads={threads}) in one filter graph, summary only")
    print(f"farm.quality.score      frames/s: {spread(fps['farm'], '.1f')}")
    print(f"ffmpeg psnr+ssim+vmaf   frames/s: {spread(fps['ffmpeg'], '.1f')}")
    ratio = statistics.median(fps["farm"]) / statistics.median(fps["ffmpeg"])
    print(f"ratio farm/ffmpeg (throughput): {ratio:.3f} (medians)")
    return 0 if verdict("farm/ffmpeg (throughput)", ratio, ">=", TARGET, args.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
