"""Codec bundles: checksum, pack, verify and safely open them.

A bundle's identity is the sha256 of its ``SHA256SUMS`` file, which covers every other file, so two bundles
with the same digest are byte-identical and results can be bound to exactly what was tested. Archives are
untrusted input: members are checked one by one (no absolute paths, no ``..``, no links, no devices) before
anything is written, and extraction then also uses tarfile's ``data`` filter as a second line of defence.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from farm.config.manifest import Manifest, load_manifest
from farm.errors import InputError, Problem
from farm.fileio import sha256_file

SUMS = "SHA256SUMS"
MAX_UNPACKED = 8 << 30  # refuse archives that unpack to more than this (gzip bombs fill the disk otherwise)
# Model weights and executables compress 1-5x, text 10-20x; a bomb compresses ~1000x. Small archives may compress
# hard (a zero-filled test fixture), so the ratio only bites past the floor.
MAX_RATIO = 200.0
RATIO_FLOOR = 64 << 20
MAX_MEMBERS = 10_000
CACHE_MAX_BYTES = 4 << 30  # unpacked archives kept on the host; least recently used go first
CACHE_KEEP_RECENT_S = 6 * 3600.0  # an entry used this recently may be in use by a running run: never evicted
MANIFEST = "bundle.yaml"


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on the host: where it lives, what it says, and what it is (its digest)."""

    root: Path
    manifest: Manifest
    digest: str
    files: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    source: str = ""

    @property
    def label(self) -> str:
        return f"{self.manifest.name}@{self.manifest.version}"


def _walk(root: Path) -> tuple[list[str], list[Problem]]:
    files: list[str] = []
    problems: list[Problem] = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            if full.is_symlink():
                problems.append(Problem(str(full), None, "", "links are not allowed in a bundle"))
            elif full.is_file():
                if rel != SUMS:
                    files.append(rel)
            elif not full.is_dir():
                problems.append(Problem(str(full), None, "", "only regular files and folders are allowed"))
        dirnames[:] = [d for d in dirnames if not (Path(dirpath) / d).is_symlink()]
    return sorted(files), problems


def write_sums(root: Path) -> Path:
    """(Re)write SHA256SUMS over every file of a bundle directory, in sha256sum's format."""
    files, problems = _walk(root)
    if problems:
        raise InputError(problems)
    lines = [f"{sha256_file(root / rel)}  {rel}\n" for rel in files]
    out = root / SUMS
    out.write_text("".join(lines), encoding="utf-8")
    return out


