"""Decode suites (suites/*.yaml): what to decode, at which rates, how often, and which gates must pass.

Sequence paths and the anchor are resolved relative to the suite file, so a suite can be run from anywhere.
Gate metrics are checked against the metric names the farm produces, so a misspelt gate is an input error
(exit 2) instead of a gate that is forever ``missing``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationInfo, field_validator, model_validator

from farm.config.source import load_yaml, validate
from farm.errors import InputError, Problem
from farm.measures import ANCHOR_NAME, baseline_metrics, gate_metrics, is_gate_metric, split_anchor

# clouds: ffmpeg's perlin noise, coloured and fast-changing, the natural-looking texture of the learned suite
GENERATORS = (
    "testsrc", "testsrc2", "smptebars", "mandelbrot", "life", "cellauto", "rgbtestsrc", "gradients", "clouds",
)  # fmt: skip

# metric -> meaning: the names a gate may use, from the one declaration of every metric (farm/measures.py)
METRICS = gate_metrics()

OPS = ("<", "<=", ">", ">=", "==", "!=")

# per-job measurements with a continuous scale: the ones a baseline gate can test for a relative change
BASELINE_METRICS = baseline_metrics()


# Bounds on every number that reaches a sleep, a timeout or ffmpeg: .inf or 1e9 there hangs a run or overflows
# deep inside it (OverflowError, exit 1), so they are refused here, where the error still has its file:line.
MAX_TIMEOUT_S = 86_400.0  # a decode that needs more than a day is a mistake, not a benchmark
MAX_BASELINE_S = 600.0  # idle power settles within seconds; ten minutes is already generous
MAX_SAMPLE_HZ = 1000.0  # sysfs/hwmon meters do not update faster; higher only loads the device
MAX_RATE_KBPS = 1_000_000.0  # 1 Gbit/s: above any codec operating point worth gating
MAX_COOLDOWN_S = 3_600.0


class Strict(BaseModel):
    # allow_inf_nan=False: .nan and .inf are valid YAML floats, but no field of a suite means them
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Generate(Strict):
    """A sequence the farm renders deterministically with an ffmpeg lavfi source."""

    source: str
    width: int = Field(gt=0, le=8192)
    height: int = Field(gt=0, le=8192)
    fps: int = Field(default=30, gt=0, le=240)
    frames: int = Field(gt=0, le=100000)
    # film grain: strength of ffmpeg's seeded temporal Gaussian luma noise (its `noise` filter, 0..100), for
    # content whose noise no codec can predict from the previous frame (docs/learned-codec.md)
    grain: int = Field(default=0, ge=0, le=100)

    @field_validator("source")
    @classmethod
    def _known(cls, value: str) -> str:
        if value not in GENERATORS:
            raise ValueError(f"unknown generator {value!r}; one of {', '.join(GENERATORS)}")
        return value

    @model_validator(mode="after")
    def _even(self) -> Generate:
        if self.width % 2 or self.height % 2:
            raise ValueError("width and height must be even for 4:2:0")
        return self


class Sequence(Strict):
    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    path: Path | None = None
    generate: Generate | None = None

    @model_validator(mode="after")
    def _one_source(self) -> Sequence:
        if (self.path is None) == (self.generate is None):
            raise ValueError("give exactly one of 'path' (a .y4m file) or 'generate'")
        return self


class PowerPlan(Strict):
    baseline_s: float = Field(default=2.0, ge=0, le=MAX_BASELINE_S)
    sample_hz: float = Field(default=10.0, gt=0, le=MAX_SAMPLE_HZ)


class ThermalPlan(Strict):
    start_below_c: float | None = Field(default=None, gt=-40, le=150)  # a board's plausible range, in C
    timeout_s: float = Field(default=300, gt=0, le=MAX_COOLDOWN_S)


class Repeats(Strict):
    """Adaptive repeats of a baseline gate: first look at ``min`` repeats per stratum, then every ``min`` more
    until decided or ``max`` (farm/sequential.py, docs/adaptive-repeats.md)."""

    min: int = Field(ge=2, le=1000)  # one value per stratum has no spread to test
    max: int = Field(ge=2, le=1000)

    @model_validator(mode="after")
    def _ordered(self) -> Repeats:
        if self.max < self.min:
            raise ValueError(f"max ({self.max}) must be at least min ({self.min})")
        return self


class Gate(Strict):
    """One gate. Absolute: ``metric op value``. Baseline: ``metric op baseline`` (op gives the good direction).

    Fields are declared in the order they are validated, so each check can see the fields before it and
    report its problem on the field that is wrong (``file:line: gates[2].alpha: ...``).
    """

    metric: str
    op: str
    baseline: str | None = None  # 'released' (newest release of the suite) or a run id / unique prefix
    scope: str = "each"
    stat: Literal["median", "mean", "min", "max", "p5", "p95"] = "median"
    value: float | str | None = Field(default=None, validate_default=True)
    min_change: float = Field(default=0.02, gt=0, lt=1)  # baseline gates: smallest relative change that fails
    alpha: float = Field(default=0.01, gt=0, le=0.2)  # baseline gates: significance level of the U test
    repeats: Repeats | None = None  # baseline gates: more repeats while inconclusive, up to max

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if not is_gate_metric(value):
            raise ValueError(f"unknown metric {value!r}")
        return value

    @field_validator("op")
    @classmethod
    def _op(cls, value: str) -> str:
        if value not in OPS:
            raise ValueError(f"unknown operator {value!r}; one of {' '.join(OPS)}")
        return value

    @field_validator("baseline")
    @classmethod
    def _baseline(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return value
        if value != "released" and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}", value):
            raise ValueError(f"baseline {value!r} is neither 'released' nor a run id")
        metric, op = info.data.get("metric"), info.data.get("op")
        if metric is not None and metric not in BASELINE_METRICS:
            raise ValueError(
                f"metric {metric!r} cannot be compared with a baseline (it has no per-job values on a continuous "
                "scale); baseline gates take one of " + ", ".join(BASELINE_METRICS)
            )
        if op is not None and op not in (">=", "<="):
            raise ValueError("a baseline gate's op gives the good direction: '>=' (higher is better) or '<='")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        if value not in {"each", "all"} and not re.fullmatch(r"tag:[A-Za-z0-9_.-]+", value):
            raise ValueError(f"scope {value!r} is not 'each', 'all' or 'tag:NAME'")
        return value

    @field_validator("stat")
    @classmethod
    def _stat(cls, value: str, info: ValidationInfo) -> str:
        # runs only when 'stat' is written: a baseline gate tests every value, not a statistic of them. The
        # default itself is let through, because a stored suite (runs.suite_json) writes every field out.
        if info.data.get("baseline") is not None and value != "median":
            raise ValueError("a baseline gate compares every repeat, not a statistic: drop 'stat'")
        return value

    @field_validator("value", mode="after")
    @classmethod
    def _value(cls, value: float | str | None, info: ValidationInfo) -> float | str | None:
        metric, op, baseline = info.data.get("metric"), info.data.get("op"), info.data.get("baseline")
        if baseline is not None:
            if value is not None:
                raise ValueError("give either 'value' (an absolute gate) or 'baseline', not both")
            return value
        if value is None:
            if "baseline" in info.data:  # an invalid baseline has reported itself already
                raise ValueError("required key missing (or give 'baseline' to compare with an earlier run)")
            return value
        if metric == "consistency":
            if value != "bitexact" or op not in (None, "=="):
                raise ValueError(
                    "consistency gates are written 'consistency == bitexact' (or gate consistency.max_abs_diff "
                    "or consistency.psnr_db against a number for a tolerance)"
                )
        elif not isinstance(value, int | float):
            raise ValueError(f"value must be a number for metric {metric!r}")
        return value

    @field_validator("min_change", "alpha")
    @classmethod
    def _baseline_only(cls, value: float, info: ValidationInfo) -> float:
        # runs only when written: on an absolute gate these would be silently ignored (defaults pass, as above)
        default = cls.model_fields[str(info.field_name)].default
        if "baseline" in info.data and info.data["baseline"] is None and value != default:
            raise ValueError(f"'{info.field_name}' only applies to a gate with a 'baseline'")
        return value

    @field_validator("repeats")
    @classmethod
    def _adaptive(cls, value: Repeats | None, info: ValidationInfo) -> Repeats | None:
        if value is not None and "baseline" in info.data and info.data["baseline"] is None:
            raise ValueError("'repeats' only applies to a gate with a 'baseline' (it adds repeats until it decides)")
        return value

    @property
    def target(self) -> str:
        """What the gate compares against, as people read it."""
        if self.baseline is not None:
            return f"baseline({self.baseline})"
        return f"{self.value:g}" if isinstance(self.value, float) else str(self.value)

    def describe(self) -> str:
        return f"{self.metric} {self.op} {self.target} [{self.scope}]"


class GateLines:
    """Where a suite's gates were written. Not part of the suite's value: pydantic compares private attributes,
    and a suite read from its file must equal the same suite read back from the store, which has no lines.
    """

    def __init__(self, file: str, lines: tuple[int | None, ...]) -> None:
        self.file = file
        self.lines = lines

    def __eq__(self, other: object) -> bool:
        return isinstance(other, GateLines)

    def __hash__(self) -> int:
        return 0


class Suite(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    sequences: tuple[Sequence, ...] = Field(min_length=1)
    rates_kbps: tuple[Annotated[float, Field(gt=0, le=MAX_RATE_KBPS)], ...] = Field(min_length=1, max_length=64)
    devices: str = "all"
    repeats: int = Field(default=1, ge=1, le=1000)
    warmup_frames: int = Field(default=0, ge=0, le=100_000)
    timeout_s: float = Field(default=120, gt=0, le=MAX_TIMEOUT_S)
    power: PowerPlan = PowerPlan()
    thermal: ThermalPlan = ThermalPlan()
    metrics: tuple[Literal["psnr", "ssim", "vmaf"], ...] = ("psnr", "ssim", "vmaf")
    anchor: Path | None = None  # the single anchor (named after its bundle), as before several anchors
    # several anchors by name, the first the default (bd_rate.NAME without [anchor]); docs/bd-rate.md
    anchors: dict[Annotated[str, Field(pattern=rf"^{ANCHOR_NAME}$")], Path] | None = Field(default=None, min_length=1)
    gates: tuple[Gate, ...] = Field(min_length=1)  # a suite that gates nothing cannot pass or fail a release
    # where each gate was written: checks made after loading still name file:line
    _where: GateLines = PrivateAttr(default_factory=lambda: GateLines("", ()))

    @field_validator("rates_kbps")
    @classmethod
    def _rates(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(r <= 0 for r in value):
            raise ValueError("rates must be positive")
        if len(set(value)) != len(value):
            raise ValueError("rates must be distinct")
        return tuple(sorted(value))

    @model_validator(mode="after")
    def _one_anchor_form(self) -> Suite:
        if self.anchor is not None and self.anchors is not None:
            raise ValueError("give either 'anchor' (one bundle) or 'anchors' (by name), not both")
        return self

    @model_validator(mode="after")
    def _unique_sequences(self) -> Suite:
        ids = [s.id for s in self.sequences]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"sequence ids repeat: {', '.join(dupes)}")
        return self

    def gate_problem(self, index: int, message: str) -> Problem:
        """A problem with gate ``index``, at the line it was written on (no line for a suite read from the store)."""
        file, lines = self._where.file, self._where.lines
        line = lines[index] if index < len(lines) else None
        return Problem(file or self.name, line, f"gates[{index}].metric", message)


def anchor_problems(suite: Suite, anchors: list[str] | None) -> list[Problem]:
    """BD-rate gates that cannot be measured: no anchor was given at all (neither --anchor nor the suite's
    ``anchor:``/``anchors:``), or the gate names an anchor the run does not have. ``anchors``: the run's anchor
    names, or None when only their number is known yet (an anchor that failed to open has no name).

    Such a gate would only report ``missing`` after the whole run; refusing it first costs the user no run.
    """
    problems = []
    for i, gate in enumerate(suite.gates):
        if not gate.metric.startswith("bd_rate"):
            continue
        _, named = split_anchor(gate.metric)
        if anchors is not None and not anchors:
            problems.append(suite.gate_problem(i, f"{gate.metric} needs an anchor bundle: give --anchor or the "
                                                  "suite's 'anchor:' or 'anchors:'"))  # fmt: skip
        elif named is not None and anchors is not None and named not in anchors:
            problems.append(suite.gate_problem(i, f"{gate.metric} names anchor {named!r}, which this run does not "
                                                  f"have (its anchors: {', '.join(anchors)})"))  # fmt: skip
    return problems


def load_suite(path: Path) -> Suite:
    doc = load_yaml(path)
    if not isinstance(doc.data, dict):
        raise InputError([Problem(doc.file, 1, "", "expected a mapping")])
    suite = validate(Suite, doc)
    base = path.parent
    problems: list[Problem] = []
    sequences = []
    for i, seq in enumerate(suite.sequences):
        if seq.path is not None:
            resolved = seq.path if seq.path.is_absolute() else base / seq.path
            if not resolved.is_file():
                problems.append(doc.problem(("sequences", i, "path"), f"no such file {str(resolved)!r}"))
            seq = seq.model_copy(update={"path": resolved})
        sequences.append(seq)
    anchor = suite.anchor
    if anchor is not None and not anchor.is_absolute():
        anchor = base / anchor
    anchors = (
        None if suite.anchors is None else {n: a if a.is_absolute() else base / a for n, a in suite.anchors.items()}
    )
    if problems:
        raise InputError(problems)
    loaded = suite.model_copy(update={"sequences": tuple(sequences), "anchor": anchor, "anchors": anchors})
    loaded._where = GateLines(doc.file, tuple(doc.line_of(("gates", i)) for i in range(len(suite.gates))))
    return loaded
