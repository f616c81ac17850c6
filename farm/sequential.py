"""Adaptive repeats: decide a baseline gate at successive looks while the run adds repeats, false alarms bounded.

A fixed number of repeats is a guess: too few and a clean run comes out ``inconclusive`` (6 % of runs at 10
repeats and 3 % noise), too many and every release pays for them. A gate with ``repeats: {min, max}`` instead
looks at the data at fixed points of a schedule (``min``, ``2 min``, ... up to ``max`` repeats per stratum)
and stops as soon as one of two things is shown:

- **fail**: the fixed rule of :func:`farm.stats.compare` (one-sided Mann-Whitney U p below the look's nominal
  level, and a Hodges-Lehmann shift at least ``min_change`` worse). The nominal levels come from a
  group-sequential alpha-spending design (:mod:`farm.boundaries`) that accounts for the looks' correlation
  (nested repeats, one shared baseline), so the chance of a false alarm over all looks is the gate's ``alpha``;
- **pass**: the regression is shown to be smaller than ``min_change``: the one-sided U test of "at least
  ``min_change`` worse" (the run moved ``min_change`` in the good direction against the baseline) rejects at
  the look's nominal level, ``BETA`` spent the same way over the looks before the last. This is the rank
  test's upper confidence bound of the shift staying below ``min_change``; it lets a clean run stop early.

At the last look (``max`` reached) the fixed rule decides at that look's alpha: a run neither significantly nor
materially worse passes, as a gate with a fixed number of repeats does. The schedule depends only on the gate,
so ``farm gate RUN_ID`` re-decides a stored run at the same look. Calibrated by simulation in
bench/bench_gates.py (numbers in docs/adaptive-repeats.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from farm.boundaries import information, nominal_levels
from farm.stats import Comparison, compare, min_possible_p

ALPHA_SHARE = 0.9
"""The share of the gate's ``alpha`` the boundaries spend. They are exact in the normal approximation; the
bench measured 0.98 % false alarms (95 % CI up to 1.29 %) when spending all of alpha = 1 %, so a 10 % margin
keeps the rate below alpha, as the fixed rule's exact test does (its size is 0.93 % at 10 vs 10)."""

BETA = 0.2
"""Total chance, over the looks before the last, of an early pass for a regression of exactly ``min_change``."""

Verdict = Literal["pass", "fail", "inconclusive"]


@dataclass(frozen=True)
class Look:
    """Where a run with ``repeats`` values per stratum stands in a gate's schedule."""

    index: int  # 1-based; 0 = fewer repeats than the first look
    looks: int
    repeats: int
    alpha: float  # spent on the fail test at this look
    beta: float  # spent on the early-pass test at this look (0 at the last look: the fixed rule decides)
    next_repeats: int | None  # the next look's repeats; None at (or beyond) the last look


def schedule(min_repeats: int, max_repeats: int) -> tuple[int, ...]:
    """Repeats per stratum at each look: every ``min`` repeats, and ``max`` last."""
    points = list(range(min_repeats, max_repeats, min_repeats))
    return (*points, max_repeats)


def look_at(repeats: int, min_repeats: int, max_repeats: int, alpha: float, strata: int, base_values: int) -> Look:
    """The look ``repeats`` reaches, with its boundaries for ``strata`` pooled strata against ``base_values``."""
    points = schedule(min_repeats, max_repeats)
    k = sum(1 for p in points if p <= repeats)
    nxt = points[k] if k < len(points) else None
    if k == 0:
        return Look(0, len(points), repeats, 0.0, 0.0, nxt)
    info = information([strata * p for p in points], base_values)
    fail = nominal_levels(alpha * ALPHA_SHARE, info)[k - 1]
    early_pass = nominal_levels(BETA, info[:-1])[k - 1] if k < len(points) else 0.0
    return Look(k, len(points), repeats, fail, early_pass, nxt)


@dataclass(frozen=True)
class Sequential:
    """A sequential decision at one look, with the fixed rule's numbers at that look's alpha."""

    verdict: Verdict
    reason: str
    look: Look
    stopped: str | None  # "decided at look k of K" | "max reached" | None: more repeats decide
    comparison: Comparison | None
    p_equivalence: float | None = None

    @property
    def shift(self) -> float | None:
        return self.comparison.shift if self.comparison is not None else None

    def as_dict(self) -> dict[str, object]:
        numbers = self.comparison.as_dict() if self.comparison is not None else {}
        return {**numbers, "verdict": self.verdict, "reason": self.reason, "sequential": {
            "look": self.look.index, "looks": self.look.looks, "repeats": self.look.repeats,
            "alpha_at_look": self.look.alpha, "beta_at_look": self.look.beta,
            "next_repeats": self.look.next_repeats if self.stopped is None else None,
            "stopped": self.stopped, "p_equivalence": self.p_equivalence,
        }}  # fmt: skip


def equivalence_p(run: Sequence[float], base: Sequence[float], *, higher_is_better: bool, min_change: float) -> float:
    """One-sided U test p of "the run is at least ``min_change`` worse": small when it is clearly less worse."""
    from scipy.stats import mannwhitneyu  # 1.2-1.4 s to import: only when a baseline gate is decided

    moved = [v + min_change for v in run] if higher_is_better else [v - min_change for v in run]
    alternative = "greater" if higher_is_better else "less"
    ties = len(set(moved) | set(base)) < len(moved) + len(base)
    method = "exact" if not ties and len(moved) + len(base) <= 400 else "asymptotic"
    return float(mannwhitneyu(moved, base, alternative=alternative, method=method).pvalue)


def decide(
    run: Sequence[float], base: Sequence[float], *, repeats: int, min_repeats: int, max_repeats: int,
    strata: int, higher_is_better: bool, alpha: float, min_change: float,
) -> Sequential:  # fmt: skip
    """The verdict at the look ``repeats`` (values per stratum of the run) has reached; values as for compare."""
    look = look_at(repeats, min_repeats, max_repeats, alpha, strata, len(base))
    if look.index == 0:
        why = f"{repeats} repeats, fewer than the first look's {min_repeats}: more repeats decide"
        return Sequential("inconclusive", why, look, None, None)
    where = f"look {look.index} of {look.looks}, {repeats} repeats"
    c = compare(run, base, higher_is_better=higher_is_better, alpha=look.alpha, min_change=min_change)
    if c.verdict == "fail":
        return Sequential("fail", f"{c.reason} ({where})", look, f"decided at look {look.index}", c)
    p_eq = None
    if look.beta > 0 and len(run) >= 2 and len(base) >= 2 and min_possible_p(len(run), len(base)) < look.beta:
        p_eq = equivalence_p(run, base, higher_is_better=higher_is_better, min_change=min_change)
        if p_eq < look.beta:
            why = f"less than {min_change:.0%} worse (equivalence p={p_eq:.2g} < {look.beta:.2g}; {c.reason})"
            return Sequential("pass", f"{why} ({where})", look, f"decided at look {look.index}", c, p_eq)
    if look.next_repeats is None:
        return Sequential(c.verdict, f"{c.reason} ({where}: max reached)", look, "max reached", c, p_eq)
    why = f"{c.reason} ({where}: undecided, next look at {look.next_repeats} repeats)"
    return Sequential("inconclusive", why, look, None, c, p_eq)
