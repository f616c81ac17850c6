"""Every metric the farm produces, gates on and exports is declared once in farm/measures.py, with one unit.

The producers are run for real (farm/session/measure.py's timing, power, thermal and battery; farm/scoring.py's
quality scores and BD-rate rows) and what they emit is checked against the declarations, so a new name or a unit
that drifts fails here instead of becoming a gate that is forever ``missing`` or a column in another unit.
"""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pytest
from pydantic import ValidationError

from farm import measures, scoring
from farm.bundle import open_bundle
from farm.cluster.metrics import AgentCollector
from farm.complexity.record import record_complexity
from farm.config.inventory import load_inventory
from farm.config.suite import Gate, Suite
from farm.devices.base import DecodeOutcome
from farm.measures import MEASURES, Measurement, UndeclaredMeasure, aggregate, measurement
from farm.media import Source
from farm.metrics import names
from farm.metrics.collector import HealthCollector, StoreCollector
from farm.metrics.results import MEASUREMENTS, ResultIndex, open_readonly
from farm.power.battery import BatteryState
from farm.power.sampler import PowerSample
from farm.quality.score import QualityScores
from farm.session import measure as session_measure
from farm.store import Store
from farm.timing import frame_stats
from tests.conftest import EXAMPLES, ROOT


def assert_declared(produced: list[Measurement]) -> None:
    """Each measurement's name is a declared per-job measurement and carries the declared unit."""
    assert produced
    for m in produced:
        declared = measures.measure(m.name)  # raises UndeclaredMeasure for a new name
        assert declared.stored == "measurement", m.name
        assert m.unit == declared.unit, f"{m.name}: produced in {m.unit!r}, declared in {declared.unit!r}"


# -- producers ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("times", "wall_ns", "frames"),
    [([10_000_000] * 20, 300_000_000, 20), ([], 500_000_000, 50), ([], None, 0)],
    ids=["per-frame", "wall-clock", "none"],
)
def test_timing_emits_only_declared_measurements(times: list[int], wall_ns: int | None, frames: int) -> None:
    emitted = frame_stats(times, warmup=2, sequence_fps=30, wall_ns=wall_ns, frames=frames).as_metrics()
    assert set(emitted) <= set(MEASURES)
    quantiles = {f"{base}.p{q}" for base in ("fps", "frame_time_ms") for q in measures.FRAME_QUANTILES}
    assert quantiles <= set(emitted)
    assert all(MEASURES[name].stored == "measurement" and MEASURES[name].level == "job" for name in emitted)


def test_thermal_and_battery_measurements_are_declared_with_their_units() -> None:
    assert_declared(session_measure.thermal([61.0, 63.5], 55.0, 60.0, 80.0))
    assert_declared(session_measure.thermal([], None, None, None))
    before = BatteryState("Discharging", 0.8, 30.5)
    assert_declared(session_measure.battery(before, BatteryState("Charging", 0.79, 31.0), "on the charger"))
    assert_declared(session_measure.battery(BatteryState(None, None, None), None, None))


def test_timing_and_power_measurements_of_a_job_are_declared_with_their_units() -> None:
    suite = cast(Suite, SimpleNamespace(warmup_frames=1))
    outcome = DecodeOutcome(0, False, 1_000_000_000, 2_000_000_000, "sha", 10, (20_000_000,) * 10, "")
    assert_declared(session_measure.timing(outcome, 10, suite, 30.0))
    samples = [PowerSample(t / 10, 2.0) for t in range(0, 31)]
    metered = session_measure.PowerContext("fake meter, W", None, "on the device", 0.5)
    measured = session_measure.power(outcome, 10, samples, metered, 10.0, None)
    assert_declared(measured)
    assert {m.name for m in measured} == {"power_w", "energy_j", "energy_per_frame_j", "baseline_w"}
    assert all(m.value is not None for m in measured)
    no_meter = session_measure.PowerContext(None, "no hwmon", "", None)
    assert_declared(session_measure.power(outcome, 10, [], no_meter, 10.0, None))


def test_quality_scores_are_declared_with_their_units(tmp_path: Path) -> None:
    summary = [f.name for f in fields(QualityScores) if f.name not in {"frames", "per_frame", "conventions"}]
    assert set(scoring.SUMMARY) <= set(MEASURES) and set(scoring.SUMMARY_FIELDS) == set(summary)
    values: dict[str, Any] = {name: 40.0 for name in summary}
    scores = QualityScores(frames=10, per_frame=(), conventions={"psnr": "c"}, **values)
    source = Source("s1", tmp_path / "s.y4m", "src", 64, 48, 30.0, 10)
    row = {"bitstream_bytes": 1000, "status": "ok", "output_sha": "out"}
    assert_declared(scoring.quality_measurements(row, source, {("out", "src"): scores}))
    assert_declared(scoring.quality_measurements(row, source, {("out", "src"): "ffmpeg failed"}))
    assert {m.name for m in scoring.quality_measurements(row, source, {})} == {"bpp", *scoring.SUMMARY}


