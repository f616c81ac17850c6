"""Encodes a release gate can rely on: the example bundles give the same bytes on every cold run, and a bundle
that declares its encoder non-deterministic never borrows another run's encodes for its BD-rate.

Cold means a new cache each time, so nothing is reused; the encoders are the real SVT-AV1 and x265 inside
imageio-ffmpeg's ffmpeg. SVT-AV1's multi-threaded VBR gave different bytes on two of four runs of this very clip
before its bundle pinned ``lp=1``.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from farm.bundle import Bundle, verify_dir, write_sums
from farm.config.suite import Generate, Sequence
from farm.media import Source, encode, render
from farm.store import open_store
from tests.support.cli import EXAMPLES, farm, suite_text, write
from tests.support.startup import INVENTORY

CLIP = Sequence(id="clip", generate=Generate(source="testsrc2", width=320, height=240, frames=30))


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    return render(CLIP, tmp_path_factory.mktemp("sources"))


@pytest.mark.parametrize("name", ["av1-svt", "hevc-x265"])
def test_an_example_bundle_encodes_the_same_bytes_on_every_cold_run(name: str, source: Source, tmp_path: Path) -> None:
    bundle = verify_dir(EXAMPLES / name)
    digests = set()
    for cold in range(3):
        bitstream = encode(bundle, source, 300, tmp_path / f"cache{cold}")
        assert not bitstream.reused and bitstream.size > 0
        digests.add(bitstream.sha256)
    assert len(digests) == 1, f"{name}: {len(digests)} different bitstreams from 3 cold encodes"


def non_deterministic(tmp_path: Path) -> Bundle:
    """The x265 example (quick), declaring its encoder non-deterministic as a bundle whose encoder is would."""
    root = tmp_path / "nondet"
    shutil.copytree(EXAMPLES / "hevc-x265", root)
    manifest = (root / "bundle.yaml").read_text()
    (root / "bundle.yaml").write_text(manifest.replace("encoder:\n", "encoder:\n  deterministic: false\n", 1))
    write_sums(root)
    bundle = verify_dir(root)
    assert bundle.manifest.encoder.deterministic is False
    return bundle


def test_a_deterministic_encode_is_reused_across_runs(source: Source, tmp_path: Path) -> None:
    bundle = verify_dir(EXAMPLES / "hevc-x265")
    first = encode(bundle, source, 200, tmp_path / "cache", scope="run-a")
    again = encode(bundle, source, 200, tmp_path / "cache", scope="run-b")
    assert not first.reused and again.reused and again.path == first.path


def test_a_non_deterministic_encode_is_reused_within_its_run_only(source: Source, tmp_path: Path) -> None:
    bundle = non_deterministic(tmp_path)
    first = encode(bundle, source, 200, tmp_path / "cache", scope="run-a")
    same_run = encode(bundle, source, 200, tmp_path / "cache", scope="run-a")
    other_run = encode(bundle, source, 200, tmp_path / "cache", scope="run-b")
    unscoped = encode(bundle, source, 200, tmp_path / "cache")
    assert not first.reused and same_run.reused and same_run.path == first.path
    assert not other_run.reused and other_run.path != first.path
    assert not unscoped.reused


def test_each_run_of_a_non_deterministic_bundle_encodes_its_own_bitstreams_and_records_them(tmp_path: Path) -> None:
    bundle = non_deterministic(tmp_path)
    suite = write(tmp_path / "suite.yaml", suite_text(rates="[150, 300]"))
    inventory = write(tmp_path / "devices.yaml", INVENTORY)
    store = tmp_path / "store" / "results.db"
    for _ in range(2):
        res = farm("run", suite, "--bundle", bundle.root, "--inventory", inventory, store=store)
        assert res.code == 0, res.output
    # two runs x two rate points, none shared (a deterministic bundle leaves two: tests above)
    assert len(list((store.parent / "cache" / "bitstreams").glob("*.hevc"))) == 4
    db = open_store(store, readonly=True)
    try:
        runs = [r["id"] for r in db.runs(10)]
        recorded = {run: {j["bitstream_sha"] for j in db.jobs(run)} for run in runs}
    finally:
        db.close()
    assert len(runs) == 2 and all(len(digests) == 2 for digests in recorded.values())
