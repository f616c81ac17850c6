"""Read the shape of a YUV4MPEG2 (Y4M) file without decoding it.

Every decoder in the farm hands back Y4M (docs/decoder-contract.md), and a device can hand back a
short, truncated or garbled file. Scoring such a file with ffmpeg gives plausible numbers for the wrong
frames, so we check the header and walk every FRAME marker ourselves first and fail loudly, naming the
file and the byte offset where it stopped being Y4M.

Only the stream header and the frame markers are read; the planes are skipped with ``seek``, so this is
cheap even for long 1080p files. ``iter_frames`` then reads a checked file's planes one frame at a time, for
the host-side measures that need pixels (output comparison, flicker) without holding a whole video.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # numpy is imported by iter_frames: devices are reached before any frame is read on the host
    import numpy as np
    import numpy.typing as npt

__all__ = ["EIGHT_BIT_420", "QualityError", "Y4MInfo", "iter_frames", "read_y4m_info"]

MAGIC = b"YUV4MPEG2"
FRAME = b"FRAME"
MAX_HEADER = 64 * 1024  # the spec sets no limit; X comments may be long, but not this long
MAX_FRAME_MARKER = 64 * 1024

#: Chroma tags that mean 8-bit 4:2:0 (they differ only in chroma siting, which no metric here uses).
EIGHT_BIT_420 = frozenset({"420", "420jpeg", "420mpeg2", "420paldv"})

_SUBSAMPLED = re.compile(r"^(?P<sub>420|422|444|411)(?:jpeg|mpeg2|paldv|p(?P<depth>9|10|12|14|16))?$")
_MONO = re.compile(r"^mono(?P<depth>9|10|12|14|16)?$")


class QualityError(Exception):
    """A file could not be scored (bad Y4M, mismatched inputs, ffmpeg failed); the message says why.

    Defined here, the lowest layer, and re-exported by :mod:`farm.quality.score`, so both modules raise
    the same class.
    """


@dataclass(frozen=True)
class Y4MInfo:
    """What a Y4M file's header says, plus the frame count found by walking its frame markers."""

    width: int
    height: int
    fps_num: int
    fps_den: int
    chroma: str  # the C tag as written (e.g. "420jpeg", "420", "420p10"); "420jpeg" when absent
    frames: int
    header_len: int  # bytes of the stream header, newline included
    frame_size: int  # bytes of plane data per frame, FRAME marker excluded

    @property
    def fps(self) -> float:
        return self.fps_num / self.fps_den