def _read_sums(root: Path, display: str) -> tuple[dict[str, tuple[str, int]], list[Problem]]:
    sums_path = root / SUMS
    sums_name = f"{display}/{SUMS}"
    if not sums_path.is_file():
        return {}, [Problem(sums_name, None, "", "missing (create it with 'farm bundle sums DIR')")]
    listed: dict[str, tuple[str, int]] = {}  # path -> (sha256, line)
    problems: list[Problem] = []
    for lineno, line in enumerate(sums_path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        digest, sep, name = line.partition("  ")
        if not sep:
            digest, sep, name = line.partition(" *")
        digest = digest.strip().lower()
        if not sep or len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            problems.append(Problem(sums_name, lineno, "", "expected '<sha256>  <path>'"))
            continue
        rel = PurePosixPath(name)
        if rel.is_absolute() or ".." in rel.parts:
            problems.append(Problem(sums_name, lineno, name, "path outside the bundle"))
            continue
        if name in listed:
            problems.append(Problem(sums_name, lineno, name, "listed twice"))
        listed[name] = (digest, lineno)
    return listed, problems


def verify_dir(root: Path, display: str | None = None) -> Bundle:
    """Check manifest and checksums of an unpacked bundle; every problem is reported together."""
    display = display or str(root)
    if not root.is_dir():
        raise InputError([Problem(display, None, "", "not a bundle directory or .tar.gz")])
    files, problems = _walk(root)
    listed, sum_problems = _read_sums(root, display)
    problems += sum_problems
    sums_name = f"{display}/{SUMS}"
    if (root / SUMS).is_file():
        for rel in files:
            if rel not in listed:
                problems.append(Problem(sums_name, None, rel, "file is in the bundle but not checksummed"))
        for rel, (want, lineno) in listed.items():
            path = root / rel
            if not path.is_file():
                problems.append(Problem(sums_name, lineno, rel, "listed but missing"))
            elif sha256_file(path) != want:
                problems.append(Problem(sums_name, lineno, rel, "checksum mismatch"))
    manifest: Manifest | None = None
    try:
        manifest = load_manifest(root / MANIFEST, f"{display}/{MANIFEST}")
    except InputError as exc:
        problems += exc.problems
    if problems or manifest is None:
        raise InputError(problems)
    digest = hashlib.sha256((root / SUMS).read_bytes()).hexdigest()
    files_sha = {rel: sha for rel, (sha, _) in listed.items()}
    return Bundle(root=root, manifest=manifest, digest=digest, files=files_sha, source=display)


def _check_member(member: tarfile.TarInfo, archive: str) -> Problem | None:
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        return Problem(archive, None, member.name, "member would be written outside the target directory")
    if member.issym() or member.islnk():
        return Problem(archive, None, member.name, "links are not allowed in a bundle")
    if member.issparse() or not (member.isfile() or member.isdir()):
        return Problem(archive, None, member.name, "only regular files and folders are allowed")
    return None


@dataclass(frozen=True)
class Caps:
    """How far an archive may expand. Checked while streaming, so a bomb costs what it takes to cross a cap."""

    total: int = MAX_UNPACKED
    ratio: float = MAX_RATIO
    ratio_floor: int = RATIO_FLOOR
    members: int = MAX_MEMBERS

    def unpacked_limit(self, archive_size: int) -> int:
        return min(self.total, max(self.ratio_floor, int(self.ratio * archive_size)))

    def stream_limit(self, archive_size: int) -> int:
        """Bytes of tar stream allowed: the files plus each member's header and padding (1.5 kB), and 1 MiB."""
        return self.unpacked_limit(archive_size) + self.members * 1536 + (1 << 20)


class _Capped(io.RawIOBase):
    """A decompressed stream that fails once more bytes came out than the caps allow.

    The member headers are checked first and give the precise message; this catches what they cannot see
    (tar metadata such as a PAX header of gigabytes, which tarfile reads into memory).
    """

    def __init__(self, raw: io.BufferedIOBase, limit: int, archive: str) -> None:
        self._raw = raw
        self._left = limit
        self._archive = archive

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        data = self._raw.read(min(len(buffer), max(self._left + 1, 1)))
        self._left -= len(data)
        if self._left < 0:
            raise InputError([Problem(self._archive, None, "", "expands past its cap (tar metadata): refused")])
        buffer[: len(data)] = data
        return len(data)


def _checked_members(tar: tarfile.TarFile, display: str, limit: int, caps: Caps) -> Iterator[tarfile.TarInfo]:
    """Yield members one by one as the stream reaches them; stop at the first bad one or crossed cap."""
    total = 0
    for count, member in enumerate(tar, 1):
        problem = _check_member(member, display)
        if problem is not None:
            raise InputError([problem])
        total += member.size if member.isfile() else 0
        if count > caps.members:
            raise InputError([Problem(display, None, "", f"has more than {caps.members} members: refused")])
        if total > limit:
            why = f"unpacks to more than {limit} bytes (cap: {caps.total} bytes, or {caps.ratio:g}x the archive)"
            raise InputError([Problem(display, None, member.name, f"{why}: refused")])
        yield member


def extract(archive: Path, dest: Path, caps: Caps | None = None) -> Path:
    """Extract ``archive`` into ``dest`` (absent or empty), checking each member before it is written.

    The archive is streamed, never listed first: listing decompresses all of it, so a bomb would cost its whole
    expansion before the first check. Nothing is left in ``dest`` when the archive is refused.
    """
    caps = caps or Caps()
    display = str(archive)
    size = archive.stat().st_size if archive.is_file() else 0
    limit = caps.unpacked_limit(size)
    dest.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".extract-", dir=dest.parent))
    try:
        with archive.open("rb") as raw, gzip.GzipFile(fileobj=raw, mode="rb") as gz:
            stream = io.BufferedReader(_Capped(gz, caps.stream_limit(size), display))
            with tarfile.open(fileobj=stream, mode="r|") as tar:
                tar.extractall(work, members=_checked_members(tar, display, limit, caps), filter="data")
        if dest.exists() and any(dest.iterdir()):
            raise InputError([Problem(str(dest), None, "", "not empty: a bundle is unpacked into an empty folder")])
        with contextlib.suppress(FileNotFoundError):
            dest.rmdir()
        os.replace(work, dest)
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError, zlib.error) as exc:
        raise InputError([Problem(display, None, "", f"not a readable .tar.gz: {exc}")]) from None
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return dest