def test_bd_rate_rows_are_declared_per_device_metrics(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    store.start_run("r", suite_name="s", suite_digest="d", suite_json="{}", bundle_name="b", bundle_version="1",
                    bundle_digest="x", host="h", farm_version="0", conventions={})  # fmt: skip
    scoring.bd_rates(store, "r", ["local"], [], {})
    bundle = open_bundle(EXAMPLES / "hevc-x265", tmp_path / "cache")
    device = load_inventory(ROOT / "devices.yaml").devices[0]
    record_complexity(store, "r", bundle, [device], [(64, 64)])
    rows = store.run_metrics("r")
    assert rows and {row["name"] for row in rows} == set(measures.device_metrics())
    for row in rows:
        declared = measures.measure(row["name"])
        assert declared.stored == "run_metric" and declared.level == "run-device" and row["unit"] == declared.unit


# -- gates -------------------------------------------------------------------------------------------------------


def accepted(metric: str) -> bool:
    value: float | str = "bitexact" if metric == "consistency" else 1.0
    try:
        Gate(metric=metric, op="==" if metric == "consistency" else ">=", value=value)
    except ValidationError:
        return False
    return True


def test_the_suite_accepts_exactly_the_declared_gate_metrics() -> None:
    undeclared = ("fps.p42", "psnr", "bd_rate.ssim", "frames_total", "energy")
    assert {name for name in (*MEASURES, *undeclared) if accepted(name)} == set(measures.gate_metrics())
    assert {"fps.p50", "energy_per_frame_j", "bd_rate.psnr_yuv", "consistency", "failures"} <= set(
        measures.gate_metrics()
    )


def baseline_accepted(metric: str) -> bool:
    try:
        Gate(metric=metric, op=">=", baseline="released")
    except ValidationError:
        return False
    return True


def test_baseline_gates_take_exactly_the_continuous_per_job_metrics() -> None:
    allowed = {name for name in measures.gate_metrics() if baseline_accepted(name)}
    assert allowed == set(measures.baseline_metrics())
    for name in allowed:
        m = MEASURES[name]
        assert m.level == "job" and m.stored == "measurement" and m.better is not None, name


# -- exporter ----------------------------------------------------------------------------------------------------


def test_every_exported_family_comes_from_a_declared_metric(tmp_path: Path) -> None:
    declared = {f.family_name: f for f in measures.families()}
    Store(tmp_path / "r.db")
    # every family each collector can build (an empty store builds them all, without samples)
    results = StoreCollector(ResultIndex(open_readonly(tmp_path / "r.db")))
    built = [*results._result_families(), *results._counter_families(), *results._run_families()]
    built += HealthCollector(dict, {"local": ("linux", "linux-x86_64", "local", False)}).collect()
    built += AgentCollector(list).collect()
    emitted = {f.name: f for f in built}
    assert set(emitted) == set(declared)
    for name, family in emitted.items():
        assert family.documentation == declared[name].help and family.type == declared[name].kind, name
    assert set(names.ALL_SPECS) == set(measures.families())


def test_result_gauges_are_the_exported_job_measurements() -> None:
    for name in MEASUREMENTS:
        export = MEASURES[name].export
        assert export is not None and export.family in names.RESULT_SPECS, name
    # a family shared by several metrics tells them apart by its last label, once each
    for family in measures.families():
        members = measures.exported_as(family)
        if len(members) > 1:
            labels = [m.export.label for m in members if m.export is not None]
            assert None not in labels and len(set(labels)) == len(labels), family.name


# -- the helper a device session calls ---------------------------------------------------------------------------


def test_measurement_fills_the_declared_unit_and_refuses_what_is_not_a_job_measurement() -> None:
    assert measurement("power_w", 1.5, "meter") == Measurement("power_w", 1.5, "W", "meter", None)
    assert measurement("temp_max_c", None, "zones", "no readable zone").missing_reason == "no readable zone"
    assert measurement("bpp", 0.1, "c", "ignored when measured").missing_reason is None
    assert measurement("ssim", None, "c").missing_reason == "no reason recorded"
    with pytest.raises(UndeclaredMeasure, match=r"'fps\.p95' is not declared"):
        measurement("fps.p95", 30.0, "c")
    with pytest.raises(ValueError, match="not a per-job measurement"):
        measurement("bd_rate.psnr_yuv", -0.1, "c")


def test_aggregate_follows_the_declared_summary_and_its_missing_rule() -> None:
    assert aggregate("fps", [10.0, 30.0, 20.0]) == 20.0
    assert aggregate("fps", [10.0, None]) is None  # a median of what happened to be measured is another run
    assert aggregate("temp_max_c", [50.0, None, 70.0]) == 70.0  # the hottest seen is still true
    assert aggregate("throttled", [1.0, 0.0, None, 1.0]) == 2.0
    assert aggregate("fps", []) is None and aggregate("temp_max_c", []) is None
    with pytest.raises(ValueError, match="not summarised from single values"):
        aggregate("frame_time_s", [0.1])


def test_every_declaration_is_consistent() -> None:
    for name, m in MEASURES.items():
        assert m.name == name and m.help
        assert not m.baseline or m.gate, f"{name}: a baseline-gated metric must be a gate metric"
        assert m.column is None or m.level == "job", name
        if m.stored == "measurement":
            assert m.level == "job", name
