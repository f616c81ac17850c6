"""Gate verdicts: pass, fail, and missing (never passed), over each device, a tag, or all devices."""

from __future__ import annotations

from farm.config.suite import Gate
from farm.gates import JobView, RunView, evaluate


def job(device: str, fps: float | None, *, seq: str = "s", rate: float = 100, sha: str = "a", status: str = "ok",
        repeat: int = 0, power: float | None = None) -> JobView:  # fmt: skip
    return JobView(device, "test", seq, rate, repeat, status, sha if status == "ok" else None,
                   {"fps": fps, "power_w": power}, None if status == "ok" else "boom")  # fmt: skip


def gate(metric: str, op: str, value: float | str, scope: str = "each", stat: str = "median") -> Gate:
    return Gate.model_validate({"metric": metric, "op": op, "value": value, "scope": scope, "stat": stat})


VIEW = RunView(
    devices={"a": ["fast"], "b": ["fast"], "c": []},
    jobs=[job("a", 60), job("a", 50, repeat=1), job("b", 40), job("b", 20, repeat=1), job("c", 10)],
)


def test_each_device_gets_its_own_verdict() -> None:
    verdicts = evaluate([gate("fps", ">=", 30)], VIEW)
    assert [(v.scope_key, v.value, v.verdict) for v in verdicts] == [
        ("a", 55.0, "pass"), ("b", 30.0, "pass"), ("c", 10.0, "fail"),
    ]  # fmt: skip


def test_tag_and_all_pool_devices_with_the_declared_statistic() -> None:
    [tag] = evaluate([gate("fps", ">=", 45, scope="tag:fast")], VIEW)
    assert (tag.value, tag.verdict) == (45.0, "pass")
    [everything] = evaluate([gate("fps", ">", 15, scope="all", stat="min")], VIEW)
    assert (everything.value, everything.verdict) == (10.0, "fail")


def test_unmeasured_metric_is_missing_not_passed() -> None:
    [v] = evaluate([gate("power_w", "<=", 1000, scope="all")], VIEW)
    assert v.verdict == "missing" and v.value is None and "not measured" in v.detail


def test_partially_measured_is_missing() -> None:
    view = RunView(devices={"a": []}, jobs=[job("a", 60, power=2.0), job("a", 60, power=None, repeat=1)])
    [v] = evaluate([gate("power_w", "<=", 1000)], view)
    assert v.verdict == "missing"


def test_device_metric_missing_carries_the_reason() -> None:
    view = RunView(
        devices={"a": []}, jobs=[job("a", 1)], device_metrics={"a": {"bd_rate.psnr_yuv": (None, "no overlap")}}
    )
    [v] = evaluate([gate("bd_rate.psnr_yuv", "<=", 0)], view)
    assert v.verdict == "missing" and "no overlap" in v.detail


def test_failures_counts_failed_jobs() -> None:
    view = RunView(devices={"a": []}, jobs=[job("a", 60), job("a", None, status="failed")])
    [v] = evaluate([gate("failures", "==", 0, scope="all")], view)
    assert (v.value, v.verdict) == (1.0, "fail") and "boom" in v.detail


def test_consistency_names_the_disagreeing_devices() -> None:
    view = RunView(
        devices={"a": [], "b": []},
        jobs=[job("a", 1, sha="x"), job("b", 1, sha="x"), job("a", 1, seq="t", sha="y"), job("b", 1, seq="t", sha="z")],
    )
    [v] = evaluate([gate("consistency", "==", "bitexact", scope="all")], view)
    assert v.verdict == "fail" and v.value == "mismatch"
    assert "t@100kbps" in v.detail and "on a" in v.detail and "on b" in v.detail


def test_consistency_needs_two_decodes_to_prove_anything() -> None:
    view = RunView(devices={"a": []}, jobs=[job("a", 1)])
    [v] = evaluate([gate("consistency", "==", "bitexact")], view)
    assert v.verdict == "missing"


def test_consistency_passes_when_every_decode_agrees() -> None:
    view = RunView(devices={"a": [], "b": []}, jobs=[job("a", 1), job("b", 1), job("a", 1, repeat=1)])
    [v] = evaluate([gate("consistency", "==", "bitexact", scope="all")], view)
    assert (v.value, v.verdict) == ("bitexact", "pass")


def test_empty_scope_is_missing() -> None:
    [v] = evaluate([gate("fps", ">=", 1, scope="tag:nosuch")], VIEW)
    assert v.verdict == "missing"


def test_consistency_with_failed_repeats_compares_nothing_and_is_missing() -> None:
    view = RunView(devices={"a": []}, jobs=[job("a", 1), job("a", None, status="failed", repeat=1)])
    [v] = evaluate([gate("consistency", "==", "bitexact", scope="all")], view)
    assert v.verdict == "missing" and "nothing to compare" in v.detail


def test_consistency_catches_nondeterminism_on_one_device() -> None:
    view = RunView(devices={"a": []}, jobs=[job("a", 1, sha="x"), job("a", 1, sha="y", repeat=1)])
    [v] = evaluate([gate("consistency", "==", "bitexact")], view)
    assert v.verdict == "fail" and "on a" in v.detail


def test_consistency_cannot_vouch_for_bitstreams_decoded_once() -> None:
    view = RunView(devices={"a": []}, jobs=[job("a", 1), job("a", 1, repeat=1), job("a", 1, seq="t")])
    [v] = evaluate([gate("consistency", "==", "bitexact")], view)
    assert v.verdict == "missing" and "t@100kbps" in v.detail


def test_a_run_that_never_finished_passes_nothing() -> None:
    view = RunView(devices={"a": []}, jobs=[job("a", 60)], status="running", planned_test_jobs={"a": 16})
    verdicts = evaluate([gate("fps", ">=", 30), gate("failures", "==", 0)], view)
    assert [v.verdict for v in verdicts] == ["missing", "missing"]
    assert "did not finish" in verdicts[0].detail


def test_planned_jobs_without_results_count_as_failures() -> None:
    view = RunView(devices={"a": [], "b": []}, jobs=[job("a", 60)], planned_test_jobs={"a": 1, "b": 3})
    [v] = evaluate([gate("failures", "==", 0, scope="all")], view)
    assert (v.value, v.verdict) == (3.0, "fail") and "3 planned jobs have no result" in v.detail
