"""Turn a run's stored results into one verdict per gate and scope.

Scopes: ``each`` gives one verdict per device of the run (every planned device, reached or not);
``tag:NAME`` and ``all`` pool the devices they cover into one verdict. A run that never finished passes
nothing: whatever it measured is partial.
"""

from __future__ import annotations

from collections.abc import Sequence

from farm.config.suite import Gate
from farm.gates.absolute import DEVICE_METRICS, device_metric, failures, job_metric
from farm.gates.baseline import Baselines, against_baseline
from farm.gates.consistency import consistency
from farm.gates.emulated import Judged, any_real, judged
from farm.gates.verdict import Measured, Verdict, meets
from farm.gates.view import RunView
from farm.measures import split_anchor

PARTIAL = ("running", "interrupted")
"""Run statuses whose results are partial: a resume (or nothing) completes them, so no gate may pass."""


def scopes(gate: Gate, view: RunView) -> list[tuple[str, list[str]]]:
    if gate.scope == "each":
        return [(d, [d]) for d in sorted(view.devices)]
    if gate.scope == "all":
        return [("all", sorted(view.devices))]
    tag = gate.scope.removeprefix("tag:")
    return [(gate.scope, sorted(d for d, tags in view.devices.items() if tag in tags))]


def evaluate(gates: Sequence[Gate], view: RunView, baselines: Baselines | None = None) -> list[Verdict]:
    """Every gate over every scope; ``baselines`` finds the runs that baseline gates compare against."""
    verdicts: list[Verdict] = []
    for index, gate in enumerate(gates):
        for key, devices in scopes(gate, view):
            m = _measure(gate, view, devices, baselines)
            value, detail, decided = m.value, m.detail, m.verdict
            if view.status in PARTIAL:
                # stopped or died mid-run: whatever was measured is partial and must not pass a gate
                value, detail, decided = None, f"run did not finish (status {view.status}); partial: {detail}", None
            if decided is None:
                decided = "missing" if value is None else "pass" if meets(gate, value) else "fail"
            threshold = gate.target if gate.baseline is not None else gate.value
            assert threshold is not None
            verdicts.append(
                Verdict(index, gate.metric, gate.op, threshold, gate.scope, key, gate.stat, value, decided, detail,
                        m.inputs, gate.model_dump(mode="json", exclude_defaults=True))
            )  # fmt: skip
    return verdicts


def _measure(gate: Gate, view: RunView, devices: list[str], baselines: Baselines | None) -> Measured:
    if not devices:
        return Measured(None, f"no device in scope {gate.scope}", {"devices": []})
    split = judged(gate, view, devices)
    if split.exempt:
        return _without_emulated(gate, view, split, baselines)
    if gate.baseline is not None:
        return against_baseline(gate, view, devices, baselines)
    if gate.metric == "failures":
        return failures(view, devices)
    if gate.metric.startswith("consistency"):
        return consistency(gate, view, devices)
    if split_anchor(gate.metric)[0] in DEVICE_METRICS:  # bd_rate[NAME].METRIC is a device metric too
        return device_metric(gate, view, devices)
    return job_metric(gate, view, devices)


def _without_emulated(gate: Gate, view: RunView, split: Judged, baselines: Baselines | None) -> Measured:
    """A timing gate over the scope's real devices; an emulated device alone in its scope is exempt, unless the
    run has no real device at all (then, like a pooled scope with none left, the gate is unmeasured)."""
    inputs = {"devices": split.devices, "exempt": split.exempt}
    if not split.devices:
        if gate.scope == "each" and any_real(view):
            return Measured(None, split.note(), inputs, verdict="exempt")
        why = f"no device of scope {gate.scope} in this run has hardware CPU timing: unmeasured"
        return Measured(None, f"{split.note()}; {why}", inputs)
    m = _measure(gate, view, split.devices, baselines)
    return Measured(m.value, f"{m.detail} ({split.note()})", m.inputs | {"exempt": split.exempt}, m.verdict)
