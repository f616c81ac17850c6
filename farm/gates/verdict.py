"""A gate's verdict for one scope, and what a measurement hands back to the evaluator.

Five verdicts: ``pass``; ``fail``; ``missing`` (the metric could not be measured for the scope);
``inconclusive`` (a baseline comparison that could not decide) and ``exempt`` (a device the gate does not judge:
a timing gate on a device whose CPU is emulated, see farm/gates/emulated.py). Only ``pass`` and ``exempt``
let a run pass: a release is never granted on a number nobody measured or a difference nobody could tell from
noise, and an exempt line is kept in the table so nobody reads it as a measured pass.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from farm.config.suite import Gate

VERDICTS = ("pass", "fail", "missing", "inconclusive", "exempt")
PASSING = ("pass", "exempt")
"""Verdicts that let a run pass: a measured pass, or a device the gate does not judge (never missing)."""
OPS: dict[str, Callable[[Any, Any], bool]] = {
    "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge, "==": operator.eq, "!=": operator.ne,
}  # fmt: skip


def passing(verdict: str) -> bool:
    """Whether a verdict lets the run pass (one spelling for the exit code, reports, exporter and releases)."""
    return verdict in PASSING


def meets(gate: Gate, value: float | str) -> bool:
    """Whether a measured value satisfies an absolute gate's threshold."""
    return OPS[gate.op](value, gate.value)


@dataclass(frozen=True)
class Measured:
    """A scope's value with how it was obtained; ``verdict`` set when the value alone cannot decide."""

    value: float | str | None
    detail: str
    inputs: dict[str, Any]
    verdict: str | None = None


@dataclass(frozen=True)
class Verdict:
    gate_index: int
    metric: str
    op: str
    threshold: float | str
    scope: str
    scope_key: str
    stat: str
    value: float | str | None
    verdict: str  # pass | fail | missing | inconclusive | exempt
    detail: str
    inputs: dict[str, Any]
    gate: dict[str, Any] = field(default_factory=dict)  # the gate as declared (empty for verdicts stored before)

    @property
    def label(self) -> str:
        thr = f"{self.threshold:g}" if isinstance(self.threshold, float | int) else self.threshold
        return f"{self.metric} {self.op} {thr} [{self.scope_key}]"

    def as_dict(self) -> dict[str, Any]:
        return {
            "gate_index": self.gate_index, "metric": self.metric, "op": self.op, "threshold": self.threshold,
            "scope": self.scope, "scope_key": self.scope_key, "stat": self.stat, "value": self.value,
            "verdict": self.verdict, "detail": self.detail, "inputs": self.inputs, "gate": self.gate,
        }  # fmt: skip
