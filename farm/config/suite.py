"""Decode suites (suites/*.yaml): what to decode, at which rates, how often, and which gates must pass.

Sequence paths and the anchor are resolved relative to the suite file, so a suite can be run from anywhere.
Gate metrics are checked against the metric names the farm produces, so a misspelt gate is an input error
(exit 2) instead of a gate that is forever ``missing``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from farm.config.source import load_yaml, validate
from farm.errors import InputError, Problem

GENERATORS = ("testsrc", "testsrc2", "smptebars", "mandelbrot", "life", "cellauto", "rgbtestsrc", "gradients")

# metric -> human description; gates may use these names (plus the suffixes in QUANTILE_METRICS)
METRICS: dict[str, str] = {
    "fps": "steady-state frames per second (frames after warm-up / their decode time)",
    "fps.p50": "frames per second at the median frame time",
    "fps.p90": "frames per second at the 90th percentile frame time (slow frames)",
    "fps.p99": "frames per second at the 99th percentile frame time",
    "frame_time_ms.p50": "median steady-state frame decode time, ms",
    "frame_time_ms.p90": "90th percentile frame decode time, ms",
    "frame_time_ms.p99": "99th percentile frame decode time, ms",
    "deadline_misses": "steady-state frames slower than 1/sequence fps",
    "wall_s": "decoder wall time including start-up, s",
    "power_w": "mean power during the decode window, W",
    "energy_j": "energy over the decode window, J",
    "energy_per_frame_j": "(energy - baseline power x time) / frames, J",
    "temp_max_c": "hottest thermal zone seen during the job, C",
    "throttled": "1 if the board reached its throttling temperature during the job, else 0",
    "bpp": "bits per pixel of the bitstream",
    "psnr_y": "PSNR of luma, dB",
    "psnr_u": "PSNR of Cb, dB",
    "psnr_v": "PSNR of Cr, dB",
    "psnr_yuv": "(6Y+U+V)/8 PSNR, dB",
    "ssim": "SSIM (ffmpeg ssim filter, All)",
    "vmaf": "VMAF v0.6.1 (libvmaf via ffmpeg)",
    "bd_rate.psnr_yuv": "BD-rate vs the anchor on PSNR-YUV, fraction (-0.1 = 10% fewer bits)",
    "bd_rate.vmaf": "BD-rate vs the anchor on VMAF, fraction",
    "consistency": "bitexact when every decode of a bitstream produced the same output, else mismatch",
    "failures": "number of failed jobs",
}

OPS = ("<", "<=", ">", ">=", "==", "!=")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Generate(Strict):
    """A sequence the farm renders deterministically with an ffmpeg lavfi source."""

    source: str
    width: int = Field(gt=0, le=8192)
    height: int = Field(gt=0, le=8192)
    fps: int = Field(default=30, gt=0, le=240)
    frames: int = Field(gt=0, le=100000)

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
    baseline_s: float = Field(default=2.0, ge=0)
    sample_hz: float = Field(default=10.0, gt=0, le=1000)


class ThermalPlan(Strict):
    start_below_c: float | None = None
    timeout_s: float = Field(default=300, gt=0)


class Gate(Strict):
    metric: str
    op: str
    value: float | str
    scope: str = "each"
    stat: Literal["median", "mean", "min", "max", "p5", "p95"] = "median"

    @field_validator("metric")
    @classmethod
    def _metric(cls, value: str) -> str:
        if value not in METRICS:
            raise ValueError(f"unknown metric {value!r}")
        return value

    @field_validator("op")
    @classmethod
    def _op(cls, value: str) -> str:
        if value not in OPS:
            raise ValueError(f"unknown operator {value!r}; one of {' '.join(OPS)}")
        return value

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: str) -> str:
        if value not in {"each", "all"} and not re.fullmatch(r"tag:[A-Za-z0-9_.-]+", value):
            raise ValueError(f"scope {value!r} is not 'each', 'all' or 'tag:NAME'")
        return value

    @model_validator(mode="after")
    def _value_kind(self) -> Gate:
        if self.metric == "consistency":
            if self.value not in ("bitexact",) or self.op not in ("==",):
                raise ValueError("consistency gates are written 'consistency == bitexact'")
        elif not isinstance(self.value, int | float):
            raise ValueError(f"value must be a number for metric {self.metric!r}")
        return self

    def describe(self) -> str:
        value = f"{self.value:g}" if isinstance(self.value, float) else str(self.value)
        return f"{self.metric} {self.op} {value} [{self.scope}]"


class Suite(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
    description: str = ""
    sequences: tuple[Sequence, ...] = Field(min_length=1)
    rates_kbps: tuple[float, ...] = Field(min_length=1)
    devices: str = "all"
    repeats: int = Field(default=1, ge=1, le=1000)
    warmup_frames: int = Field(default=0, ge=0)
    timeout_s: float = Field(default=120, gt=0)
    power: PowerPlan = PowerPlan()
    thermal: ThermalPlan = ThermalPlan()
    metrics: tuple[Literal["psnr", "ssim", "vmaf"], ...] = ("psnr", "ssim", "vmaf")
    anchor: Path | None = None
    gates: tuple[Gate, ...] = Field(min_length=1)  # a suite that gates nothing cannot pass or fail a release

    @field_validator("rates_kbps")
    @classmethod
    def _rates(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if any(r <= 0 for r in value):
            raise ValueError("rates must be positive")
        if len(set(value)) != len(value):
            raise ValueError("rates must be distinct")
        return tuple(sorted(value))

    @model_validator(mode="after")
    def _unique_sequences(self) -> Suite:
        ids = [s.id for s in self.sequences]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"sequence ids repeat: {', '.join(dupes)}")
        return self


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
    if problems:
        raise InputError(problems)
    return suite.model_copy(update={"sequences": tuple(sequences), "anchor": anchor})
