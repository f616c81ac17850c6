"""Anchor names without a run: --anchor parsing, metric spelling, and how runs stored before schema 5 read."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.config.suite import Gate
from farm.measures import is_gate_metric, measure, per_anchor, split_anchor
from farm.plan import parse_anchor
from farm.report.anchors import RunAnchor, gate_notes, run_anchors
from farm.store import Store


def test_anchor_arguments_name_or_path() -> None:
    assert parse_anchor("x265=examples/bundles/hevc-x265") == ("x265", Path("examples/bundles/hevc-x265"))
    assert parse_anchor("examples/bundles/hevc-x265") == (None, Path("examples/bundles/hevc-x265"))
    assert parse_anchor("../odd=dir/b") == (None, Path("../odd=dir/b"))  # not a name: a path with '='
    assert parse_anchor("fp32=") == (None, Path("fp32="))


def test_per_anchor_metric_names_resolve_to_their_declaration() -> None:
    assert per_anchor("bd_rate.psnr_yuv", "fp32") == "bd_rate[fp32].psnr_yuv"
    assert split_anchor("bd_rate[fp32].psnr_yuv") == ("bd_rate.psnr_yuv", "fp32")
    assert split_anchor("bd_rate.vmaf") == ("bd_rate.vmaf", None)
    assert measure("bd_rate[x265].vmaf") is measure("bd_rate.vmaf")
    assert is_gate_metric("bd_rate[x265].psnr_yuv") and not is_gate_metric("bd_rate[x265].ssim")
    assert not is_gate_metric("fps[x265]") and not is_gate_metric("complexity[x].kmac_per_pixel")
    with pytest.raises(ValueError, match=r"unknown metric 'bd_rate\[a b\]\.psnr_yuv'"):
        Gate(metric="bd_rate[a b].psnr_yuv", op="<=", value=0)


def test_a_run_stored_before_several_anchors_reads_as_one_anchor_named_after_its_bundle(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    common = {"suite_name": "s", "suite_digest": "d", "suite_json": "{}", "bundle_name": "b", "bundle_version": "1",
              "bundle_digest": "x", "host": "h", "farm_version": "0", "conventions": {}}  # fmt: skip
    store.start_run("old", anchor_name="hevc-x265@1.0.0", anchor_digest="y", **common)  # no anchors_json
    store.start_run("none", **common)
    anchors = [{"name": "x265", "role": "anchor", "label": "hevc-x265@1.0.0", "digest": "y"},
               {"name": "fp32", "role": "anchor:fp32", "label": "learned-fp32@1", "digest": "z"}]  # fmt: skip
    store.start_run("new", anchor_name="hevc-x265@1.0.0", anchor_digest="y", anchors=anchors, **common)
    assert run_anchors(store.run("old")) == [RunAnchor("hevc-x265", "anchor", "hevc-x265@1.0.0")]
    assert run_anchors(store.run("none")) == []
    assert [a.role for a in run_anchors(store.run("new"))] == ["anchor", "anchor:fp32"]
    store.close()


def test_bd_rate_caveats_go_to_the_gates_of_their_own_anchor() -> None:
    notes = ["bd_rate.psnr_yuv s: small overlap", "bd_rate.vmaf s: small", "bd_rate[fp32].psnr_yuv s: tiny"]
    assert gate_notes("bd_rate.psnr_yuv", notes) == notes[:2]  # the default anchor, as before several anchors
    assert gate_notes("bd_rate[fp32].vmaf", notes) == notes[2:]
    assert gate_notes("fps", notes) == []
