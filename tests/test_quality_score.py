"""Host-side quality scoring against the real ffmpeg that imageio-ffmpeg ships (no mocks).

Clips are rendered deterministically with ffmpeg's lavfi testsrc2 or written from numpy, so each test
knows exactly which pixels differ; an independent numpy PSNR checks ffmpeg's per-plane numbers.
"""

from __future__ import annotations

import math
import subprocess
from dataclasses import dataclass
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from farm.quality.score import PSNR_CAP_DB, QualityError, QualityScores, bits_per_pixel, score
from farm.quality.y4m import read_y4m_info

W, H, N = 160, 120, 10
FRAME_SIZE = W * H * 3 // 2


@pytest.fixture(scope="module")
def ffmpeg() -> str:
    return str(imageio_ffmpeg.get_ffmpeg_exe())


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory, ffmpeg: str) -> dict[str, Path]:
    # A colon, a space and a quote in the directory name: argv and filtergraph handling must not care.
    d = tmp_path_factory.mktemp("clips") / "we:ird dir's"
    d.mkdir()
    ref, h264, dist = d / "ref.y4m", d / "dist.h264", d / "dist.y4m"
    quiet = [ffmpeg, "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
    src = f"testsrc2=size={W}x{H}:rate=25"
    subprocess.run([*quiet, "-f", "lavfi", "-i", src, "-frames:v", str(N), "-pix_fmt", "yuv420p", ref], check=True)
    subprocess.run(
        [*quiet, "-i", ref, "-c:v", "libx264", "-b:v", "40k", "-threads", "1", "-f", "h264", h264], check=True
    )
    subprocess.run([*quiet, "-i", h264, "-pix_fmt", "yuv420p", dist], check=True)
    return {"ref": ref, "dist": dist}


# --- an independent Y4M reader/writer for the checks -------------------------------------------------


@dataclass
class Clip:
    header: bytes
    planes: list[tuple[np.ndarray, np.ndarray, np.ndarray]]


def read_clip(path: Path) -> Clip:
    data = path.read_bytes()
    end = data.index(b"\n") + 1
    header, pos, planes = data[:end], end, []
    while pos < len(data):
        assert data[pos : pos + 5] == b"FRAME"
        pos = data.index(b"\n", pos) + 1
        y = np.frombuffer(data, np.uint8, W * H, pos).reshape(H, W)
        u = np.frombuffer(data, np.uint8, W * H // 4, pos + W * H).reshape(H // 2, W // 2)
        v = np.frombuffer(data, np.uint8, W * H // 4, pos + W * H * 5 // 4).reshape(H // 2, W // 2)
        planes.append((y, u, v))
        pos += FRAME_SIZE
    return Clip(header, planes)


def write_clip(path: Path, clip: Clip, marker: bytes = b"FRAME\n") -> Path:
    with path.open("wb") as f:
        f.write(clip.header)
        for planes in clip.planes:
            f.write(marker)
            for p in planes:
                f.write(np.ascontiguousarray(p, dtype=np.uint8).tobytes())
    return path


def numpy_psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def noisy(clip: Clip, keep: set[int], seed: int = 7) -> Clip:
    """Add fixed-seed noise to every frame except those in ``keep``."""
    rng = np.random.default_rng(seed)
    out = []
    for i, planes in enumerate(clip.planes):
        if i in keep:
            out.append(planes)
            continue
        out.append(
            tuple(np.clip(p.astype(np.int16) + rng.integers(-6, 7, p.shape), 0, 255).astype(np.uint8) for p in planes)
        )
    return Clip(clip.header, out)


# --- read_y4m_info -------------------------------------------------------------------------------------


def test_read_y4m_info_of_an_ffmpeg_clip(clips: dict[str, Path]) -> None:
    info = read_y4m_info(clips["ref"])
    header = clips["ref"].read_bytes().split(b"\n", 1)[0]
    assert (info.width, info.height, info.frames) == (W, H, N)
    assert (info.fps_num, info.fps_den, info.fps) == (25, 1, 25.0)
    assert info.chroma == "420jpeg"
    assert info.header_len == len(header) + 1
    assert info.frame_size == FRAME_SIZE


def test_frame_markers_may_carry_parameters(clips: dict[str, Path], tmp_path: Path) -> None:
    path = write_clip(tmp_path / "p.y4m", read_clip(clips["ref"]), marker=b"FRAME Ip XFOO=bar\n")
    assert read_y4m_info(path).frames == N


def test_defaults_and_other_layouts(tmp_path: Path) -> None:
    path = tmp_path / "a.y4m"
    path.write_bytes(b"YUV4MPEG2 W5 H3\n" + b"FRAME\n" + bytes(5 * 3 + 2 * 3 * 2))  # odd sizes round up
    info = read_y4m_info(path)
    assert (info.chroma, info.fps_num, info.fps_den, info.frame_size) == ("420jpeg", 25, 1, 27)
    path.write_bytes(b"YUV4MPEG2 W4 H2 F30000:1001 C420p10\n" + (b"FRAME\n" + bytes(2 * 12)) * 2)
    info = read_y4m_info(path)
    assert (info.chroma, info.frames, info.frame_size) == ("420p10", 2, 24)
    assert info.fps == pytest.approx(29.97, abs=0.01)


@pytest.mark.parametrize(
    ("name", "content", "offset", "words"),
    [
        ("magic", b"YUV4MPEG W4 H2\nFRAME\n" + bytes(12), 0, "not a Y4M"),
        ("no-width", b"YUV4MPEG2 H2\nFRAME\n" + bytes(12), 0, "lacks W"),
        ("bad-rate", b"YUV4MPEG2 W4 H2 F25:0\nFRAME\n" + bytes(12), 16, "bad frame rate"),
        ("chroma", b"YUV4MPEG2 W4 H2 Cfoo\nFRAME\n" + bytes(12), 0, "unknown chroma"),
        ("no-newline", b"YUV4MPEG2 W4 H2", 15, "not terminated"),
        (
            "marker",
            b"YUV4MPEG2 W4 H2\n" + b"FRAME\n" + bytes(12) + b"FRAMX\n" + bytes(12),
            34,
            "expected FRAME",
        ),
        (
            "truncated",
            b"YUV4MPEG2 W4 H2\n" + b"FRAME\n" + bytes(12) + b"FRAME\n" + bytes(11),
            34,
            "truncated frame 1",
        ),
        ("cut-marker", b"YUV4MPEG2 W4 H2\n" + b"FRAME\n" + bytes(12) + b"FRA", 34, "truncated FRAME"),
    ],
)
def test_malformed_y4m_names_file_and_offset(
    tmp_path: Path, name: str, content: bytes, offset: int, words: str
) -> None:
    path = tmp_path / f"{name}.y4m"
    path.write_bytes(content)
    with pytest.raises(QualityError, match=words) as err:
        read_y4m_info(path)
    assert str(path) in str(err.value)
    assert f"byte {offset}:" in str(err.value)


def test_truncated_ffmpeg_clip(clips: dict[str, Path], tmp_path: Path) -> None:
    data = clips["ref"].read_bytes()
    path = tmp_path / "cut.y4m"
    path.write_bytes(data[:-100])
    last = read_y4m_info(clips["ref"]).header_len + (N - 1) * (6 + FRAME_SIZE)
    with pytest.raises(QualityError, match=f"byte {last}: truncated frame {N - 1}"):
        read_y4m_info(path)


# --- score ---------------------------------------------------------------------------------------------


def test_identical_inputs_hit_the_caps(clips: dict[str, Path], ffmpeg: str) -> None:
    s = score(clips["ref"], clips["ref"], ffmpeg=ffmpeg)
    assert s.frames == N and len(s.per_frame) == N
    for f in s.per_frame:
        assert (f.psnr_y, f.psnr_u, f.psnr_v, f.psnr_yuv) == (PSNR_CAP_DB,) * 4
        assert f.ssim == 1.0
    assert (s.psnr_y, s.psnr_u, s.psnr_v, s.psnr_yuv, s.ssim) == (100.0, 100.0, 100.0, 100.0, 1.0)
    # libvmaf scores identical frames ~100, but the first frame lower (its motion feature is 0 there).
    assert s.vmaf is not None and s.vmaf > 95
    assert "capped at 100 dB" in s.conventions["psnr"]
    assert "(6Y+U+V)/8" in s.conventions["psnr_yuv"]
    assert "vmaf_v0.6.1" in s.conventions["vmaf"]
    assert "ssim filter" in s.conventions["ssim"]


def test_distorted_scores_lower_and_aggregate_per_frame(clips: dict[str, Path], ffmpeg: str) -> None:
    ident = score(clips["ref"], clips["ref"], ffmpeg=ffmpeg)
    s = score(clips["dist"], clips["ref"], ffmpeg=ffmpeg)
    assert s.frames == N and len(s.per_frame) == N
    assert s.psnr_y is not None and 15 < s.psnr_y < 45
    assert s.ssim is not None and 0.3 < s.ssim < 0.99
    assert s.vmaf is not None and ident.vmaf is not None and s.vmaf < ident.vmaf - 10
    for f in s.per_frame:
        assert f.psnr_y is not None and f.psnr_u is not None and f.psnr_v is not None
        assert f.psnr_yuv == pytest.approx((6 * f.psnr_y + f.psnr_u + f.psnr_v) / 8, abs=1e-12)
    for name in ("psnr_y", "psnr_u", "psnr_v", "psnr_yuv", "ssim", "vmaf"):
        values = [getattr(f, name) for f in s.per_frame]
        assert getattr(s, name) == pytest.approx(sum(values) / N, abs=1e-9), name


def test_psnr_agrees_with_numpy(clips: dict[str, Path], ffmpeg: str) -> None:
    s = score(clips["dist"], clips["ref"], ffmpeg=ffmpeg, metrics=("psnr",))
    ref, dist = read_clip(clips["ref"]), read_clip(clips["dist"])
    for f, rp, dp in zip(s.per_frame, ref.planes, dist.planes, strict=True):
        ours = [numpy_psnr(d, r) for d, r in zip(dp, rp, strict=True)]
        assert [f.psnr_y, f.psnr_u, f.psnr_v] == pytest.approx(ours, abs=0.01)


def test_a_lossless_frame_is_capped_in_a_lossy_clip(clips: dict[str, Path], ffmpeg: str, tmp_path: Path) -> None:
    ref = read_clip(clips["ref"])
    dist = write_clip(tmp_path / "noisy.y4m", noisy(ref, keep={3}))
    s = score(dist, clips["ref"], ffmpeg=ffmpeg)
    assert s.per_frame[3].psnr_yuv == 100.0 and s.per_frame[3].ssim == 1.0
    others = [f for i, f in enumerate(s.per_frame) if i != 3]
    assert all(f.psnr_y is not None and 30 < f.psnr_y < 40 for f in others)
    noisy_planes = noisy(ref, keep={3}).planes
    for f, rp, dp in zip(s.per_frame, ref.planes, noisy_planes, strict=True):
        ours = [min(numpy_psnr(d, r), 100.0) for d, r in zip(dp, rp, strict=True)]
        assert [f.psnr_y, f.psnr_u, f.psnr_v] == pytest.approx(ours, abs=0.01)


def test_frames_pair_by_index_whatever_the_headers_say(clips: dict[str, Path], ffmpeg: str, tmp_path: Path) -> None:
    # Another frame rate would make ffmpeg pair frames by timestamp, and XCOLORRANGE=FULL on one side only
    # would make it convert one input's pixels before comparing; identical pixels must still score as such.
    clip = read_clip(clips["ref"])
    clip.header = clip.header.replace(b"F25:1", b"F30:1").replace(b"\n", b" XCOLORRANGE=FULL\n")
    other = write_clip(tmp_path / "relabelled.y4m", clip)
    s = score(other, clips["ref"], ffmpeg=ffmpeg, metrics=("psnr", "ssim"))
    assert (s.psnr_yuv, s.ssim) == (100.0, 1.0)


def test_only_requested_metrics(clips: dict[str, Path], ffmpeg: str) -> None:
    s = score(clips["dist"], clips["ref"], ffmpeg=ffmpeg, metrics={"ssim"})
    assert s.ssim is not None
    assert (s.psnr_y, s.psnr_u, s.psnr_v, s.psnr_yuv, s.vmaf) == (None,) * 5
    assert all(f.ssim is not None and f.psnr_y is None and f.vmaf is None for f in s.per_frame)
    assert "ssim" in s.conventions and "psnr" not in s.conventions and "vmaf" not in s.conventions
    none = score(clips["dist"], clips["ref"], ffmpeg=ffmpeg, metrics=())
    assert isinstance(none, QualityScores) and none.frames == N and none.vmaf is None
    with pytest.raises(ValueError, match="unknown metrics"):
        score(clips["dist"], clips["ref"], ffmpeg=ffmpeg, metrics=("psnr", "butteraugli"))


def test_threads_do_not_change_scores(clips: dict[str, Path], ffmpeg: str) -> None:
    one = score(clips["dist"], clips["ref"], ffmpeg=ffmpeg, threads=1)
    two = score(clips["dist"], clips["ref"], ffmpeg=ffmpeg, threads=2)
    assert one.per_frame == two.per_frame


def test_mismatched_frame_count(clips: dict[str, Path], ffmpeg: str, tmp_path: Path) -> None:
    clip = read_clip(clips["ref"])
    clip.planes = clip.planes[:-1]
    short = write_clip(tmp_path / "short.y4m", clip)
    with pytest.raises(QualityError, match=f"frame count mismatch.*has {N - 1} frames.*has {N}"):
        score(short, clips["ref"], ffmpeg=ffmpeg)


def test_mismatched_size(clips: dict[str, Path], ffmpeg: str, tmp_path: Path) -> None:
    small = tmp_path / "small.y4m"
    subprocess.run(
        [ffmpeg, "-v", "error", "-i", clips["ref"], "-vf", "scale=80:60", "-pix_fmt", "yuv420p", small],
        check=True,
    )
    with pytest.raises(QualityError, match=r"size mismatch.*80x60.*160x120"):
        score(small, clips["ref"], ffmpeg=ffmpeg)


@pytest.mark.parametrize("chroma", ["420p10", "444", "mono"])
def test_only_8bit_420(clips: dict[str, Path], ffmpeg: str, tmp_path: Path, chroma: str) -> None:
    other = tmp_path / f"{chroma}.y4m"
    subprocess.run(
        [
            ffmpeg,
            "-v",
            "error",
            "-i",
            clips["ref"],
            "-pix_fmt",
            {"420p10": "yuv420p10le", "444": "yuv444p", "mono": "gray"}[chroma],
            "-strict",
            "-1",
            other,
        ],
        check=True,
    )
    assert read_y4m_info(other).chroma == chroma
    with pytest.raises(QualityError, match=f"C{chroma} is not supported; only 8-bit 4:2:0"):
        score(other, clips["ref"], ffmpeg=ffmpeg)


def test_ffmpeg_failure_carries_its_stderr(clips: dict[str, Path], ffmpeg: str, tmp_path: Path) -> None:
    # Valid Y4M, but ffmpeg's demuxer refuses stream headers longer than 129 bytes.
    clip = read_clip(clips["ref"])
    clip.header = clip.header.replace(b"\n", b" X" + b"c" * 100 + b"\n")
    long_header = write_clip(tmp_path / "long-header.y4m", clip)
    assert read_y4m_info(long_header).frames == N
    with pytest.raises(QualityError, match=r"ffmpeg exited with code \d+:\n(.|\n)*Header too large"):
        score(long_header, clips["ref"], ffmpeg=ffmpeg)


def test_ffmpeg_reading_fewer_frames_is_an_error(clips: dict[str, Path], ffmpeg: str, tmp_path: Path) -> None:
    # Valid Y4M, but ffmpeg ends the stream at a FRAME marker longer than 80 bytes and still exits 0.
    long_marker = write_clip(tmp_path / "long-marker.y4m", read_clip(clips["ref"]), b"FRAME X" + b"p" * 90 + b"\n")
    assert read_y4m_info(long_marker).frames == N
    with pytest.raises(QualityError, match=f"log covers 0 frames, the inputs have {N}"):
        score(long_marker, clips["ref"], ffmpeg=ffmpeg)


def test_missing_ffmpeg_binary(clips: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(QualityError, match="cannot run ffmpeg"):
        score(clips["ref"], clips["ref"], ffmpeg=str(tmp_path / "no-such-ffmpeg"))


def test_bits_per_pixel() -> None:
    assert bits_per_pixel(1000, 160, 120, 10) == 1000 * 8 / (160 * 120 * 10)
    assert bits_per_pixel(0, 2, 2, 1) == 0.0
    assert bits_per_pixel(24_000, 1920, 1080, 1) == pytest.approx(0.0925926, rel=1e-6)
    with pytest.raises(ValueError):
        bits_per_pixel(10, 0, 120, 10)
    with pytest.raises(ValueError):
        bits_per_pixel(-1, 160, 120, 10)
