"""Timing gates and emulated CPUs: a QEMU board's speed is shown EXEMPT, never judged, and never enough alone."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from farm.config.suite import Gate, Suite
from farm.emulation import EMULATED_NOTE
from farm.gates import JobView, RunView, evaluate, load_view, passing
from farm.measures import cpu_timed_metrics
from farm.store import Measurement, Store
from tests.support.cli import farm

NOTE = "qemu-1: EMULATED CPU, not a hardware measurement: not gated"


def job(device: str, fps: float, *, sha: str = "x", psnr: float = 40.0) -> JobView:
    return JobView(device, "test", "s", 100, 0, "ok", sha, {"fps.p50": fps, "psnr_yuv": psnr, "wall_s": 1.0})


def gate(metric: str, op: str, value: float | str, scope: str = "each") -> Gate:
    return Gate.model_validate({"metric": metric, "op": op, "value": value, "scope": scope})


def view(*emulated: str, devices: tuple[str, ...] = ("local", "qemu-1")) -> RunView:
    fps = {"local": 1200.0, "qemu-1": 8.0, "qemu-2": 9.0}
    return RunView(
        devices={d: ["qemu"] if d.startswith("qemu") else ["host"] for d in devices},
        jobs=[job(d, fps[d]) for d in devices],
        emulated=frozenset(emulated),
    )


def test_timing_metrics_are_the_speed_and_energy_of_the_decode() -> None:
    timed = set(cpu_timed_metrics())
    assert {"fps", "fps.p50", "frame_time_ms.p99", "wall_s", "deadline_misses", "energy_per_frame_j"} <= timed
    assert not timed & {"psnr_yuv", "bd_rate.psnr_yuv", "consistency", "failures", "vmaf"}


def test_each_scope_exempts_the_emulated_board_and_judges_the_real_device() -> None:
    verdicts = evaluate([gate("fps.p50", ">=", 30)], view("qemu-1"))
    by_device = {v.scope_key: v for v in verdicts}
    assert (by_device["local"].verdict, by_device["local"].value) == ("pass", 1200.0)
    exempt = by_device["qemu-1"]
    assert (exempt.verdict, exempt.value, exempt.detail) == ("exempt", None, NOTE)
    assert all(passing(v.verdict) for v in verdicts)


def test_without_the_emulated_property_the_same_board_is_judged_and_fails() -> None:
    by_device = {v.scope_key: v for v in evaluate([gate("fps.p50", ">=", 30)], view())}
    assert (by_device["qemu-1"].verdict, by_device["qemu-1"].value) == ("fail", 8.0)


def test_a_real_device_still_fails_when_a_board_beside_it_is_exempt() -> None:
    verdicts = evaluate([gate("fps.p50", ">=", 5000)], view("qemu-1"))
    assert [v.verdict for v in verdicts] == ["fail", "exempt"]
    assert not all(passing(v.verdict) for v in verdicts)


def test_a_pooled_scope_judges_its_real_devices_and_names_the_exempt_ones() -> None:
    [v] = evaluate([gate("fps.p50", ">=", 30, scope="all")], view("qemu-1"))
    assert (v.verdict, v.value) == ("pass", 1200.0)
    assert v.inputs["devices"] == ["local"] and v.inputs["exempt"] == ["qemu-1"] and NOTE in v.detail


def test_only_emulated_devices_leave_a_timing_gate_unmeasured() -> None:
    only_boards = view("qemu-1", "qemu-2", devices=("qemu-1", "qemu-2"))
    for scope in ("each", "all", "tag:qemu"):
        verdicts = evaluate([gate("fps.p50", ">=", 1, scope=scope)], only_boards)
        assert verdicts and all(v.verdict == "missing" and v.value is None for v in verdicts), scope
        assert all("no device of scope" in v.detail and "unmeasured" in v.detail for v in verdicts)


def test_a_tag_with_only_the_emulated_board_is_unmeasured_even_beside_a_real_device() -> None:
    [v] = evaluate([gate("wall_s", "<=", 100, scope="tag:qemu")], view("qemu-1"))
    assert v.verdict == "missing" and NOTE in v.detail


def test_quality_and_consistency_judge_the_emulated_board_like_any_device() -> None:
    mismatch = RunView(
        devices={"local": [], "qemu-1": []},
        jobs=[job("local", 1200, sha="x"), job("qemu-1", 8, sha="y", psnr=20.0)],
        emulated=frozenset({"qemu-1"}),
    )
    psnr = {v.scope_key: v.verdict for v in evaluate([gate("psnr_yuv", ">=", 30)], mismatch)}
    assert psnr == {"local": "pass", "qemu-1": "fail"}
    [same] = evaluate([gate("consistency", "==", "bitexact", scope="all")], mismatch)
    assert same.verdict == "fail"


# -- from the store, through the CLI ------------------------------------------------------------------


def stored_run(db: Path, suite: Suite) -> str:
    """A finished run of local (x86_64) and qemu-1 (an emulated aarch64 board, as its session records it)."""
    store = Store(db)
    run_id = "20261201-000000-emuemu"
    store.start_run(run_id, suite_name=suite.name, suite_digest="d", suite_json=suite.model_dump_json(),
                    bundle_name="b", bundle_version="1", bundle_digest="x", host="h", farm_version="0",
                    conventions={})  # fmt: skip
    for device, fps in (("local", 900.0), ("qemu-1", 7.5)):
        row = {"device_id": device, "role": "test", "sequence": "s", "rate_kbps": 150, "repeat": 0, "status": "ok",
               "bitstream_sha": "b", "bitstream_bytes": 100, "source_sha": "s", "output_sha": "same", "frames": 10,
               "frame_times_ns": None, "started_at": 0.0, "finished_at": 1.0}  # fmt: skip
        store.add_job(run_id, row, [Measurement("fps.p50", fps, "fps", "per-frame", None)])
    store.add_device(run_id, "local", "linux", "linux-x86_64", ["host"], {"arch": "x86_64"}, "ok", None)
    props = {"arch": "aarch64", "cpu_timing": EMULATED_NOTE}
    store.add_device(run_id, "qemu-1", "linux", "linux-aarch64", ["qemu"], props, "ok", None)
    store.finish_run(run_id, "complete", {})
    store.close()
    return run_id


def test_farm_gate_on_a_stored_run_with_an_emulated_board(tmp_path: Path) -> None:
    sequence = {"id": "s", "generate": {"source": "testsrc2", "width": 64, "height": 64, "frames": 4}}
    suite = Suite.model_validate(
        {"name": "smoke", "sequences": [sequence], "rates_kbps": [150],
         "gates": [{"metric": "fps.p50", "op": ">=", "value": 30, "scope": "each"},
                   {"metric": "failures", "op": "==", "value": 0, "scope": "all"}]}
    )  # fmt: skip
    db = tmp_path / "results.db"
    run_id = stored_run(db, suite)
    assert load_view(Store.open_readonly(db), run_id).emulated == {"qemu-1"}
    junit = tmp_path / "gates.xml"
    result = farm("gate", run_id, "--junit", junit, store=db)
    assert result.code == 0, result.output
    assert "EXEMPT" in result.output and "EMULATED CPU" in result.output
    case = next(c for c in ET.parse(junit).iter("testcase") if "qemu-1" in c.get("classname", ""))
    skipped = case.find("skipped")
    assert skipped is not None and skipped.get("message") == NOTE
    assert ET.parse(junit).getroot().find("testsuite").get("skipped") == "1"  # type: ignore[union-attr]
    stored = {v["scope_key"]: v["verdict"] for v in Store.open_readonly(db).gate_verdicts(run_id)}
    assert stored == {"local": "pass", "qemu-1": "exempt", "all": "pass"}
    runs = farm("runs", "--json", tmp_path / "runs.json", store=db)
    assert runs.code == 0 and json.loads((tmp_path / "runs.json").read_text())["runs"][0]["passed"] is True