def _frame_size(chroma: str, width: int, height: int) -> int | None:
    """Plane bytes per frame for a chroma tag, or None when the tag is unknown."""
    cw, ch = (width + 1) // 2, (height + 1) // 2
    if chroma == "444alpha":
        return 4 * width * height
    m = _SUBSAMPLED.match(chroma)
    if m:
        depth = int(m.group("depth") or 8)
        luma = width * height
        chroma_plane = {
            "420": cw * ch,
            "422": cw * height,
            "444": width * height,
            "411": ((width + 3) // 4) * height,
        }[m.group("sub")]
        return (luma + 2 * chroma_plane) * (2 if depth > 8 else 1)
    m = _MONO.match(chroma)
    if m:
        depth = int(m.group("depth") or 8)
        return width * height * (2 if depth > 8 else 1)
    return None


def _positive_int(text: str) -> int | None:
    return int(text) if text.isdigit() and int(text) > 0 else None


def _parse_header(path: Path, line: bytes) -> tuple[int, int, int, int, str]:
    """Parse the stream header tokens (after the magic) into width, height, fps_num, fps_den, chroma."""
    width = height = None
    fps_num, fps_den = 25, 1  # what ffmpeg's demuxer assumes when F is absent
    chroma = "420jpeg"  # the spec's default when C is absent
    offset = len(MAGIC)
    for token in line[len(MAGIC) :].split(b" "):
        here = offset
        offset += len(token) + 1
        if not token:
            continue
        tag, value = chr(token[0]), token[1:].decode("latin-1")
        if tag == "W":
            width = _positive_int(value)
            if width is None:
                raise QualityError(f"{path}: byte {here}: bad width {value!r}")
        elif tag == "H":
            height = _positive_int(value)
            if height is None:
                raise QualityError(f"{path}: byte {here}: bad height {value!r}")
        elif tag == "F":
            num, sep, den = value.partition(":")
            n, d = _positive_int(num), _positive_int(den)
            if not sep or n is None or d is None:
                raise QualityError(f"{path}: byte {here}: bad frame rate {value!r} (want F<num>:<den>)")
            fps_num, fps_den = n, d
        elif tag == "C":
            chroma = value
        # I (interlacing), A (aspect) and X (extensions) do not change the layout; ignore them.
    if width is None or height is None:
        raise QualityError(f"{path}: byte 0: stream header lacks {'W' if width is None else 'H'}")
    return width, height, fps_num, fps_den, chroma


def read_y4m_info(path: Path) -> Y4MInfo:
    """Parse ``path``'s stream header and count its frames by walking every FRAME marker.

    Frame markers may carry parameters (``FRAME Ixyz``). Raises :class:`QualityError` naming the file and
    byte offset for a missing or bad header, an unknown chroma tag, anything other than a FRAME marker where
    one is due, or a last frame shorter than the header promises.
    """
    path = Path(path)
    try:
        f = path.open("rb")
    except OSError as exc:
        raise QualityError(f"{path}: cannot open: {exc.strerror or exc}") from exc
    with f:
        size = os.fstat(f.fileno()).st_size
        head = f.read(MAX_HEADER)
        if not head.startswith(MAGIC) or head[len(MAGIC) : len(MAGIC) + 1] not in (b" ", b"\n"):
            raise QualityError(f"{path}: byte 0: not a Y4M file (no 'YUV4MPEG2 ' signature)")
        end = head.find(b"\n")
        if end < 0:
            raise QualityError(
                f"{path}: byte {len(head)}: stream header not terminated by a newline within {MAX_HEADER} bytes"
            )
        width, height, fps_num, fps_den, chroma = _parse_header(path, head[:end])
        frame_size = _frame_size(chroma, width, height)
        if frame_size is None:
            raise QualityError(f"{path}: byte 0: unknown chroma tag C{chroma}")
        header_len = end + 1

        frames = _count_frames(path, f, header_len, frame_size, size)
    return Y4MInfo(
        width=width,
        height=height,
        fps_num=fps_num,
        fps_den=fps_den,
        chroma=chroma,
        frames=frames,
        header_len=header_len,
        frame_size=frame_size,
    )


def _count_frames(path: Path, f: BinaryIO, pos: int, frame_size: int, size: int) -> int:
    """Walk the FRAME markers from ``pos``; every frame must be whole."""
    frames = 0
    while pos < size:
        f.seek(pos)
        marker = f.read(len(FRAME) + 1)
        if not marker.startswith(FRAME) or marker[len(FRAME) :] not in (b" ", b"\n"):
            what = "truncated FRAME marker" if len(marker) < len(FRAME) + 1 else "expected FRAME marker"
            raise QualityError(f"{path}: byte {pos}: {what} (frame {frames}), found {marker!r}")
        marker_len = len(marker)
        if marker.endswith(b" "):  # frame parameters follow; find the newline
            nl = f.read(MAX_FRAME_MARKER).find(b"\n")
            if nl < 0:
                raise QualityError(f"{path}: byte {pos}: FRAME marker not terminated (frame {frames})")
            marker_len += nl + 1
        data_start = pos + marker_len
        if data_start + frame_size > size:
            raise QualityError(
                f"{path}: byte {pos}: truncated frame {frames}: {frame_size} bytes of planes expected, "
                f"{size - data_start} present"
            )
        frames += 1
        pos = data_start + frame_size
    return frames


def iter_frames(path: Path, info: Y4MInfo) -> Iterator[npt.NDArray[np.uint8]]:
    """Each frame's planes as one flat uint8 array, one frame in memory at a time.

    Only for a file ``read_y4m_info`` has walked (it checked every marker and that every frame is whole), so a
    marker is skipped with one bounded ``readline``. Long 1080p outputs then cost the memory of a frame, not of
    the video: scoring pulls them from every device.
    """
    import numpy as np

    with Path(path).open("rb") as f:
        f.seek(info.header_len)
        for _ in range(info.frames):
            f.readline(MAX_FRAME_MARKER)
            yield np.frombuffer(f.read(info.frame_size), dtype=np.uint8)
