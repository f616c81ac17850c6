"""Bundles: checksums, reproducible packing, and archives that try to escape are refused (exit 2)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm.bundle import extract, open_bundle, pack, verify_dir, write_sums
from farm.cli import app
from farm.errors import InputError
from tests.conftest import EXAMPLES


@pytest.mark.parametrize("name", ["av1-svt", "hevc-x265"])
def test_examples_verify(name: str) -> None:
    b = verify_dir(EXAMPLES / name)
    assert b.manifest.name == name and len(b.digest) == 64


def test_example_harnesses_are_identical() -> None:
    """Both example bundles ship the same decoder-contract driver; a fix to one must reach the other."""
    assert (EXAMPLES / "av1-svt" / "ffdecode.py").read_bytes() == (EXAMPLES / "hevc-x265" / "ffdecode.py").read_bytes()


def test_wrong_checksum_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "ffdecode.py").write_text("print('tampered')\n")
    with pytest.raises(InputError) as exc:
        verify_dir(bundle_copy)
    assert any("ffdecode.py" in p.field and "checksum mismatch" in p.message for p in exc.value.problems)


def test_unlisted_file_and_link_are_refused(bundle_copy: Path) -> None:
    (bundle_copy / "extra.bin").write_bytes(b"x")
    (bundle_copy / "link").symlink_to("/etc/passwd")
    with pytest.raises(InputError) as exc:
        verify_dir(bundle_copy)
    text = str(exc.value)
    assert "extra.bin" in text and "not checksummed" in text
    assert "links are not allowed" in text


def test_pack_is_reproducible_and_round_trips(bundle_copy: Path, tmp_path: Path) -> None:
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    pack(bundle_copy, a)
    (bundle_copy / "ffdecode.py").touch()  # a new mtime must not change the archive
    pack(bundle_copy, b)
    assert a.read_bytes() == b.read_bytes()
    opened = open_bundle(a, tmp_path / "cache")
    assert opened.digest == verify_dir(bundle_copy).digest
    assert (opened.root / "ffdecode.py").read_bytes() == (bundle_copy / "ffdecode.py").read_bytes()


def _evil_archive(path: Path, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    with tarfile.open(path, "w:gz") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)
    return path


@pytest.mark.parametrize(
    "member",
    [
        tarfile.TarInfo("../escape.txt"),
        tarfile.TarInfo("/abs/escape.txt"),
        tarfile.TarInfo("ok/../../escape.txt"),
    ],
)
def test_traversal_members_are_refused(tmp_path: Path, member: tarfile.TarInfo) -> None:
    archive = _evil_archive(tmp_path / "evil.tar.gz", member, b"pwned")
    dest = tmp_path / "out" / "deep"
    with pytest.raises(InputError, match="outside the target directory"):
        extract(archive, dest)
    assert not (tmp_path / "out" / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE])
def test_link_members_are_refused(tmp_path: Path, kind: bytes) -> None:
    member = tarfile.TarInfo("bundle.yaml")
    member.type = kind
    member.linkname = "/etc/passwd"
    archive = _evil_archive(tmp_path / "evil.tar.gz", member)
    with pytest.raises(InputError, match="links are not allowed"):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "out" / "bundle.yaml").exists()


def test_cli_bundle_commands_and_exit_codes(bundle_copy: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    out = tmp_path / "b.tar.gz"
    res = runner.invoke(app, ["bundle", "pack", str(bundle_copy), "-o", str(out)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["bundle", "verify", str(out)])
    assert res.exit_code == 0 and "av1-svt@1.0.0" in res.output
    evil = _evil_archive(tmp_path / "evil.tar.gz", tarfile.TarInfo("../x"), b"x")
    res = runner.invoke(app, ["bundle", "verify", str(evil)])
    assert res.exit_code == 2
    (bundle_copy / "bundle.yaml").write_text((bundle_copy / "bundle.yaml").read_text() + "\n# edited\n")
    res = runner.invoke(app, ["bundle", "verify", str(bundle_copy)])
    assert res.exit_code == 2 and "checksum mismatch" in res.output
    write_sums(bundle_copy)
    assert runner.invoke(app, ["bundle", "verify", str(bundle_copy)]).exit_code == 0


def test_garbage_archive_is_bad_input(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"not a tarball")
    with pytest.raises(InputError, match="not a readable"):
        open_bundle(junk, tmp_path / "cache")
