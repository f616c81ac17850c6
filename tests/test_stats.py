"""The statistical decision: fail only on a change that is significant AND large; inconclusive in between."""

from __future__ import annotations

import math

import numpy as np
import pytest

from farm.stats import compare, hodges_lehmann, min_possible_p, normalise


def noisy(mean: float, cv: float, n: int, seed: int) -> list[float]:
    return list(np.random.default_rng(seed).normal(mean, mean * cv, n))


def test_same_distribution_passes_with_its_numbers() -> None:
    result = compare(noisy(1.0, 0.03, 40, 1), noisy(1.0, 0.03, 40, 2), higher_is_better=True)
    assert result.verdict == "pass"
    assert result.p_value is not None and result.p_value >= 0.01
    assert result.worse_by is not None and result.worse_by < 0.02
    assert (result.n_run, result.n_base, result.method) == (40, 40, "exact")


def test_clear_regression_fails_with_the_size_of_the_change() -> None:
    result = compare(noisy(0.90, 0.01, 10, 3), noisy(1.0, 0.01, 10, 4), higher_is_better=True)
    assert result.verdict == "fail"
    assert result.p_value is not None and result.p_value < 1e-4
    assert result.worse_by == pytest.approx(0.10, abs=0.01)
    assert "worse" in result.reason and "significant" in result.reason


def test_direction_follows_the_gate_lower_is_better() -> None:
    more_energy = noisy(1.10, 0.01, 10, 5)
    base = noisy(1.0, 0.01, 10, 6)
    assert compare(more_energy, base, higher_is_better=False).verdict == "fail"
    # the same change is an improvement when higher is better: never a failure
    improved = compare(more_energy, base, higher_is_better=True)
    assert improved.verdict == "pass" and improved.worse_by is not None and improved.worse_by < -0.05


def test_large_but_noisy_change_is_inconclusive_not_pass() -> None:
    base = [1.0, 0.8, 1.2, 0.9, 1.1, 1.0]
    result = compare([v * 0.95 for v in base], base, higher_is_better=True)
    assert result.worse_by is not None and result.worse_by >= 0.02
    assert result.verdict == "inconclusive"
    assert "not significant" in result.reason and "more repeats" in result.reason


def test_significant_but_small_change_is_inconclusive() -> None:
    result = compare(noisy(0.995, 0.01, 400, 9), noisy(1.0, 0.01, 400, 10), higher_is_better=True)
    assert result.verdict == "inconclusive"
    assert result.p_value is not None and result.p_value < 0.01
    assert result.worse_by is not None and 0 < result.worse_by < 0.02
    assert "below 2%" in result.reason


def test_too_few_repeats_can_never_be_significant_and_say_so() -> None:
    # 4 vs 4 values: the best possible one-sided p is 1/70 > 0.01, even for a 50 % regression
    result = compare([0.5, 0.51, 0.52, 0.53], [1.0, 1.01, 1.02, 1.03], higher_is_better=True)
    assert result.verdict == "inconclusive" and result.p_value is None
    assert result.min_possible_p == pytest.approx(1 / 70)
    assert "too few values" in result.reason
    assert compare([0.5], [1.0, 1.1, 1.2], higher_is_better=True).verdict == "inconclusive"


def test_identical_values_are_no_change() -> None:
    result = compare([1.0] * 8, [1.0] * 8, higher_is_better=True)
    assert result.verdict == "pass" and result.p_value == 1.0 and result.shift == 0.0
    assert result.method == "asymptotic"  # ties: the exact distribution does not apply


def test_hodges_lehmann_and_min_possible_p() -> None:
    assert hodges_lehmann([2.0, 3.0], [1.0]) == 1.5
    assert min_possible_p(5, 5) == pytest.approx(1 / 252)
    assert math.isclose(min_possible_p(10, 10), 1 / 184756)


def test_normalise_pools_strata_on_the_baseline_scale_and_names_the_rest() -> None:
    run = {"a/x@1": [20.0, 22.0], "a/y@1": [200.0], "a/new@1": [5.0], "a/zero@1": [1.0]}
    base = {"a/x@1": [20.0, 20.0, 24.0], "a/y@1": [100.0, 300.0], "a/gone@1": [1.0], "a/zero@1": [0.0, 0.0]}
    out = normalise(run, base)
    assert out.strata == ["a/x@1", "a/y@1"]
    assert out.run == [1.0, 1.1, 1.0]
    assert out.base == [1.0, 1.0, 1.2, 0.5, 1.5]
    assert (out.only_run, out.only_base, out.unusable) == (["a/new@1"], ["a/gone@1"], ["a/zero@1"])