def pack(root: Path, out: Path) -> Bundle:
    """Verify ``root`` and write a reproducible .tar.gz (sorted names, zero mtimes and owners)."""
    bundle = verify_dir(root)
    names = sorted([*bundle.files, SUMS])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for rel in names:
            path = root / rel
            info = tarfile.TarInfo(rel)
            info.size = path.stat().st_size
            info.mode = 0o755 if os.access(path, os.X_OK) else 0o644
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with path.open("rb") as f:
                tar.addfile(info, f)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as gz:
        gz.write(buf.getvalue())
    return bundle


def _tree_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            with contextlib.suppress(OSError):
                total += (Path(dirpath) / name).lstat().st_size
    return total


def evict(
    folder: Path, keep: Path, max_bytes: int = CACHE_MAX_BYTES, keep_recent_s: float = CACHE_KEEP_RECENT_S
) -> list[Path]:
    """Remove least recently used unpacked bundles until the folder fits ``max_bytes``; returns what went.

    Without it every archive ever run stays unpacked for ever. ``keep`` (just opened) and anything used within
    ``keep_recent_s`` stay even over the cap: another run may be encoding with or staging from them right now.
    A removed entry is only a cache: the next run of that archive unpacks it again.
    """
    entries: list[tuple[float, int, Path]] = []
    try:
        listing = list(folder.iterdir())
    except OSError:
        return []
    for entry in listing:
        with contextlib.suppress(OSError):  # another farm process may be evicting it right now
            if entry.is_dir() and not entry.is_symlink():
                entries.append((entry.stat().st_mtime, _tree_size(entry), entry))
    total = sum(size for _, size, _ in entries)
    now = time.time()
    removed: list[Path] = []
    for mtime, size, entry in sorted(entries, key=lambda e: e[0]):
        if total <= max_bytes:
            break
        if entry == keep or now - mtime < keep_recent_s:
            continue
        # renamed first, so no reader ever sees a half-deleted bundle under its digest
        doomed = entry.with_name(f".evicted-{entry.name}-{os.getpid()}")
        try:
            os.replace(entry, doomed)
        except OSError:
            continue
        shutil.rmtree(doomed, ignore_errors=True)
        total -= size
        removed.append(entry)
    return removed


def open_bundle(path: Path, cache_dir: Path) -> Bundle:
    """A run accepts a directory or a packed bundle; archives are unpacked once into the host cache."""
    if path.is_dir():
        return verify_dir(path)
    if not path.is_file():
        raise InputError([Problem(str(path), None, "", "no such bundle (directory or .tar.gz)")])
    archive_digest = sha256_file(path)
    dest = cache_dir / "bundles" / archive_digest
    if not dest.is_dir():
        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".unpack-", dir=cache_dir))
        try:
            extract(path, tmp)
            verify_dir(tmp, str(path))
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(tmp, dest)
            except OSError:
                if not dest.is_dir():  # another farm process unpacking the same archive won the race: fine
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    with contextlib.suppress(OSError):
        os.utime(dest)  # the entry's mtime is its last use: what eviction orders by
    evict(cache_dir / "bundles", keep=dest)
    bundle = verify_dir(dest, str(path))
    return Bundle(root=dest, manifest=bundle.manifest, digest=bundle.digest, files=bundle.files, source=str(path))
