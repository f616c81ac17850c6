"""Is a run worse than its baseline? A decision that holds up on noisy repeats.

Frame rates and power on real devices wander by a few percent from one repeat to the next. A plain threshold
on the difference of medians ("2 % slower") fires on that noise alone in roughly one run in ten at ten
repeats, and a significance test alone flags changes too small to matter once there are many repeats. So a
change fails a gate only when both hold:

- it is **significant**: a one-sided Mann-Whitney U test (scipy.stats) says the run is worse with p < alpha.
  Rank-based, so one stalled repeat cannot dominate and no normality is assumed;
- it is **large**: the Hodges-Lehmann shift (median of every run-minus-baseline difference, the estimator
  that goes with the U test) is at least ``min_change`` of the baseline, in the worse direction.

Neither: pass. Only one of the two, or too few repeats for the test ever to reach p < alpha: inconclusive,
with the numbers, so a person (or more repeats) decides.

Values from different sequences, rate points and devices are not exchangeable (a 4K clip decodes slower than
a CIF one), so each value is first divided by the median of the baseline's values of the same stratum
(device, sequence, rate point). Both sides are then on one scale around 1.0 and pool into a single test; a
stratum only one side has is left out and named.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

ExactLimit = 400  # samples (both sides together) up to which the exact U distribution is used (no ties)


@dataclass(frozen=True)
class Comparison:
    """The decision and every number that produced it (stored with the verdict)."""

    verdict: Literal["pass", "fail", "inconclusive"]
    reason: str
    n_run: int
    n_base: int
    alpha: float
    min_change: float
    shift: float | None = None  # Hodges-Lehmann shift, as a fraction of the baseline (+ = run higher)
    worse_by: float | None = None  # the shift in the worse direction (+ = worse)
    p_value: float | None = None
    method: str | None = None
    min_possible_p: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict, "reason": self.reason, "n_run": self.n_run, "n_base": self.n_base,
            "alpha": self.alpha, "min_change": self.min_change, "shift": self.shift, "worse_by": self.worse_by,
            "p_value": self.p_value, "method": self.method, "min_possible_p": self.min_possible_p,
        }  # fmt: skip


def hodges_lehmann(run: Sequence[float], base: Sequence[float]) -> float:
    """Median of all pairwise differences run_i - base_j."""
    import numpy as np

    diffs = np.subtract.outer(np.asarray(run, dtype=np.float64), np.asarray(base, dtype=np.float64))
    return float(np.median(diffs))


def min_possible_p(n_run: int, n_base: int) -> float:
    """The smallest one-sided p the exact U test can give: every run value beyond every baseline value."""
    return 1.0 / math.comb(n_run + n_base, n_run)


def compare(
    run: Sequence[float], base: Sequence[float], *, higher_is_better: bool, alpha: float = 0.01,
    min_change: float = 0.02,
) -> Comparison:  # fmt: skip
    """Decide whether ``run`` is worse than ``base``; both are on the baseline's scale (see the module doc).

    ``min_change`` is a fraction of the baseline (the values are ratios to the baseline, so 0.02 = 2 %).
    """
    n, m = len(run), len(base)
    floor = min_possible_p(n, m) if n and m else 1.0
    if n < 2 or m < 2 or floor >= alpha:
        return Comparison(
            "inconclusive",
            f"too few values to test: {n} vs {m} can never reach p < {alpha:g} (best possible p {floor:.3g})",
            n, m, alpha, min_change, min_possible_p=floor,
        )  # fmt: skip
    shift = hodges_lehmann(run, base)
    worse_by = -shift if higher_is_better else shift
    ties = len(set(run) | set(base)) < n + m
    method = "exact" if not ties and n + m <= ExactLimit else "asymptotic"
    # worse = smaller values when higher is better: the alternative says run is stochastically less than base
    alternative = "less" if higher_is_better else "greater"
    # scipy.stats costs 1.2-1.4 s to import: only a run with a baseline gate pays it, once it evaluates it
    from scipy.stats import mannwhitneyu

    p = float(mannwhitneyu(run, base, alternative=alternative, method=method).pvalue)
    significant = p < alpha
    large = worse_by >= min_change
    numbers = f"{_pct(worse_by)} worse (p={p:.2g}, {n} vs {m} values)"
    if significant and large:
        verdict: Literal["pass", "fail", "inconclusive"] = "fail"
        reason = f"{numbers}: significant (p < {alpha:g}) and at least {min_change:.0%}"
    elif not significant and not large:
        verdict, reason = "pass", f"{numbers}: no significant change of {min_change:.0%} or more"
    elif significant:
        verdict = "inconclusive"
        reason = f"{numbers}: significant (p < {alpha:g}) but below {min_change:.0%}"
    else:
        verdict = "inconclusive"
        reason = f"{numbers}: at least {min_change:.0%} but not significant (p >= {alpha:g}); more repeats decide"
    return Comparison(verdict, reason, n, m, alpha, min_change, shift, worse_by, p, method, floor)


def _pct(fraction: float) -> str:
    return f"{fraction * 100:+.2f}%"


@dataclass
class Normalised:
    """Both sides as ratios to the baseline's median of the same stratum, and what could not be compared."""

    run: list[float] = field(default_factory=list)
    base: list[float] = field(default_factory=list)
    strata: list[str] = field(default_factory=list)
    only_run: list[str] = field(default_factory=list)
    only_base: list[str] = field(default_factory=list)
    unusable: list[str] = field(default_factory=list)  # baseline median not positive: no ratio


def normalise(run: Mapping[str, Sequence[float]], base: Mapping[str, Sequence[float]]) -> Normalised:
    """Divide every value by the baseline median of its stratum so that strata pool into one test."""
    import numpy as np

    out = Normalised()
    for key in sorted(set(run) | set(base)):
        if not base.get(key):
            out.only_run.append(key)
            continue
        if not run.get(key):
            out.only_base.append(key)
            continue
        scale = float(np.median(np.asarray(base[key], dtype=np.float64)))
        if not scale > 0:
            out.unusable.append(key)
            continue
        out.strata.append(key)
        out.run += [v / scale for v in run[key]]
        out.base += [v / scale for v in base[key]]
    return out
