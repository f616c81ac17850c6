"""Codec bundles: checksum, pack, verify and safely open them.

A bundle's identity is the sha256 of its ``SHA256SUMS`` file, which covers every other file, so two bundles
with the same digest are byte-identical and results can be bound to exactly what was tested. Archives are
untrusted input: members are checked one by one (no absolute paths, no ``..``, no links, no devices) before
anything is written, and extraction then also uses tarfile's ``data`` filter as a second line of defence.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from farm.config.manifest import Manifest, load_manifest
from farm.errors import InputError, Problem
from farm.fileio import sha256_file

SUMS = "SHA256SUMS"
MAX_UNPACKED = 8 << 30  # refuse archives that claim more than this (gzip bombs fill the disk otherwise)
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
    if not (member.isfile() or member.isdir()):
        return Problem(archive, None, member.name, "only regular files and folders are allowed")
    return None


def extract(archive: Path, dest: Path) -> Path:
    """Extract ``archive`` into ``dest`` after checking every member; returns the bundle root."""
    display = str(archive)
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = tar.getmembers()
            problems = [p for m in members if (p := _check_member(m, display)) is not None]
            total = sum(m.size for m in members if m.isfile())
            if total > MAX_UNPACKED:
                problems.append(Problem(display, None, "", f"unpacks to {total} bytes, over the {MAX_UNPACKED} limit"))
            if problems:
                raise InputError(problems)
            dest.mkdir(parents=True, exist_ok=True)
            tar.extractall(dest, members=members, filter="data")
    except (tarfile.TarError, gzip.BadGzipFile, EOFError, OSError) as exc:
        raise InputError([Problem(display, None, "", f"not a readable .tar.gz: {exc}")]) from None
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
    bundle = verify_dir(dest, str(path))
    return Bundle(root=dest, manifest=bundle.manifest, digest=bundle.digest, files=bundle.files, source=str(path))
