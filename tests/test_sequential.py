"""The sequential decision of adaptive baseline gates, its boundaries, the repeats it asks for, and its config."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from farm.adaptive import extra_jobs, more_repeats, wanted_repeats
from farm.boundaries import information, nominal_levels
from farm.config.suite import load_suite
from farm.errors import InputError
from farm.gates.verdict import Verdict
from farm.sequential import Sequential, decide, look_at, schedule
from farm.session.spec import FileRef, JobKey, JobSpec
from farm.stats import normalise
from farm.store import open_store
from tests.conftest import write
from tests.store_fixtures import JOB, start


def test_looks_every_min_repeats_and_max_last() -> None:
    assert schedule(10, 40) == (10, 20, 30, 40)
    assert schedule(5, 12) == (5, 10, 12)
    assert schedule(3, 3) == (3,)
    look = look_at(25, 10, 40, 0.01, 1, 10)
    assert (look.index, look.looks, look.next_repeats) == (2, 4, 30)
    assert look_at(4, 5, 20, 0.01, 1, 10).index == 0
    last = look_at(40, 10, 40, 0.01, 1, 10)
    assert last.next_repeats is None and last.beta == 0.0  # the last look decides by the fixed rule


@pytest.mark.parametrize("base_values", [10, 40])
def test_the_boundaries_spend_exactly_alpha_over_correlated_looks(base_values: int) -> None:
    """Simulate the looks' z statistics (nested run means against one shared baseline) and count crossings."""
    points = [5, 10, 15, 20]
    levels = nominal_levels(0.05, information(points, base_values))
    assert all(0 < lv < 0.05 for lv in levels) and sum(levels) > 0.05  # correlation: more than Bonferroni
    rng = np.random.default_rng(7)
    trials = 200_000
    base = rng.normal(size=trials) / np.sqrt(base_values)
    runs = np.cumsum(rng.normal(size=(trials, points[-1])), axis=1)
    crossed = np.zeros(trials, dtype=bool)
    from scipy.stats import norm

    for n, level in zip(points, levels, strict=True):
        z = (runs[:, n - 1] / n - base) / np.sqrt(1 / n + 1 / base_values)
        crossed |= z > norm.isf(level)
    assert abs(crossed.mean() - 0.05) < 0.003, crossed.mean()


def run_looks(run: list[float], base: list[float], lo: int, hi: int, higher: bool = True) -> Sequential:
    """Look at the run's first repeats look by look, as the farm adds them, until the decision stops."""
    for n in schedule(lo, hi):
        norm = normalise({"s": run[:n]}, {"s": base})
        d = decide(norm.run, norm.base, repeats=n, min_repeats=lo, max_repeats=hi, strata=1, higher_is_better=higher,
                   alpha=0.01, min_change=0.02)  # fmt: skip
        if d.stopped is not None:
            return d
    raise AssertionError("the last look must stop")


def test_a_clear_regression_fails_at_the_first_look_that_can_show_it() -> None:
    rng = np.random.default_rng(1)
    base = list(rng.normal(100, 1, 10))
    d = run_looks(list(rng.normal(90, 1, 40)), base, 10, 40)
    assert (d.verdict, d.look.index, d.stopped) == ("fail", 1, "decided at look 1")
    # lower is better (power, frame time): the worse direction is up
    d = run_looks(list(rng.normal(110, 1, 40)), base, 10, 40, higher=False)
    assert (d.verdict, d.look.index) == ("fail", 1)


def test_a_clean_run_passes_early_when_the_baseline_is_precise_enough() -> None:
    rng = np.random.default_rng(2)
    d = run_looks(list(rng.normal(100, 0.5, 40)), list(rng.normal(100, 0.5, 40)), 10, 40)
    assert (d.verdict, d.look.index) == ("pass", 1)
    assert d.p_equivalence is not None and d.p_equivalence < d.look.beta


def test_too_few_values_at_first_then_more_repeats_decide() -> None:
    rng = np.random.default_rng(3)
    base = list(rng.normal(100, 1, 4))
    first = run_looks(list(rng.normal(80, 1, 2)), base, 2, 8)  # one look only: nothing can be shown
    assert first.verdict == "inconclusive" and first.stopped == "max reached"
    d = run_looks(list(rng.normal(80, 1, 8)), base, 2, 8)
    assert d.verdict == "fail" and d.look.index > 1 and d.stopped == f"decided at look {d.look.index}"


def test_an_undecidable_change_runs_to_max_and_the_fixed_rule_decides() -> None:
    rng = np.random.default_rng(4)
    # 3 % worse under 15 % noise: neither shown worse than 2 % nor shown less than 2 % worse
    d = run_looks(list(rng.normal(97, 15, 30)), list(rng.normal(100, 15, 10)), 10, 30)
    assert d.look.index == d.look.looks == 3 and d.stopped == "max reached"
    assert d.verdict == (d.comparison.verdict if d.comparison else None)
    assert "max reached" in d.reason


def test_below_the_first_look_it_asks_for_min_repeats() -> None:
    d = decide([1.0, 1.1], [1.0, 0.9, 1.05], repeats=1, min_repeats=5, max_repeats=20, strata=2, higher_is_better=True,
               alpha=0.01, min_change=0.02)  # fmt: skip
    assert d.verdict == "inconclusive" and d.stopped is None and d.as_dict()["sequential"]["next_repeats"] == 5


def verdict(verdict: str, devices: list[str], next_repeats: int | None) -> Verdict:
    seq = {"look": 1, "looks": 3, "repeats": 2, "next_repeats": next_repeats, "stopped": None}
    return Verdict(0, "fps", ">=", "baseline(released)", "each", devices[0], "median", None, verdict, "",
                   {"devices": devices, "sequential": seq})  # fmt: skip


