"""Bundle archives are refused as soon as they expand past a cap, and unpacked bundles do not pile up for ever."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from farm.bundle import Caps, evict, extract, open_bundle, pack
from farm.errors import InputError
from tests.support.archives import fat_metadata, many_members, zero_bomb
from tests.support.cli import EXAMPLES, farm

GiB = 1 << 30


def test_a_2_mb_archive_that_expands_to_2_gib_is_refused_in_well_under_a_second(tmp_path: Path) -> None:
    bomb = zero_bomb(tmp_path / "bomb.tar.gz", 2 * GiB)
    assert bomb.stat().st_size < 3 << 20
    start = time.monotonic()
    res = farm("bundle", "verify", bomb, store=tmp_path / "state" / "results.db")
    elapsed = time.monotonic() - start
    assert res.code == 2, res.output
    assert f"{bomb}: weights.bin: unpacks to more than" in res.output and "refused" in res.output
    assert elapsed < 2.0, elapsed  # the header is checked before a byte of the member is decompressed


def test_a_bomb_of_many_small_members_is_refused_when_it_crosses_the_ratio(tmp_path: Path) -> None:
    archive = many_members(tmp_path / "many.tar.gz", 50, size=100_000)  # 5 MB of zeros in a few kB
    dest = tmp_path / "out"
    with pytest.raises(InputError, match="unpacks to more than") as exc:
        extract(archive, dest, Caps(ratio=20, ratio_floor=0))
    assert exc.value.exit_code == 2
    assert not dest.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".extract-")]


def test_member_count_is_capped(tmp_path: Path) -> None:
    archive = many_members(tmp_path / "many.tar.gz", 30)
    with pytest.raises(InputError, match="more than 20 members"):
        extract(archive, tmp_path / "out", Caps(members=20))
    extract(archive, tmp_path / "ok", Caps(members=30))
    assert len(list((tmp_path / "ok").iterdir())) == 30


def test_tar_metadata_counts_against_the_cap(tmp_path: Path) -> None:
    archive = fat_metadata(tmp_path / "pax.tar.gz", 4 << 20)  # 4 MB of PAX header around a 1-byte file
    with pytest.raises(InputError, match=r"expands past its cap \(tar metadata\)"):
        extract(archive, tmp_path / "out", Caps(total=1000, ratio_floor=0, members=10))


def test_a_real_bundle_archive_still_unpacks(bundle_copy: Path, tmp_path: Path) -> None:
    packed = tmp_path / "b.tar.gz"
    pack(bundle_copy, packed)
    opened = open_bundle(packed, tmp_path / "cache")
    assert (opened.root / "bundle.yaml").is_file() and opened.manifest.name == "av1-svt"


def _entry(folder: Path, name: str, size: int, age_s: float) -> Path:
    entry = folder / name
    entry.mkdir(parents=True)
    (entry / "blob").write_bytes(bytes(size))
    stamp = time.time() - age_s
    os.utime(entry, (stamp, stamp))
    return entry


def test_the_unpacked_cache_evicts_least_recently_used_first(tmp_path: Path) -> None:
    folder = tmp_path / "bundles"
    oldest = _entry(folder, "a", 400, age_s=3000)
    older = _entry(folder, "b", 400, age_s=2000)
    recent = _entry(folder, "c", 400, age_s=10)  # may be in use by a running run
    kept = _entry(folder, "d", 400, age_s=5000)  # the one being opened: never evicted, however old
    removed = evict(folder, keep=kept, max_bytes=900, keep_recent_s=60)
    assert removed == [oldest, older]
    assert sorted(p.name for p in folder.iterdir()) == ["c", "d"]
    assert recent.is_dir() and kept.is_dir()
    assert evict(folder, keep=kept, max_bytes=10_000, keep_recent_s=60) == []  # under the cap: nothing goes


def test_opening_a_cached_archive_marks_it_recently_used(bundle_copy: Path, tmp_path: Path) -> None:
    packed = tmp_path / "b.tar.gz"
    pack(bundle_copy, packed)
    root = open_bundle(packed, tmp_path / "cache").root
    os.utime(root, (1_000_000, 1_000_000))
    assert open_bundle(packed, tmp_path / "cache").root == root
    assert time.time() - root.stat().st_mtime < 60


def test_the_example_bundles_pack_and_unpack_under_the_caps(tmp_path: Path) -> None:
    for name in ("av1-svt", "hevc-x265"):
        packed = tmp_path / f"{name}.tar.gz"
        pack(EXAMPLES / name, packed)
        assert open_bundle(packed, tmp_path / "cache").manifest.name == name


def test_an_archive_is_never_unpacked_over_another_bundle(bundle_copy: Path, tmp_path: Path) -> None:
    packed = tmp_path / "b.tar.gz"
    pack(bundle_copy, packed)
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "other").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        extract(packed, dest)
    assert sorted(p.name for p in dest.iterdir()) == ["other"]
    assert extract(packed, tmp_path / "fresh") == tmp_path / "fresh"
