"""``farm compare RUN_A RUN_B``: what changed from run A to run B, per device x sequence x metric, and is it real.

Why the baseline gates' test and not a plain difference: repeats on real devices wander by a few percent, so
"3 % slower" alone is noise as often as not. Each change here is decided exactly as a baseline gate decides it
(:func:`farm.stats.compare`: values divided by A's median of the same rate point, one-sided Mann-Whitney U plus
the Hodges-Lehmann shift, ``alpha`` and ``min_change`` as a gate's defaults), once in each direction, so a row
reads worse, better, no change, or inconclusive with the reason (too few repeats can never be significant).
Only the bundle's successful jobs count, as in the gates. BD-rate of B against A (B's curve tested against
A's as the anchor) is given per device and sequence when both runs have the rate points.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from html import escape
from statistics import median
from typing import Any

from farm.measures import baseline_metrics, measure
from farm.report.rundata import QUALITY_METRICS, RunData, curve_bd_rate, load
from farm.report.svg import PALETTE, Chart, Series, render
from farm.stats import Comparison, compare, hodges_lehmann, normalise
from farm.store import Store

ALPHA = 0.01  # a baseline gate's default alpha (farm.config.suite.Gate)
MIN_CHANGE = 0.02  # and its default min_change


@dataclass(frozen=True)
class Change:
    device: str
    sequence: str
    metric: str
    unit: str
    a: float | None  # median over A's rate points and repeats
    b: float | None
    change: float | None  # Hodges-Lehmann shift of B against A, as a fraction of A (+ = B higher)
    verdict: str  # worse | better | no change | inconclusive | missing
    p_value: float | None
    n_a: int
    n_b: int
    reason: str


@dataclass(frozen=True)
class BDChange:
    device: str
    sequence: str
    metric: str
    value: float | None  # fraction: -0.05 = B needs 5 % fewer bits than A for the same quality
    overlap: float | None
    note: str  # warnings, or why it could not be computed


@dataclass(frozen=True)
class RunComparison:
    run_a: str
    run_b: str
    changes: tuple[Change, ...]
    bd_rates: tuple[BDChange, ...]

    def as_dict(self) -> dict[str, Any]:
        return {
            "run_a": self.run_a, "run_b": self.run_b, "alpha": ALPHA, "min_change": MIN_CHANGE,
            "changes": [asdict(c) for c in self.changes], "bd_rate_b_vs_a": [asdict(b) for b in self.bd_rates],
        }  # fmt: skip


def _strata(data: RunData, device: str, sequence: str, metric: str) -> dict[str, list[float]]:
    """The bundle's measured values per rate point, the stratum the gates normalise by."""
    out: dict[str, list[float]] = defaultdict(list)
    for j in data.jobs:
        mine = (j.device_id, j.sequence, j.role, j.status) == (device, sequence, "test", "ok")
        if mine and (v := j.metrics.get(metric)) is not None:
            out[f"{j.rate_kbps:g}kbps"].append(v)
    return dict(out)


def _decide(run: list[float], base: list[float], higher_is_better: bool) -> tuple[str, Comparison]:
    """worse / better / no change / inconclusive: the gate's one-sided test, asked in both directions."""
    worse = compare(run, base, higher_is_better=higher_is_better, alpha=ALPHA, min_change=MIN_CHANGE)
    if worse.verdict == "fail":
        return "worse", worse
    better = compare(run, base, higher_is_better=not higher_is_better, alpha=ALPHA, min_change=MIN_CHANGE)
    if better.verdict == "fail":
        return "better", better
    if worse.verdict == better.verdict == "pass":
        return "no change", worse
    return "inconclusive", worse if worse.verdict == "inconclusive" else better


def _change(a: RunData, b: RunData, device: str, sequence: str, metric: str) -> Change | None:
    sa, sb = _strata(a, device, sequence, metric), _strata(b, device, sequence, metric)
    if not sa and not sb:
        return None  # measured in neither run (no meter, no thermal zone): nothing to compare, nothing to show
    va, vb = [v for vs in sa.values() for v in vs], [v for vs in sb.values() for v in vs]
    ma, mb = (median(va) if va else None), (median(vb) if vb else None)
    m = measure(metric)
    norm = normalise(sb, sa)
    if not norm.run:
        why = "measured in only one run" if not (va and vb) else "no rate point with positive values in both runs"
        return Change(device, sequence, metric, m.unit, ma, mb, None, "missing", None, len(va), len(vb), why)
    verdict, result = _decide(norm.run, norm.base, m.better == "higher")
    shift = hodges_lehmann(norm.run, norm.base)
    # the gate's reason reads "+x% worse (p=..): why"; the change column already carries the signed number
    reason = result.reason.split(": ", 1)[1] if result.p_value is not None else result.reason
    if norm.only_run or norm.only_base:
        reason += f"; rate points in one run only: {', '.join(norm.only_run + norm.only_base)}"
    return Change(device, sequence, metric, m.unit, ma, mb, shift, verdict, result.p_value, len(va), len(vb), reason)


