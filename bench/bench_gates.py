"""How often does a baseline gate cry wolf, and how often does it catch a real regression?

Simulates what a release run sees: the baseline and the run each decode with N repeats, every repeat's value
drawn with 3 % coefficient of variation (the noise of frame rates on a phone). Each trial goes through the
farm's own decision (farm.stats: the values normalised to the baseline median per stratum, then the
one-sided Mann-Whitney U test and the Hodges-Lehmann shift, p < 0.01 and >= 2 % worse to fail):

- false alarms: the run has the SAME distribution as the baseline; a `fail` is a false alarm (must be < 1 %);
- detection: the run is 5 % slower; a `fail` is a detection (should be most trials at 10 repeats).

Peers, on the same draws: a plain threshold on the difference of medians ("fail if >= 2 % worse"), and the
U test alone ("fail if p < 0.01"). The ratio of their false-alarm rates to the gate's is printed, along with
the exact size of the U test at this sample size (the ceiling of its false-alarm rate for continuous data).

The false-alarm rate sits just under 1 % by construction (the U test's exact size at 10 vs 10 is 0.93 %), so
the default runs 100000 null trials: the estimate's standard error (0.03 %) is then small against the margin.

Adaptive repeats (farm/sequential.py): the same draws, but the run adds repeats look by look (``repeats: {min,
max}``, default 10 and 40) against a baseline of ``--repeats`` values, and stops when the sequential decision
does. Target: false alarms at most 1 % and detection of the 5 % regression at least 95 %, with the mean number
of repeats used printed beside the fixed rule's. The peer is the fixed rule at ``--repeats``.

Run: python3 bench/bench_gates.py [--trials 100000 --other-trials 5000 --repeats 10 --cv 0.03 --regression 0.05
                                   --adaptive-trials 5000 --min-repeats 10 --max-repeats 40]
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's farm, not an installed one
from farm.sequential import decide, schedule
from farm.stats import compare, normalise

ALPHA, MIN_CHANGE = 0.01, 0.02


def exact_size(n: int, m: int, alpha: float) -> float:
    """P(the exact one-sided U test gives p < alpha) under the null: the test's true false-alarm ceiling."""
    # ways[k][s]: subsets of k ranks out of those seen so far with rank sum s
    total = n + m
    ways = [[0] * (total * (total + 1) // 2 + 1) for _ in range(n + 1)]
    ways[0][0] = 1
    for rank in range(1, total + 1):
        for k in range(min(rank, n), 0, -1):
            row, prev = ways[k], ways[k - 1]
            for s in range(len(row) - 1, rank - 1, -1):
                row[s] += prev[s - rank]
    counts = ways[n]
    all_ways = math.comb(total, n)
    size = cumulative = 0.0
    for count in counts:  # lower tail: small rank sums of the run = the run is worse
        cumulative += count / all_ways
        if cumulative >= alpha:
            break
        size = cumulative
    return size


def wilson(hits: int, trials: int, z: float = 1.96) -> tuple[float, float]:
    p = hits / trials
    centre = (p + z * z / (2 * trials)) / (1 + z * z / trials)
    half = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / (1 + z * z / trials)
    return max(0.0, centre - half), min(1.0, centre + half)


Draw = Callable[[float], dict[str, list[float]]]


def simulate(draw: Draw, shift: float, trials: int) -> tuple[Counter[str], int, int]:
    """Verdict counts of the gate, and fail counts of the two peers, for run = baseline x (1 - shift)."""
    gate: Counter[str] = Counter()
    naive = u_only = 0
    for _ in range(trials):
        base, run = draw(0.0), draw(shift)
        norm = normalise(run, base)
        result = compare(norm.run, norm.base, higher_is_better=True, alpha=ALPHA, min_change=MIN_CHANGE)
        gate[result.verdict] += 1
        naive += (1 - float(np.median(norm.run)) / float(np.median(norm.base))) >= MIN_CHANGE
        u_only += result.p_value is not None and result.p_value < ALPHA
    return gate, naive, u_only


def report(title: str, gate: Counter[str], naive: int, u_only: int, trials: int, what: str) -> None:
    fails = gate["fail"]
    low, high = wilson(fails, trials)
    print(f"{title}")
    print(f"  farm gate                   {what:>12} {fails / trials:8.3%}  (95% CI {low:.3%} .. {high:.3%}); "
          f"inconclusive {gate['inconclusive'] / trials:.2%}, pass {gate['pass'] / trials:.2%}")  # fmt: skip
    print(f"  peer: median >= {MIN_CHANGE:.0%} worse    {what:>12} {naive / trials:8.3%}")
    print(f"  peer: U test p < {ALPHA:g} alone {what:>12} {u_only / trials:8.3%}")


def adaptive(
    rng: np.random.Generator, shift: float, trials: int, args: argparse.Namespace
) -> tuple[Counter[str], float]:
    """Verdicts of the sequential gate, and the mean repeats it used, over one stratum per trial."""
    verdicts: Counter[str] = Counter()
    used = 0
    for _ in range(trials):
        base = {"phone/clip": list(rng.normal(100.0, 100.0 * args.cv, args.repeats))}
        run = list(rng.normal(100.0 * (1 - shift), 100.0 * args.cv, args.max_repeats))
        for n in schedule(args.min_repeats, args.max_repeats):
            norm = normalise({"phone/clip": run[:n]}, base)
            d = decide(norm.run, norm.base, repeats=n, min_repeats=args.min_repeats, max_repeats=args.max_repeats,
                       strata=1, higher_is_better=True, alpha=ALPHA, min_change=MIN_CHANGE)  # fmt: skip
            if d.stopped is not None:
                break
        verdicts[d.verdict] += 1
        used += n
    return verdicts, used / trials


def adaptive_report(args: argparse.Namespace, fixed: tuple[float, float, float]) -> bool:
    """The sequential gate beside the fixed rule (``fixed``: its false alarms, inconclusive and detection)."""
    rng = np.random.default_rng(args.seed + 1)
    trials = args.adaptive_trials
    null, null_used = adaptive(rng, 0.0, trials, args)
    alt, alt_used = adaptive(rng, args.regression, trials, args)
    false_alarm, detection = null["fail"] / trials, alt["fail"] / trials
    low, high = wilson(null["fail"], trials)
    looks = schedule(args.min_repeats, args.max_repeats)
    print(f"\nadaptive repeats {{min: {args.min_repeats}, max: {args.max_repeats}}} (looks at {looks}) against "
          f"{args.repeats} baseline repeats, one stratum, {trials} trials each")  # fmt: skip
    print(
        f"  same distribution: false alarms {false_alarm:.3%} (95% CI {low:.3%} .. {high:.3%}), inconclusive "
        f"{null['inconclusive'] / trials:.2%}, pass {null['pass'] / trials:.2%}; mean repeats {null_used:.1f}"
    )
    print(f"  {args.regression:.0%} slower:       detected {detection:.1%} (95% CI {wilson(alt['fail'], trials)[0]:.1%}"
          f" .. {wilson(alt['fail'], trials)[1]:.1%}), inconclusive {alt['inconclusive'] / trials:.2%}, pass "
          f"{alt['pass'] / trials:.2%}; mean repeats {alt_used:.1f}")  # fmt: skip
    print(f"  peer: fixed {args.repeats} repeats: false alarms {fixed[0]:.3%}, inconclusive {fixed[1]:.2%}, detected "
          f"{fixed[2]:.1%}; repeats {args.repeats}")  # fmt: skip
    print(
        f"ratio adaptive/fixed (mean repeats, clean run): {null_used / args.repeats:.2f}; "
        f"(5% slower): {alt_used / args.repeats:.2f}"
    )
    ok_fa, ok_det = false_alarm <= 0.01, detection >= 0.95
    print(f"target: adaptive false alarms <= 1% -> {false_alarm:.3%}: {'PASS' if ok_fa else 'FAIL'}")
    print(
        f"target: adaptive detection of {args.regression:.0%} >= 95% -> {detection:.1%}: {'PASS' if ok_det else 'FAIL'}"
    )
    return ok_fa and ok_det


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trials", type=int, default=100000, help="trials of the one-stratum false-alarm scenario")
    ap.add_argument("--other-trials", type=int, default=5000, help="trials of each other scenario")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--cv", type=float, default=0.03)
    ap.add_argument("--regression", type=float, default=0.05)
    ap.add_argument("--strata", type=int, default=4, help="rate points of the pooled scenario")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--adaptive-trials", type=int, default=None, help="trials of each adaptive scenario "
                    "(default: --other-trials)")  # fmt: skip
    ap.add_argument("--min-repeats", type=int, default=10, help="the adaptive gate's repeats.min")
    ap.add_argument("--max-repeats", type=int, default=40, help="the adaptive gate's repeats.max")
    args = ap.parse_args()
    if args.adaptive_trials is None:
        args.adaptive_trials = args.other_trials
    rng = np.random.default_rng(args.seed)
    n, cv = args.repeats, args.cv

    def strata(count: int, repeats: int) -> Draw:
        """``count`` strata (rate points, clips) that decode at different speeds, ``repeats`` values each."""
        scales = [240.0 / (k + 1) for k in range(count)]

        def draw(shift: float) -> dict[str, list[float]]:
            return {f"phone/clip@{k}": list(rng.normal(s * (1 - shift), s * cv, repeats)) for k, s in enumerate(scales)}

        return draw

    size = exact_size(n, n, ALPHA)
    print(f"baseline gate: one-sided Mann-Whitney U p < {ALPHA:g} AND Hodges-Lehmann shift >= {MIN_CHANGE:.0%} worse")
    print(f"noise: normal, CV {cv:.1%}; seed {args.seed}; exact size of the U test at {n} vs {n}: {size:.4%}")
    started = time.perf_counter()
    scenarios = [  # (title, draw, trials, the headline ones)
        (f"one stratum, {n} repeats per side", strata(1, n), args.trials, True),
        (f"{args.strata} rate points x {n} repeats pooled", strata(args.strata, n), args.other_trials, False),
        ("smoke-suite shape: 8 strata x 2 repeats pooled", strata(8, 2), args.other_trials, False),
    ]
    false_alarm = detection = naive_ratio = inconclusive = 0.0
    for title, draw, trials, headline in scenarios:
        gate, naive, u_only = simulate(draw, 0.0, trials)
        report(f"\nsame distribution, {title}, {trials} trials", gate, naive, u_only, trials, "false alarms")
        shifted = min(trials, args.other_trials)
        gate_d, naive_d, u_d = simulate(draw, args.regression, shifted)
        report(f"{args.regression:.0%} slower, {title}, {shifted} trials", gate_d, naive_d, u_d, shifted, "detected")
        if headline:
            false_alarm, detection = gate["fail"] / trials, gate_d["fail"] / shifted
            inconclusive = gate["inconclusive"] / trials
            naive_ratio = naive / max(gate["fail"], 1)
    print(f"\nsummary: false alarms {false_alarm:.3%} (must be < 1%), detection of {args.regression:.0%} at {n} "
          f"repeats {detection:.1%} (should be > 50%); the plain 2% median threshold raises {naive_ratio:.1f}x "
          f"the gate's false alarms; {time.perf_counter() - started:.0f} s")  # fmt: skip
    ok = false_alarm < 0.01 and detection > 0.5
    # a simulation, not a timing: its "repeats" are the trials above, and its spread is each rate's 95 % CI
    print(f"target: false alarms < 1% -> {false_alarm:.3%}: {'PASS' if false_alarm < 0.01 else 'FAIL'}")
    print(
        f"target: detection of {args.regression:.0%} > 50% -> {detection:.1%}: {'PASS' if detection > 0.5 else 'FAIL'}"
    )
    ok = adaptive_report(args, (false_alarm, inconclusive, detection)) and ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
