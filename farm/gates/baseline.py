"""Gates against a baseline run: is this run significantly AND materially worse than an earlier one?

The baseline is a named run (id or unique prefix) or ``released``: the newest run of the same suite that was
tagged as a release. The decision itself is :func:`farm.stats.compare`; this module picks the values (the
bundle's successful jobs in scope, per device x sequence x rate point, on both sides) and keeps every number
with the verdict.

A pass must cover the whole scope: if a stratum of this run has no counterpart in the baseline (a new device,
a new sequence, a metric the baseline could not measure), a regression found elsewhere still fails, but the
verdict is otherwise inconclusive rather than a pass that vouches for values nobody compared.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Protocol

from farm.config.suite import Gate
from farm.gates.verdict import Measured
from farm.gates.view import RunView, load_view
from farm.sequential import Sequential, decide
from farm.stats import Comparison, Normalised, compare, normalise
from farm.store import Store

Strata = dict[str, list[float]]


@dataclass(frozen=True)
class Baseline:
    run_id: str
    label: str  # how it was found, for people: "release v1.2.0 (run ...)" or "run ..."
    view: RunView


class Baselines(Protocol):
    def resolve(self, spec: str, view: RunView) -> Baseline | str:
        """The baseline run named by ``spec`` for the run ``view``, or why there is none."""
        ...


class StoreBaselines:
    """Baselines from the result store; each baseline run is read once per evaluation."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._views: dict[str, RunView] = {}

    def resolve(self, spec: str, view: RunView) -> Baseline | str:
        if spec == "released":
            row = self.store.last_release(view.suite_name, exclude_run=view.run_id)
            if row is None:
                return (
                    f"no released run of suite {view.suite_name!r} to compare with; the first release needs "
                    "'baseline: RUN_ID' (or no baseline gate)"
                )
            run_id, label = str(row["run_id"]), f"release {row['tag']} (run {row['run_id']})"
        else:
            found = self.store.resolve_run_id(spec)
            if found is None:
                return f"no single run matches baseline {spec!r}"
            run_id, label = found, f"run {found}"
        if run_id == view.run_id:
            return f"the baseline {label} is this run itself"
        if run_id not in self._views:
            self._views[run_id] = load_view(self.store, run_id)
        base = self._views[run_id]
        if base.status in ("running", "interrupted"):
            return f"baseline {label} never finished (status {base.status})"
        return Baseline(run_id, label, base)


def _strata(view: RunView, devices: list[str], metric: str) -> tuple[Strata, list[str]]:
    """Measured values per device/sequence@rate of the bundle's successful jobs, and the unmeasured jobs."""
    values: Strata = defaultdict(list)
    unmeasured: list[str] = []
    for j in view.jobs:
        if j.device_id not in devices or j.role != "test" or j.status != "ok":
            continue
        key = f"{j.device_id}/{j.sequence}@{j.rate_kbps:g}kbps"
        value = j.metrics.get(metric)
        if value is None:
            unmeasured.append(f"{key} r{j.repeat}")
        else:
            values[key].append(value)
    return dict(values), unmeasured


def against_baseline(gate: Gate, view: RunView, devices: list[str], baselines: Baselines | None) -> Measured:
    assert gate.baseline is not None
    run, unmeasured = _strata(view, devices, gate.metric)
    inputs: dict[str, Any] = {"devices": devices, "baseline": gate.baseline, "run_values": run}
    if not run and not unmeasured:
        return Measured(None, "no successful job in scope", inputs)
    if unmeasured:
        shown = ", ".join(unmeasured[:5])
        return Measured(None, f"{gate.metric} not measured in {len(unmeasured)} job(s): {shown}", inputs)
    if baselines is None:
        return Measured(None, "no result store to find the baseline in", inputs, verdict="inconclusive")
    found = baselines.resolve(gate.baseline, view)
    if isinstance(found, str):
        return Measured(None, found, inputs, verdict="inconclusive")
    base, _ = _strata(found.view, devices, gate.metric)
    norm = normalise(run, base)
    result = _decide(gate, norm, run)
    inputs.update({
        "baseline_run": found.run_id, "baseline_label": found.label, "baseline_values": base,
        "compared": norm.strata, "not_in_baseline": norm.only_run, "not_in_run": norm.only_base,
        "baseline_not_positive": norm.unusable, **result.as_dict(),
    })  # fmt: skip
    detail = f"{result.reason} vs {found.label}"
    uncovered = norm.only_run + norm.unusable
    verdict = result.verdict
    if uncovered and verdict == "pass":
        verdict = "inconclusive"
    if uncovered:
        detail += f"; not compared (no positive baseline values): {', '.join(uncovered[:5])}"
    return Measured(result.shift, detail, inputs, verdict=verdict)


def _decide(gate: Gate, norm: Normalised, run: Strata) -> Comparison | Sequential:
    """The fixed rule, or with ``repeats`` the sequential one at the look the run's fewest repeats reached."""
    higher = gate.op.startswith(">")
    if gate.repeats is None:
        return compare(norm.run, norm.base, higher_is_better=higher, alpha=gate.alpha, min_change=gate.min_change)
    repeats = min((len(run[k]) for k in norm.strata), default=0)
    return decide(norm.run, norm.base, repeats=repeats, min_repeats=gate.repeats.min, max_repeats=gate.repeats.max,
                  strata=max(len(norm.strata), 1), higher_is_better=higher, alpha=gate.alpha,
                  min_change=gate.min_change)  # fmt: skip
