"""Gate verdicts: pass, fail, missing and inconclusive (never passed), over each device, a tag, or all devices."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.config.suite import Gate
from farm.gates import Baseline, JobView, OutputDiff, RunView, StoreBaselines, evaluate, load_view
from farm.store import Store


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


# -- baseline gates ---------------------------------------------------------------------------------------


class Fixed:
    """A baseline source over fixed runs: the same protocol the store-backed one follows."""

    def __init__(self, runs: dict[str, RunView]) -> None:
        self.runs = runs

    def resolve(self, spec: str, view: RunView) -> Baseline | str:
        if spec not in self.runs:
            return f"no run {spec}"
        return Baseline(spec, f"run {spec}", self.runs[spec])


def fps_run(device_fps: dict[str, list[float]], *, rates: tuple[float, ...] = (100,)) -> RunView:
    jobs = [
        job(device, fps, rate=rate, repeat=i)
        for device, values in device_fps.items()
        for rate in rates
        for i, fps in enumerate(values)
    ]
    return RunView(devices={d: ["phones"] if d != "c" else [] for d in device_fps}, jobs=jobs)


BASE = [100.0, 101.0, 99.0, 102.0, 98.0, 100.5, 99.5, 101.5, 98.5, 100.2]
SLOWER = [v * 0.9 for v in BASE]


def baseline_gate(op: str = ">=", scope: str = "each", metric: str = "fps") -> Gate:
    return Gate.model_validate({"metric": metric, "op": op, "baseline": "base", "scope": scope})


def test_baseline_gate_fails_a_significant_large_regression_with_every_number_kept() -> None:
    base = fps_run({"a": BASE, "b": BASE})
    run = fps_run({"a": SLOWER, "b": BASE})
    a, b = evaluate([baseline_gate()], run, Fixed({"base": base}))
    assert (a.scope_key, a.verdict, b.verdict) == ("a", "fail", "pass")
    assert a.value == pytest.approx(-0.10, abs=0.005) and a.threshold == "baseline(base)"
    assert "worse" in a.detail and "run base" in a.detail
    assert a.inputs["baseline_run"] == "base" and a.inputs["p_value"] < 0.01
    assert a.inputs["run_values"] == {"a/s@100kbps": SLOWER}
    assert a.inputs["baseline_values"] == {"a/s@100kbps": BASE}
    assert a.gate == {"metric": "fps", "op": ">=", "baseline": "base"}


def test_baseline_gate_pools_a_tag_and_all_over_strata() -> None:
    base = fps_run({"a": BASE, "b": [v * 2 for v in BASE], "c": BASE}, rates=(100, 200))
    run = fps_run({"a": SLOWER, "b": [v * 2 * 0.9 for v in BASE], "c": BASE}, rates=(100, 200))
    [tag] = evaluate([baseline_gate(scope="tag:phones")], run, Fixed({"base": base}))
    assert tag.verdict == "fail" and tag.inputs["n_run"] == 40 and len(tag.inputs["compared"]) == 4
    assert tag.value == pytest.approx(-0.10, abs=0.005)  # b runs at twice a's rate: normalised, not mixed
    [everything] = evaluate([baseline_gate(scope="all")], fps_run({"c": BASE}), Fixed({"base": base}))
    assert everything.verdict == "pass"


def test_lower_is_better_metrics_regress_upwards() -> None:
    base = RunView(devices={"a": []}, jobs=[job("a", 1, power=p, repeat=i) for i, p in enumerate(BASE)])
    hotter = RunView(devices={"a": []}, jobs=[job("a", 1, power=p * 1.1, repeat=i) for i, p in enumerate(BASE)])
    [v] = evaluate([baseline_gate(op="<=", metric="power_w")], hotter, Fixed({"base": base}))
    assert v.verdict == "fail" and v.value == pytest.approx(0.10, abs=0.005)
    [v] = evaluate([baseline_gate(op=">=", metric="power_w")], hotter, Fixed({"base": base}))
    assert v.verdict == "pass"


def test_too_few_repeats_is_inconclusive_with_the_numbers() -> None:
    base = fps_run({"a": BASE[:3]})
    [v] = evaluate([baseline_gate()], fps_run({"a": SLOWER[:3]}), Fixed({"base": base}))
    assert v.verdict == "inconclusive" and v.value is None
    assert "too few values" in v.detail and v.inputs["min_possible_p"] == pytest.approx(0.05)


def test_no_baseline_to_compare_with_is_inconclusive_and_says_why() -> None:
    run = fps_run({"a": BASE})
    [v] = evaluate([baseline_gate()], run, Fixed({}))
    assert v.verdict == "inconclusive" and "no run base" in v.detail
    [v] = evaluate([baseline_gate()], run)  # evaluated without a store to look the baseline up in
    assert v.verdict == "inconclusive" and "no result store" in v.detail


def test_a_device_the_baseline_never_ran_cannot_pass() -> None:
    base = fps_run({"a": BASE})
    run = fps_run({"a": BASE, "b": BASE})
    [pooled] = evaluate([baseline_gate(scope="all")], run, Fixed({"base": base}))
    assert pooled.verdict == "inconclusive" and "b/s@100kbps" in pooled.detail
    # ...but a regression where there is a baseline still fails
    [pooled] = evaluate([baseline_gate(scope="all")], fps_run({"a": SLOWER, "b": BASE}), Fixed({"base": base}))
    assert pooled.verdict == "fail"
    [only_b] = evaluate([baseline_gate()], run, Fixed({"base": base}))[1:]
    assert only_b.scope_key == "b" and only_b.verdict == "inconclusive"


def test_unmeasured_values_in_the_run_are_missing_not_compared() -> None:
    base = RunView(devices={"a": []}, jobs=[job("a", 1, power=p, repeat=i) for i, p in enumerate(BASE)])
    run = RunView(devices={"a": []}, jobs=[job("a", 1, power=None, repeat=i) for i in range(10)])
    [v] = evaluate([baseline_gate(op="<=", metric="power_w")], run, Fixed({"base": base}))
    assert v.verdict == "missing" and "not measured in 10 job(s)" in v.detail


def test_store_baselines_resolve_released_and_named_runs(tmp_path: Path) -> None:
    store = Store(tmp_path / "r.db")
    for run_id in ("20260101-000000-aaaaaa", "20260102-000000-bbbbbb"):
        store.start_run(run_id, suite_name="smoke", suite_digest="d", suite_json="{}", bundle_name="b",
                        bundle_version="1", bundle_digest="x", host="h", farm_version="0", conventions={})  # fmt: skip
        store.finish_run(run_id, "complete", {})
    source = StoreBaselines(store)
    view = load_view(store, "20260102-000000-bbbbbb")
    assert "no released run of suite 'smoke'" in str(source.resolve("released", view))
    store.add_release(tag="v1", version="v1", run_id="20260101-000000-aaaaaa", suite_name="smoke",
                      bundle_digest="x", evaluation=1, repo="/r", commit_sha="c", manifest_json="{}",
                      manifest_sha256="m")  # fmt: skip
    found = source.resolve("released", view)
    assert isinstance(found, Baseline) and found.run_id == "20260101-000000-aaaaaa"
    assert found.label == "release v1 (run 20260101-000000-aaaaaa)"
    named = source.resolve("20260101", view)
    assert isinstance(named, Baseline) and named.label == "run 20260101-000000-aaaaaa"
    assert "is this run itself" in str(source.resolve("20260102", view))
    assert "no single run matches" in str(source.resolve("2026", view))


# -- consistency within a tolerance -----------------------------------------------------------------------


def diff(max_abs: float | None, psnr: float | None, detail: str | None = None) -> OutputDiff:
    return OutputDiff(3, max_abs, psnr, detail)


FLOAT_RUN = RunView(
    devices={"x86": [], "arm": [], "arm2": []},
    jobs=[job("x86", 1, sha="p"), job("arm", 1, sha="q"), job("arm2", 1, sha="q")],
    diffs={("p", "q"): diff(2.0, 71.5)},
)


def test_tolerance_gates_use_the_stored_differences_and_name_who_disagrees() -> None:
    small, psnr, strict, exact = evaluate(
        [gate("consistency.max_abs_diff", "<=", 2, scope="all"), gate("consistency.psnr_db", ">=", 60, scope="all"),
         gate("consistency.max_abs_diff", "<=", 1, scope="all"), gate("consistency", "==", "bitexact", scope="all")],
        FLOAT_RUN,
    )  # fmt: skip
    assert (small.value, small.verdict, psnr.value, psnr.verdict) == (2.0, "pass", 71.5, "pass")
    assert strict.verdict == "fail" and "s@100kbps: x86 vs arm,arm2: max |diff| 2" in strict.detail
    assert exact.verdict == "fail" and "on x86" in exact.detail and "on arm,arm2" in exact.detail
    assert strict.inputs["pairs"][0]["a_devices"] == ["x86"]


def test_tolerance_gate_within_devices_that_agree_is_exact() -> None:
    [v] = evaluate([gate("consistency.psnr_db", ">=", 60, scope="tag:none")], FLOAT_RUN)
    assert v.verdict == "missing"  # empty scope
    view = RunView(devices={"arm": [], "arm2": []}, jobs=FLOAT_RUN.jobs[1:], diffs=FLOAT_RUN.diffs)
    [v] = evaluate([gate("consistency.psnr_db", ">=", 60, scope="all")], view)
    assert (v.value, v.verdict) == (100.0, "pass") and "identically" in v.detail


def test_tolerance_gate_without_a_stored_comparison_is_missing() -> None:
    view = RunView(devices=FLOAT_RUN.devices, jobs=FLOAT_RUN.jobs)
    [v] = evaluate([gate("consistency.max_abs_diff", "<=", 255, scope="all")], view)
    assert v.verdict == "missing" and "no comparison stored" in v.detail


def test_outputs_that_cannot_be_laid_side_by_side_fail_a_tolerance() -> None:
    view = RunView(devices=FLOAT_RUN.devices, jobs=FLOAT_RUN.jobs,
                   diffs={("p", "q"): diff(None, None, "not comparable: 64x64x3 vs 64x64x2")})  # fmt: skip
    [v] = evaluate([gate("consistency.max_abs_diff", "<=", 255, scope="all")], view)
    assert (v.value, v.verdict) == ("incomparable", "fail") and "64x64x2" in v.detail


def test_tolerance_gate_fails_a_disagreement_even_with_bitstreams_decoded_once() -> None:
    jobs = [*FLOAT_RUN.jobs, job("x86", 1, seq="once", sha="z")]
    view = RunView(devices=FLOAT_RUN.devices, jobs=jobs, diffs=FLOAT_RUN.diffs)
    tight, loose = evaluate([gate("consistency.max_abs_diff", "<=", limit, scope="all") for limit in (1, 9)], view)
    assert tight.verdict == "fail"
    assert loose.verdict == "missing" and "once@100kbps" in loose.detail
