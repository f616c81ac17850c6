"""Hostile bundle archives, built in milliseconds.

A gzip file may hold several gzip members back to back, and readers (Python's gzip, GNU gzip) decompress them as
one stream. So a bomb is one compressed chunk of zeros repeated: 2 GiB of tar data costs 2 MB and no CPU to make.
"""

from __future__ import annotations

import gzip
import io
import tarfile
from pathlib import Path

CHUNK = 1 << 20
_ZEROS = gzip.compress(bytes(CHUNK), compresslevel=9, mtime=0)


def _header(name: str, size: int, pax: dict[str, str] | None = None) -> bytes:
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    if pax:
        info.pax_headers = pax
        return info.tobuf(format=tarfile.PAX_FORMAT)
    return info.tobuf(format=tarfile.GNU_FORMAT)


def zero_bomb(path: Path, unpacked: int, name: str = "weights.bin") -> Path:
    """A .tar.gz with one member of ``unpacked`` zero bytes (a multiple of 1 MiB)."""
    assert unpacked % CHUNK == 0
    with path.open("wb") as out:
        out.write(gzip.compress(_header(name, unpacked), mtime=0))
        for _ in range(unpacked // CHUNK):
            out.write(_ZEROS)
        out.write(gzip.compress(bytes(1024), mtime=0))  # end-of-archive blocks
    return path


def many_members(path: Path, count: int, size: int = 0) -> Path:
    """A .tar.gz with ``count`` small files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for i in range(count):
            info = tarfile.TarInfo(f"f{i}")
            info.size = size
            tar.addfile(info, io.BytesIO(bytes(size)))
    path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    return path


def fat_metadata(path: Path, metadata: int) -> Path:
    """A .tar.gz whose one tiny file carries a PAX header of ``metadata`` bytes (read into memory by tarfile)."""
    with path.open("wb") as out:
        out.write(gzip.compress(_header("tiny", 1, pax={"comment": "x" * metadata}) + b"x" + bytes(511), mtime=0))
        out.write(gzip.compress(bytes(1024), mtime=0))
    return path
