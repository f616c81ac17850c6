"""Every metric the farm produces, declared once: name, unit, meaning, level, aggregation, gating and export.

Why one table: the suite validator (which names a gate may use), the device session (which unit a measurement is
stored with), the report (column headings, how repeats are summarised), the gates (which metrics are per device)
and the Prometheus exporter (family, help, labels, scale) each used to restate the same names as strings. A name
added in one place and not the others became a gate that is forever ``missing``, a column nobody fills, or a
measurement the exporter silently drops. Here a new metric is one entry, and tests/test_measures.py checks that
everything the producers emit and everything the exporter exposes is declared.

This module imports nothing from the farm, so any part (a device session in another process included) can use
it without pulling in the store, the UI or the exporter.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Literal

Level = Literal["job", "run-device", "run", "probe"]
"""What one value describes: one decode job; one device over a run (BD-rate); a run or a gate scope; a live
health probe outside any run."""

Aggregation = Literal["median", "mean", "max", "min", "sum", "all", "pooled", "latest"]
"""How several values of the metric are summarised: a job's repeats in the report and the exporter's gauges
(see :func:`aggregate`; a counter family sums whatever its metric's aggregation). ``all``: agreed only if every
value agrees (consistency); ``pooled``: the raw samples are pooled before taking quantiles; ``latest``: only the
newest value counts. A gate summarises with its own declared ``stat`` (median by default) and not with this,
because a stored run's verdicts must come out the same when it is evaluated again."""

Stored = Literal["measurement", "run_metric", "computed"]
"""Where the value lives: a ``measurements`` row of a job, a ``run_metrics`` row of a device, or computed from
other rows or a live probe (never stored under this name)."""

Kind = Literal["gauge", "counter", "summary"]

FRAME_QUANTILES = (50, 90, 99)
"""Percentiles of steady-state frame time the farm reports (fps.pNN, frame_time_ms.pNN, the exported summary)."""

# Prometheus label sets. Bounded on purpose: devices, suites, bundles, sequences and rate points are finite sets
# a lab configures; run ids, commits and bundle versions are never labels (each run would start new series).
JOB_LABELS = ("device", "suite", "bundle", "role", "sequence", "rate_kbps")
RUN_LABELS = ("suite", "bundle")
GATE_LABELS = ("suite", "bundle", "gate", "scope")
PROBE_LABELS = ("device",)


class UndeclaredMeasure(LookupError):
    """A metric name that is not in :data:`MEASURES`: a typo, or a new metric nobody declared."""

    def __init__(self, name: str) -> None:
        super().__init__(f"metric {name!r} is not declared in farm/measures.py")
        self.name = name


@dataclass(frozen=True)
class Family:
    """One Prometheus metric family. ``name`` is the name as exposed (counters include ``_total``)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]

    @property
    def family_name(self) -> str:
        """The name prometheus_client's family classes take (they append ``_total`` to counters themselves)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


@dataclass(frozen=True)
class Export:
    """How one metric is exposed. Several metrics may share a family, told apart by ``label``: the value of the
    family's last label (a PSNR plane, a BD-rate quality). ``scale`` converts the stored unit to the exposed
    Prometheus base unit (bits per pixel are exposed as bytes per pixel)."""

    family: Family
    label: str | None = None
    scale: float = 1.0


@dataclass(frozen=True)
class Column:
    """How the results table shows a metric: ``heading``, decimals, the unit written after the value (when the
    heading does not already say it), and ``per_rate``: the value depends on the rate point, so the table shows
    the mean over rate points of each rate point's summary instead of one summary over every job."""

    heading: str
    digits: int
    suffix: str = ""
    per_rate: bool = False


@dataclass(frozen=True)
class Measure:
    """One metric. ``gate``: a suite's gate may name it. ``baseline``: it has per-job values on a continuous
    scale, so a baseline gate may test it for a relative change. ``better``: the good direction, where there is
    one. ``export``: None when the exporter does not expose it."""

    name: str
    unit: str
    help: str
    level: Level
    aggregation: Aggregation
    stored: Stored
    gate: bool = False
    baseline: bool = False
    better: Literal["higher", "lower"] | None = None
    export: Export | None = None
    column: Column | None = None


@dataclass(frozen=True)
class Measurement:
    """One measured value of a job as the store keeps it: a value that could not be taken is None with a reason.

    Declared here (and re-exported by farm.store) so that a device session can build measurements without
    importing the store."""

    name: str
    value: float | None
    unit: str
    convention: str
    missing_reason: str | None = None


# -- Prometheus families (help texts are what Grafana users read; names follow the Prometheus naming guide) --------
DECODE_FPS = Family(
    "farm_decode_frames_per_second", "gauge",
    "Steady-state decode throughput (frames after warm-up / their decode time), median over the repeats of the "
    "latest finished run.", JOB_LABELS,
)  # fmt: skip
FRAME_SECONDS = Family(
    "farm_frame_decode_seconds", "summary",
    f"Steady-state frame decode time quantiles ({', '.join(f'{q / 100:g}' for q in FRAME_QUANTILES)}) over the "
    "pooled raw per-frame times of the latest finished run's repeats; _count steady frames, _sum their decode "
    "time.", JOB_LABELS,
)  # fmt: skip
POWER = Family(
    "farm_power_watts", "gauge",
    "Mean device power over the decode window, median over repeats of the latest finished run. Absent without a "
    "power meter.", JOB_LABELS,
)  # fmt: skip
ENERGY_PER_FRAME = Family(
    "farm_decode_energy_per_frame_joules", "gauge",
    "(energy - idle baseline power x decode time) / frames, median over repeats of the latest finished run "
    "(the convention gates use). Absent without a meter or a baseline.", JOB_LABELS,
)  # fmt: skip
ENERGY_TOTAL = Family(
    "farm_decode_energy_joules_total", "counter",
    "Energy measured over decode windows, summed over every stored job (including running runs); "
    "rate() is watts spent decoding.", JOB_LABELS,
)  # fmt: skip
FRAMES_TOTAL = Family(
    "farm_decoded_frames_total", "counter",
    "Frames decoded by successful jobs, summed over every stored job (including running runs); "
    "increase(energy) / increase(frames) is gross joules per frame.", JOB_LABELS,
)  # fmt: skip
BYTES_PER_PIXEL = Family(
    "farm_bitstream_bytes_per_pixel", "gauge",
    "Bitstream bytes / (width x height x frames) of the latest finished run; x 8 is the codec engineer's bpp "
    "(bytes are Prometheus's base unit of data, so bits do not pass promtool).", JOB_LABELS,
)  # fmt: skip
PSNR = Family(
    "farm_psnr_decibels", "gauge",
    "PSNR per plane (y, u, v) and yuv = (6Y+U+V)/8, 8-bit MAX 255, median over repeats of the latest finished run.",
    (*JOB_LABELS, "plane"),
)  # fmt: skip
SSIM = Family(
    "farm_ssim_score", "gauge",
    "SSIM (ffmpeg ssim filter, All), median over repeats of the latest finished run.", JOB_LABELS,
)  # fmt: skip
VMAF = Family(
    "farm_vmaf_score", "gauge",
    "VMAF v0.6.1 (ffmpeg libvmaf), median over repeats of the latest finished run.", JOB_LABELS,
)  # fmt: skip
FLICKER = Family(
    "farm_temporal_flicker", "gauge",
    "Flicker of the decoded video against its source: mean over frames of mean |(d_t - d_t-1) - (s_t - s_t-1)| "
    "on luma, in 8-bit code values (0 = the coding error does not change from frame to frame), median over "
    "repeats of the latest finished run.", JOB_LABELS,
)  # fmt: skip
BD_RATE = Family(
    "farm_bd_rate_ratio", "gauge",
    "BD-rate of the bundle against the anchor as a fraction (-0.1 = 10% fewer bits for the same quality), per "
    "device, mean over sequences, latest finished run. Absent when it could not be computed.",
    ("device", "suite", "bundle", "anchor", "quality"),
)  # fmt: skip
DECODER_KMAC = Family(
    "farm_decoder_kilo_macs_per_pixel", "gauge",
    "Decoder complexity of the bundle's models on the device's target: thousands of multiply-accumulates per "
    "decoded pixel (docs/complexity.md), latest finished run. Absent when it could not be counted.",
    ("device", "suite", "bundle"),
)  # fmt: skip
DECODER_PARAMS = Family(
    "farm_decoder_parameters", "gauge",
    "Weights of the bundle's decoder models on the device's target (quantization scales excluded), latest "
    "finished run. Absent for a bundle without models.", ("device", "suite", "bundle"),
)  # fmt: skip
DECODER_BYTES = Family(
    "farm_decoder_model_bytes", "gauge",
    "Bytes of the bundle's decoder model files (external weights included) on the device's target, latest "
    "finished run. Absent for a bundle without models.", ("device", "suite", "bundle"),
)  # fmt: skip
LAST_RUN = Family(
    "farm_device_last_run_timestamp_seconds", "gauge",
    "When the latest finished run of this suite and bundle that included the device finished (Unix time).",
    ("device", "suite", "bundle"),
)  # fmt: skip
RUN_DURATION = Family(
    "farm_run_duration_seconds", "gauge",
    "Wall time of the latest finished run of this suite and bundle, encodes and scoring included.", RUN_LABELS,
)  # fmt: skip
GATE_PASSED = Family(
    "farm_gate_passed", "gauge",
    "1 if the gate passed on the latest finished run of this suite and bundle, else 0 (a missing metric never "
    "passes).", GATE_LABELS,
)  # fmt: skip
GATE_VERDICT = Family(
    "farm_gate_verdict", "gauge",
    "The gate's verdict on the latest finished run as a state set: 1 for the current verdict (pass, fail, "
    "missing or inconclusive), 0 for the others.", (*GATE_LABELS, "verdict"),
)  # fmt: skip
GATE_VALUE = Family(
    "farm_gate_value", "gauge",
    "The number the gate compared with its threshold on the latest finished run. Absent when the metric is "
    "missing or not a number (consistency).", GATE_LABELS,
)  # fmt: skip
DEVICE_UP = Family(
    "farm_device_up", "gauge",
    "1 if the latest health probe reached the device, else 0.", PROBE_LABELS,
)  # fmt: skip
DEVICE_TEMPERATURE = Family(
    "farm_device_temperature_celsius", "gauge",
    "Hottest readable thermal zone at the latest health probe. Absent when no zone is readable or the device is "
    "down.", PROBE_LABELS,
)  # fmt: skip
DEVICE_BATTERY = Family(
    "farm_device_battery_ratio", "gauge",
    "Battery charge (0-1) at the latest health probe. Absent without a battery or when the device is down.",
    PROBE_LABELS,
)  # fmt: skip
DEVICE_CHARGING = Family(
    "farm_device_battery_charging", "gauge",
    "1 if the battery reported Charging at the latest health probe, 0 for Discharging, Not charging or Full. "
    "Absent when unknown.", PROBE_LABELS,
)  # fmt: skip
DEVICE_LAST_SEEN = Family(
    "farm_device_last_seen_timestamp_seconds", "gauge",
    "When a health probe last reached the device (Unix time). Absent until one has.", PROBE_LABELS,
)  # fmt: skip
DEVICE_INFO = Family(
    "farm_device_info", "gauge",
    "Always 1: the inventory's description of each device polled for health.",
    ("device", "platform", "target", "transport", "simulated"),
)  # fmt: skip
DEVICE_STATE = Family(
    "farm_device_state", "gauge",
    "1 for the state a farm agent reports for each device it hangs off (idle, leased, down), 0 for the other "
    "two. Exported by `farm agent --metrics-port`.", ("device", "host", "state"),
)  # fmt: skip
DEVICE_LEASE = Family(
    "farm_device_lease_start_timestamp_seconds", "gauge",
    "When the run in the `run` label took the device on its agent (Unix time). Present only while it holds it. "
    "Exported by `farm agent --metrics-port`.", ("device", "host", "run"),
)  # fmt: skip


# -- the metrics -----------------------------------------------------------------------------------------------
def _job(
    name: str,
    unit: str,
    help: str,
    *,
    aggregation: Aggregation = "median",
    gate: bool = True,
    baseline: bool = False,
    better: Literal["higher", "lower"] | None = None,
    export: Export | None = None,
    column: Column | None = None,
) -> Measure:
    """A per-job measurement row; most are gate metrics summarised by their median, hence the defaults."""
    return Measure(name, unit, help, "job", aggregation, "measurement", gate, baseline, better, export, column)


def _computed(name: str, unit: str, help: str, level: Level, aggregation: Aggregation, family: Family) -> Measure:
    """A value the exporter derives from other rows or a live probe: declared so its family has one home."""
    return Measure(name, unit, help, level, aggregation, "computed", export=Export(family))


def _percentile(q: int) -> str:
    return "median" if q == 50 else f"{q}th percentile"


def quantile_name(base: str, q: int) -> str:
    """``fps.p90``: the one spelling of a frame-time quantile's metric name, for producers and the table alike."""
    return f"{base}.p{q}"


_TIMING = (
    _job("fps", "fps", "steady-state frames per second (frames after warm-up / their decode time)",
         baseline=True, better="higher", export=Export(DECODE_FPS)),
    *(_job(quantile_name("fps", q), "fps", f"frames per second at the {_percentile(q)} frame time",
           baseline=True, better="higher", column=Column("fps p50", 0) if q == 50 else None)
      for q in FRAME_QUANTILES),
    *(_job(quantile_name("frame_time_ms", q), "ms", f"{_percentile(q)} steady-state frame decode time, ms",
           baseline=True, better="lower", column=Column("p99 ms", 2) if q == 99 else None)
      for q in FRAME_QUANTILES),
    _job("deadline_misses", "frames", "steady-state frames slower than 1/sequence fps", better="lower"),
    _job("wall_s", "s", "decoder wall time including start-up, s", baseline=True, better="lower"),
    Measure("frames", "frames", "frames a successful job decoded (the jobs table's frames column)", "job", "sum",
            "computed", export=Export(FRAMES_TOTAL)),
    Measure("frame_time_s", "s", "raw per-frame decode times after warm-up (the jobs table's frame_times_json)",
            "job", "pooled", "computed", export=Export(FRAME_SECONDS)),
)  # fmt: skip

_POWER = (
    _job("power_w", "W", "mean power during the decode window, W", baseline=True, better="lower",
         export=Export(POWER), column=Column("power", 2, " W")),
    _job("energy_j", "J", "energy over the decode window, J", baseline=True, better="lower",
         export=Export(ENERGY_TOTAL)),
    _job("energy_per_frame_j", "J", "(energy - baseline power x time) / frames, J", baseline=True, better="lower",
         export=Export(ENERGY_PER_FRAME), column=Column("J/frame", 4)),
    _job("baseline_w", "W", "idle power before the first job, W (the baseline energy_per_frame_j subtracts)",
         gate=False),
)  # fmt: skip

_DEVICE_STATE = (
    _job("temp_start_c", "C", "hottest thermal zone right before the decode, C", gate=False),
    _job("temp_end_c", "C", "hottest thermal zone right after the decode, C", gate=False),
    _job("temp_max_c", "C", "hottest thermal zone seen during the job, C", aggregation="max", baseline=True,
         better="lower", column=Column("max °C", 1)),
    _job("throttled", "bool", "1 if the board reached its throttling temperature during the job, else 0",
         aggregation="sum", better="lower"),
    _job("charging", "bool", "1 if the battery was on a charger around the job (power is then missing)",
         aggregation="sum", gate=False),
    _job("battery_level", "ratio", "battery charge at job start, 0-1", gate=False),
    _job("battery_temp_c", "C", "hottest battery temperature at job start/end, C", aggregation="max", gate=False),
)  # fmt: skip

_QUALITY = (
    _job("bpp", "bit/pixel", "bits per pixel of the bitstream", baseline=True, better="lower",
         export=Export(BYTES_PER_PIXEL, scale=1 / 8), column=Column("bpp", 4, per_rate=True)),
    *(_job(f"psnr_{p}", "dB", f"PSNR of {what}, dB", baseline=True, better="higher", export=Export(PSNR, p))
      for p, what in (("y", "luma"), ("u", "Cb"), ("v", "Cr"))),
    _job("psnr_yuv", "dB", "(6Y+U+V)/8 PSNR, dB", baseline=True, better="higher", export=Export(PSNR, "yuv"),
         column=Column("PSNR-YUV", 2, " dB", per_rate=True)),
    _job("ssim", "", "SSIM (ffmpeg ssim filter, All)", baseline=True, better="higher", export=Export(SSIM),
         column=Column("SSIM", 4, per_rate=True)),
    _job("vmaf", "", "VMAF v0.6.1 (libvmaf via ffmpeg)", baseline=True, better="higher", export=Export(VMAF),
         column=Column("VMAF", 2, per_rate=True)),
    _job("psnr_yuv.min", "dB", "worst frame's (6Y+U+V)/8 PSNR, dB (drift or one broken frame, which a mean hides)",
         aggregation="min", better="higher"),
    _job("temporal.flicker", "levels", "flicker: mean over frames of mean |(d_t - d_t-1) - (s_t - s_t-1)| on "
         "luma, 8-bit code values", baseline=True, better="lower", export=Export(FLICKER),
         column=Column("flicker", 3, per_rate=True)),
    _job("temporal.flicker_max", "levels", "worst frame's flicker, 8-bit code values", aggregation="max",
         better="lower"),
    *(Measure(f"bd_rate.{q}", "ratio", f"BD-rate vs the anchor on {what}, fraction (-0.1 = 10% fewer bits)",
              "run-device", "mean", "run_metric", gate=True, better="lower", export=Export(BD_RATE, q))
      for q, what in (("psnr_yuv", "PSNR-YUV"), ("vmaf", "VMAF"))),
)  # fmt: skip

_COMPLEXITY = (
    Measure("complexity.kmac_per_pixel", "kMAC/pixel", "decoder multiply-accumulates per decoded pixel, thousands "
            "(docs/complexity.md)", "run-device", "max", "run_metric", gate=True, better="lower",
            export=Export(DECODER_KMAC)),
    Measure("complexity.params", "parameters", "weights of the decoder models (quantization scales excluded)",
            "run-device", "max", "run_metric", gate=True, better="lower", export=Export(DECODER_PARAMS)),
    Measure("complexity.model_bytes", "B", "bytes of the decoder model files", "run-device", "max", "run_metric",
            gate=True, better="lower", export=Export(DECODER_BYTES)),
)  # fmt: skip

_RUN = (
    Measure("consistency", "", "bitexact when every decode of a bitstream produced the same output, else mismatch",
            "run", "all", "computed", gate=True),
    Measure("consistency.max_abs_diff", "", "largest absolute sample difference between two decodes of one "
            "bitstream", "run", "max", "computed", gate=True, better="lower"),
    Measure("consistency.psnr_db", "dB", "worst-frame PSNR-YUV between two decodes of one bitstream, dB "
            "(100 = identical)", "run", "min", "computed", gate=True, better="higher"),
    Measure("failures", "jobs", "number of failed jobs", "run", "sum", "computed", gate=True, better="lower"),
    _computed("run.duration_s", "s", "wall time of a finished run, encodes and scoring included", "run", "latest",
              RUN_DURATION),
    _computed("run.last_finished_at", "s", "when the latest finished run that included a device finished (Unix "
              "time)", "run-device", "latest", LAST_RUN),
    _computed("gate.passed", "bool", "1 if a gate passed for a scope, else 0", "run", "latest", GATE_PASSED),
    _computed("gate.verdict", "state", "a gate's verdict for a scope (pass, fail, missing, inconclusive)", "run",
              "latest", GATE_VERDICT),
    _computed("gate.value", "", "the number a gate compared with its threshold (in its metric's unit)", "run",
              "latest", GATE_VALUE),
)  # fmt: skip

_PROBE = (
    _computed("health.up", "bool", "1 if the latest health probe reached the device", "probe", "latest",
              DEVICE_UP),
    _computed("health.temp_c", "C", "hottest readable thermal zone at the latest probe", "probe", "latest",
              DEVICE_TEMPERATURE),
    _computed("health.battery_level", "ratio", "battery charge at the latest probe, 0-1", "probe", "latest",
              DEVICE_BATTERY),
    _computed("health.charging", "bool", "1 if the battery reported Charging at the latest probe", "probe",
              "latest", DEVICE_CHARGING),
    _computed("health.last_seen_at", "s", "when a probe last reached the device (Unix time)", "probe", "latest",
              DEVICE_LAST_SEEN),
    _computed("health.info", "", "always 1: the inventory's description of a polled device", "probe", "latest",
              DEVICE_INFO),
    _computed("agent.state", "state", "a device's state on its agent (idle, leased, down)", "probe", "latest",
              DEVICE_STATE),
    _computed("agent.lease_started_at", "s", "when the run holding a device on its agent took it (Unix time)",
              "probe", "latest", DEVICE_LEASE),
)  # fmt: skip

MEASURES: Mapping[str, Measure] = MappingProxyType(
    {m.name: m for m in (*_TIMING, *_POWER, *_DEVICE_STATE, *_QUALITY, *_COMPLEXITY, *_RUN, *_PROBE)}
)
"""Every metric the farm produces, by name, in the order people read them (timing, power, state, quality, run)."""


# -- lookups ---------------------------------------------------------------------------------------------------
ANCHOR_NAME = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_PER_ANCHOR = re.compile(rf"^(bd_rate)\[({ANCHOR_NAME})\]\.(.+)$")


def per_anchor(base: str, anchor: str) -> str:
    """``bd_rate[fp32].psnr_yuv``: the one spelling of a BD-rate against a named anchor (``bd_rate.psnr_yuv``
    stays the single or first anchor's)."""
    head, _, tail = base.partition(".")
    return f"{head}[{anchor}].{tail}"


def split_anchor(name: str) -> tuple[str, str | None]:
    """``bd_rate[fp32].psnr_yuv`` -> (``bd_rate.psnr_yuv``, ``fp32``); any other name -> (name, None)."""
    match = _PER_ANCHOR.match(name)
    if match is None:
        return name, None
    return f"{match.group(1)}.{match.group(3)}", match.group(2)


def measure(name: str) -> Measure:
    """The declaration of ``name`` (a per-anchor BD-rate is declared by its base name); an undeclared name is an
    error, never a guess."""
    try:
        return MEASURES[split_anchor(name)[0]]
    except KeyError:
        raise UndeclaredMeasure(name) from None


def is_gate_metric(name: str) -> bool:
    """Whether a gate may name ``name``: a declared gate metric, or a BD-rate against a named anchor."""
    base, anchor = split_anchor(name)
    declared = MEASURES.get(base)
    return declared is not None and declared.gate and (anchor is None or base.startswith("bd_rate."))


def unit(name: str) -> str:
    """The unit ``name`` is stored and shown in."""
    return measure(name).unit


def measurement(name: str, value: float | None, convention: str, missing_reason: str | None = None) -> Measurement:
    """A job's measurement with its declared unit: how a device session records a value.

    Call it instead of ``Measurement(...)`` so the unit cannot drift from the declaration, and so a new name
    fails where it is produced (:class:`UndeclaredMeasure`) rather than as a gate that is forever missing.
    ``convention`` says how this value was taken (clock, meter, sample rate: it differs per device and run);
    a value that could not be taken is ``None`` with ``missing_reason``. A missing value without a reason is
    still recorded (with "no reason recorded") rather than raising: losing a measured job over a reason string
    would be worse than the vague text, which a reader can still see and report.
    """
    declared = measure(name)
    if declared.stored != "measurement":
        raise ValueError(f"metric {name!r} is not a per-job measurement (it is {declared.stored})")
    reason = None if value is not None else (missing_reason or "no reason recorded")
    return Measurement(name, value, declared.unit, convention, reason)


def gate_metrics() -> Mapping[str, str]:
    """Metric name -> meaning, for every metric a suite's gate may name."""
    return MappingProxyType({m.name: m.help for m in MEASURES.values() if m.gate})


def baseline_metrics() -> tuple[str, ...]:
    """The metrics a baseline gate may test: per-job values on a continuous scale."""
    return tuple(m.name for m in MEASURES.values() if m.baseline)


def device_metrics() -> tuple[str, ...]:
    """Gate metrics with one value per device and run (BD-rate), which gates read from the run's device rows."""
    return tuple(m.name for m in MEASURES.values() if m.gate and m.level == "run-device")


def cpu_timed_metrics() -> tuple[str, ...]:
    """Gate metrics that measure how fast the device's CPU decoded (frame rates, decode times, and the power and
    energy of that decode window): an emulated CPU's values of them describe the emulator, not hardware."""
    return tuple(m.name for m in (*_TIMING, *_POWER) if m.gate)


def families() -> tuple[Family, ...]:
    """Every exported Prometheus family, once, in declaration order."""
    found = {m.export.family.name: m.export.family for m in MEASURES.values() if m.export is not None}
    return tuple(found.values())


def exported_as(family: Family) -> tuple[Measure, ...]:
    """The metrics a family exposes (several when the family tells them apart by its last label)."""
    return tuple(m for m in MEASURES.values() if m.export is not None and m.export.family == family)


def aggregate(name: str, values: Sequence[float | None]) -> float | None:
    """Summarise several values of one metric (a job's repeats) by its declared aggregation.

    Why missing values count differently: a median or mean over the repeats that happened to be measured would
    describe a different run, so one missing value makes the summary missing; a maximum or a sum (the hottest
    seen, how many jobs throttled) is still true of the values that were measured.
    """
    how = measure(name).aggregation
    have = [v for v in values if v is not None]
    if how in ("median", "mean"):
        if not have or len(have) < len(values):
            return None
        return statistics.median(have) if how == "median" else statistics.fmean(have)
    if how == "sum":
        return float(sum(have)) if have else None
    if how in ("max", "min"):
        return (max if how == "max" else min)(have) if have else None
    raise ValueError(f"metric {name!r} ({how}) is not summarised from single values")