def job(index: int, rate: float, repeat: int, role: str = "test") -> JobSpec:
    return JobSpec(index, JobKey(role, "clip", rate, repeat), "b", FileRef("x", "x.ivf", 1), "s", 30.0, 100)


def test_only_undecided_gates_ask_for_repeats_and_only_for_their_devices() -> None:
    verdicts = [verdict("inconclusive", ["a"], 4), verdict("inconclusive", ["a", "b"], 6),
                verdict("pass", ["c"], None), verdict("inconclusive", ["d"], None)]  # fmt: skip
    assert wanted_repeats(verdicts) == {"a": 6, "b": 6}
    jobs = [job(0, 100, 0, "anchor"), job(1, 100, 0), job(2, 200, 0), job(3, 100, 1), job(4, 200, 1)]
    new, need = extra_jobs(jobs, {"a": 4, "b": 3})
    assert sorted((j.key.rate_kbps, j.key.repeat) for j in new) == [(100, 2), (100, 3), (200, 2), (200, 3)]
    assert sorted(j.index for j in new) == [5, 6, 7, 8]  # new job folders on the device
    assert all(j.key.role == "test" for j in new)
    assert {k.repeat for d, k in need if d == "b"} == {0, 1, 2} and {k.repeat for d, k in need if d == "a"} == {
        0, 1, 2, 3}  # fmt: skip
    assert extra_jobs(jobs, {}) == ([], set())


SUITE = """name: g
sequences:
  - id: a
    generate: {{source: testsrc2, width: 64, height: 64, frames: 3}}
rates_kbps: [100]
gates:
{gates}
"""


def test_repeats_are_validated_with_file_line_and_field(tmp_path: Path) -> None:
    gates = """  - {metric: fps, op: ">=", baseline: released, repeats: {min: 5, max: 30}}
  - {metric: fps, op: ">=", value: 3, repeats: {min: 5, max: 30}}
  - {metric: fps, op: ">=", baseline: released, repeats: {min: 10, max: 5}}
  - {metric: fps, op: ">=", baseline: released, repeats: {min: 1, max: 5}}
  - {metric: fps, op: ">=", baseline: released, repeats: {min: 3}}
  - {metric: fps, op: ">=", baseline: released, repeats: {min: 3, max: 9, step: 2}}"""
    path = write(tmp_path / "g.yaml", SUITE.format(gates=gates))
    with pytest.raises(InputError) as exc:
        load_suite(path)
    got = [str(p) for p in exc.value.problems]
    assert len(got) == 5, got
    assert got[0].startswith(f"{path}:8: gates[1].repeats: 'repeats' only applies to a gate with a 'baseline'")
    assert got[1].startswith(f"{path}:9: gates[2].repeats: max (5) must be at least min (10)")
    assert got[2].startswith(f"{path}:10: gates[3].repeats.min: ")
    assert got[3].startswith(f"{path}:11: gates[4].repeats.max: ")
    assert got[4].startswith(f"{path}:12: gates[5].repeats.step: ")
    assert exc.value.exit_code == 2
    ok = load_suite(write(tmp_path / "ok.yaml", SUITE.format(gates=gates.splitlines()[0])))
    repeats = ok.gates[0].repeats
    assert repeats is not None and (repeats.min, repeats.max) == (5, 30)
    assert ok.gates[0].model_dump(mode="json", exclude_defaults=True)["repeats"] == {"min": 5, "max": 30}


@dataclass
class FakeOutcome:
    """What the loop reads of a RunOutcome; the runs themselves are recorded in a real store."""

    status: str
    verdicts: list[Verdict]


def test_the_loop_runs_each_look_once_as_an_attempt_and_stops_when_a_look_fails_its_jobs(
    tmp_path: Path,
) -> None:
    store = open_store(tmp_path / "r.db")
    start(store, "r1")
    jobs = [job(0, 100, 0), job(1, 100, 1)]
    for j in jobs:
        store.add_job("r1", JOB | {"device_id": "d", "sequence": "clip", "repeat": j.key.repeat}, [])
    store.finish_run("r1", "complete", {})
    calls: list[list[tuple[str, int]]] = []

    def rerun(all_jobs: list[JobSpec], skip: set[tuple[str, JobKey]]) -> FakeOutcome:
        todo = [("d", j.key.repeat) for j in all_jobs if ("d", j.key) not in skip]
        calls.append(todo)
        for _, rep in todo:  # the second look's last job fails: the gate then never gets its repeats
            failed = rep == 5
            store.add_job("r1", JOB | {"sequence": "clip", "repeat": rep, "status": "failed" if failed else "ok"}, [])
        store.finish_run("r1", "complete", {})
        return FakeOutcome("complete", [verdict("inconclusive", ["d"], 6)])  # 4, then 5 values: look 2

    first = FakeOutcome("complete", [verdict("inconclusive", ["d"], 4)])
    out = more_repeats(first, jobs, ["d"], store, "r1", rerun, lambda _: None)
    assert calls == [[("d", 2), ("d", 3)], [("d", 4), ("d", 5)]]  # the failed r5 is not run a third time
    assert out.status == "complete" and len(store.attempts("r1")) == 3
    assert more_repeats(FakeOutcome("interrupted", first.verdicts), jobs, ["d"], store, "r1", rerun, print).status == (
        "interrupted")  # fmt: skip
    assert len(calls) == 2  # a stopped run is left for --resume
