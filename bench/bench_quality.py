"""How much does farm.quality.score() cost over one plain ffmpeg psnr+ssim+libvmaf run?

score() adds Y4M walking, colour-metadata neutralising, index re-stamping, per-frame logs and their
parsing on top of the filters themselves; this prints both throughputs and their ratio so a regression
in that overhead is visible. The peer is the same ffmpeg binary (imageio-ffmpeg's) computing the same
three metrics on the same files, summary only, with the same libvmaf thread count.

Run: python3 bench/bench_quality.py [--width 320 --height 240 --frames 60 --runs 5]
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

try:
    from farm.quality.score import score
except ModuleNotFoundError:  # run from a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from farm.quality.score import score


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


def median_seconds(fns: dict[str, Callable[[], object]], runs: int) -> dict[str, float]:
    """Median wall time of each callable; runs are interleaved so load drift hits every one alike."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(runs):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--width", type=int, default=320)
    parser.add_argument("--height", type=int, default=240)
    parser.add_argument("--frames", type=int, default=60)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    ffmpeg = str(imageio_ffmpeg.get_ffmpeg_exe())
    threads = os.cpu_count() or 1  # what score(threads=0) gives libvmaf

    with tempfile.TemporaryDirectory(prefix="bench-quality-") as tmp:
        ref, dist = render(ffmpeg, Path(tmp), args.width, args.height, args.frames)
        result = score(dist, ref, ffmpeg=ffmpeg)  # warm-up, and the numbers to show
        plain_ffmpeg(ffmpeg, dist, ref, threads)  # warm-up
        medians = median_seconds(
            {
                "farm": lambda: score(dist, ref, ffmpeg=ffmpeg),
                "ffmpeg": lambda: plain_ffmpeg(ffmpeg, dist, ref, threads),
            },
            args.runs,
        )
    farm_s, peer_s = medians["farm"], medians["ffmpeg"]

    farm_fps, peer_fps = args.frames / farm_s, args.frames / peer_s
    print(
        f"clip: {args.width}x{args.height} x {args.frames} frames, x264 150 kb/s; {args.runs} interleaved runs, median"
    )
    print(f"scores: psnr_yuv {result.psnr_yuv:.3f} dB, ssim {result.ssim:.4f}, vmaf {result.vmaf:.2f}")
    print(f"libvmaf threads: {threads}")
    print(f"farm.quality.score      {farm_s * 1000:8.1f} ms  {farm_fps:8.1f} frames/s")
    print(f"ffmpeg psnr+ssim+vmaf   {peer_s * 1000:8.1f} ms  {peer_fps:8.1f} frames/s")
    print(f"ratio farm/ffmpeg (throughput): {farm_fps / peer_fps:.3f}")


if __name__ == "__main__":
    main()