def _bd(a: RunData, b: RunData, device: str, sequence: str) -> list[BDChange]:
    out = []
    for metric in QUALITY_METRICS:
        ca, cb = a.curve(device, "test", sequence, metric), b.curve(device, "test", sequence, metric)
        if not ca or not cb or a.rate_unit(sequence) != b.rate_unit(sequence):
            continue
        result = curve_bd_rate(ca, cb)
        if isinstance(result, str):
            out.append(BDChange(device, sequence, metric, None, None, result))
        else:
            out.append(BDChange(device, sequence, metric, result.value, result.overlap, "; ".join(result.warnings)))
    return out


def compare_runs(store: Store, run_a: str, run_b: str) -> RunComparison:
    a, b = load(store, run_a), load(store, run_b)
    keys = sorted(set(a.keys("test")) | set(b.keys("test")))
    changes = [c for d, s in keys for metric in baseline_metrics() if (c := _change(a, b, d, s, metric))]
    bds = [x for d, s in keys for x in _bd(a, b, d, s)]
    return RunComparison(run_a, run_b, tuple(changes), tuple(bds))


def fmt(value: float | None, digits: int = 4) -> str:
    return "missing" if value is None else f"{value:.{digits}g}"


def pct(value: float | None) -> str:
    """Changes and BD-rates are always shown in % to people (the JSON keeps fractions)."""
    return "-" if value is None else f"{value * 100:+.2f}%"


def change_cells(c: Change) -> list[str]:
    """One row as text: the table and the HTML page show the same cells."""
    p = "-" if c.p_value is None else f"{c.p_value:.2g}"
    unit = f" {c.unit}" if c.unit else ""
    return [c.device, c.sequence, c.metric, f"{fmt(c.a)}{unit}", f"{fmt(c.b)}{unit}", pct(c.change), c.verdict, p,
            f"{c.n_a} vs {c.n_b}", c.reason]  # fmt: skip


CHANGE_HEAD = ("device", "sequence", "metric", "A (median)", "B (median)", "change", "verdict", "p", "values",
               "why")  # fmt: skip
BD_HEAD = ("device", "sequence", "quality", "BD-rate of B vs A", "overlap", "note")


def bd_cells(x: BDChange) -> list[str]:
    overlap = "-" if x.overlap is None else f"{x.overlap:.0%}"
    return [x.device, x.sequence, x.metric, pct(x.value) if x.value is not None else "not computed", overlap, x.note]


def _rd_charts(store: Store, cmp: RunComparison) -> str:
    a, b = load(store, cmp.run_a), load(store, cmp.run_b)
    out = []
    for device, seq in sorted(set(a.keys("test")) | set(b.keys("test"))):
        for metric in QUALITY_METRICS:
            sides = (("A", cmp.run_a, a), ("B", cmp.run_b, b))
            series = [Series(f"{label} {rid}"[:26], [(p.rate, p.quality) for p in d.curve(device, "test", seq, metric)],
                             PALETTE[i], dashed=i == 1) for i, (label, rid, d) in enumerate(sides)]  # fmt: skip
            out.append(render(Chart(f"{device} {seq}: rate vs {metric}", f"actual rate, {a.rate_unit(seq)} (log)",
                                    metric, series, log_x=True, css_class="chart rd", legend_at="bottom")))  # fmt: skip
    return '<div class="charts">' + "".join(out) + "</div>"


def render_html(store: Store, cmp: RunComparison) -> str:
    """A self-contained page (same rules as the run report: inline CSS and SVG, nothing fetched, all escaped)."""
    from farm.report.html import CSS, table

    classes = {"worse": "fail", "better": "pass", "no change": "", "inconclusive": "inconclusive", "missing": "missing"}
    title = escape(f"codec-farm: run {cmp.run_b} (B) against run {cmp.run_a} (A)")
    body = [
        f"<h1>{title}</h1><p class=note>Per device x sequence x metric of the bundle's successful jobs: the change "
        f"is the Hodges-Lehmann shift of B against A; the verdict is the baseline gates' test (one-sided "
        f"Mann-Whitney U, alpha {ALPHA:g}, at least {MIN_CHANGE:.0%}), asked in both directions.</p>",
        '<h2 id="changes">Changes</h2>',
        table(CHANGE_HEAD, [change_cells(c) for c in cmp.changes], [classes[c.verdict] for c in cmp.changes]),
        '<h2 id="bd">BD-rate of B against A</h2>', table(BD_HEAD, [bd_cells(x) for x in cmp.bd_rates]),
        _rd_charts(store, cmp),
    ]  # fmt: skip
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>\n")  # fmt: skip


def summary(changes: Sequence[Change]) -> str:
    counts: dict[str, int] = defaultdict(int)
    for c in changes:
        counts[c.verdict] += 1
    return ", ".join(f"{n} {v}" for v, n in sorted(counts.items()))
