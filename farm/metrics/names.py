"""The exporter's metric schema: every name, type, help text and label set, in one place.

Why one module: the collector, the push, the dashboard tests and docs/prometheus.md must agree on every name,
and a misspelt name in a dashboard query would otherwise only show up as an empty panel in someone's Grafana.
Names follow the Prometheus naming guide: base units (seconds, watts, joules, celsius, ratios), ``_total`` only
on counters, no unit abbreviations. Labels are deliberately bounded: devices, suites, bundles, sequences and
rate points are finite sets a lab configures; run ids, commits and bundle versions are never labels (each new
run would otherwise start new series forever).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["gauge", "counter", "summary"]

# one decode result: the latest finished run's jobs for this key
RESULT_LABELS = ("device", "suite", "bundle", "role", "sequence", "rate_kbps")
RUN_LABELS = ("suite", "bundle")
GATE_LABELS = ("suite", "bundle", "gate", "scope")
HEALTH_LABELS = ("device",)


@dataclass(frozen=True)
class Spec:
    """One metric family. ``name`` is the family name as exposed (counters include ``_total``)."""

    name: str
    kind: Kind
    help: str
    labels: tuple[str, ...]

    @property
    def family_name(self) -> str:
        """The name prometheus_client's family classes take (they append ``_total`` to counters themselves)."""
        return self.name.removesuffix("_total") if self.kind == "counter" else self.name


DECODE_FPS = Spec(
    "farm_decode_frames_per_second", "gauge",
    "Steady-state decode throughput (frames after warm-up / their decode time), median over the repeats of the "
    "latest finished run.", RESULT_LABELS,
)  # fmt: skip
FRAME_SECONDS = Spec(
    "farm_frame_decode_seconds", "summary",
    "Steady-state frame decode time quantiles (0.5, 0.9, 0.99) over the pooled raw per-frame times of the latest "
    "finished run's repeats; _count steady frames, _sum their decode time.", RESULT_LABELS,
)  # fmt: skip
POWER = Spec(
    "farm_power_watts", "gauge",
    "Mean device power over the decode window, median over repeats of the latest finished run. Absent without a "
    "power meter.", RESULT_LABELS,
)  # fmt: skip
ENERGY_PER_FRAME = Spec(
    "farm_decode_energy_per_frame_joules", "gauge",
    "(energy - idle baseline power x decode time) / frames, median over repeats of the latest finished run "
    "(the convention gates use). Absent without a meter or a baseline.", RESULT_LABELS,
)  # fmt: skip
ENERGY_TOTAL = Spec(
    "farm_decode_energy_joules_total", "counter",
    "Energy measured over decode windows, summed over every stored job (including running runs); "
    "rate() is watts spent decoding.", RESULT_LABELS,
)  # fmt: skip
FRAMES_TOTAL = Spec(
    "farm_decoded_frames_total", "counter",
    "Frames decoded by successful jobs, summed over every stored job (including running runs); "
    "increase(energy) / increase(frames) is gross joules per frame.", RESULT_LABELS,
)  # fmt: skip
BYTES_PER_PIXEL = Spec(
    "farm_bitstream_bytes_per_pixel", "gauge",
    "Bitstream bytes / (width x height x frames) of the latest finished run; x 8 is the codec engineer's bpp "
    "(bytes are Prometheus's base unit of data, so bits do not pass promtool).", RESULT_LABELS,
)  # fmt: skip
PSNR = Spec(
    "farm_psnr_decibels", "gauge",
    "PSNR per plane (y, u, v) and yuv = (6Y+U+V)/8, 8-bit MAX 255, median over repeats of the latest finished run.",
    (*RESULT_LABELS, "plane"),
)  # fmt: skip
SSIM = Spec(
    "farm_ssim_score", "gauge",
    "SSIM (ffmpeg ssim filter, All), median over repeats of the latest finished run.", RESULT_LABELS,
)  # fmt: skip
VMAF = Spec(
    "farm_vmaf_score", "gauge",
    "VMAF v0.6.1 (ffmpeg libvmaf), median over repeats of the latest finished run.", RESULT_LABELS,
)  # fmt: skip
BD_RATE = Spec(
    "farm_bd_rate_ratio", "gauge",
    "BD-rate of the bundle against the anchor as a fraction (-0.1 = 10% fewer bits for the same quality), per "
    "device, mean over sequences, latest finished run. Absent when it could not be computed.",
    ("device", "suite", "bundle", "anchor", "quality"),
)  # fmt: skip
LAST_RUN = Spec(
    "farm_device_last_run_timestamp_seconds", "gauge",
    "When the latest finished run of this suite and bundle that included the device finished (Unix time).",
    ("device", "suite", "bundle"),
)  # fmt: skip
RUN_DURATION = Spec(
    "farm_run_duration_seconds", "gauge",
    "Wall time of the latest finished run of this suite and bundle, encodes and scoring included.", RUN_LABELS,
)  # fmt: skip
GATE_PASSED = Spec(
    "farm_gate_passed", "gauge",
    "1 if the gate passed on the latest finished run of this suite and bundle, else 0 (a missing metric never "
    "passes).", GATE_LABELS,
)  # fmt: skip
GATE_VERDICT = Spec(
    "farm_gate_verdict", "gauge",
    "The gate's verdict on the latest finished run as a state set: 1 for the current verdict (pass, fail, "
    "missing or inconclusive), 0 for the others.", (*GATE_LABELS, "verdict"),
)  # fmt: skip
GATE_VALUE = Spec(
    "farm_gate_value", "gauge",
    "The number the gate compared with its threshold on the latest finished run. Absent when the metric is "
    "missing or not a number (consistency).", GATE_LABELS,
)  # fmt: skip
DEVICE_UP = Spec(
    "farm_device_up", "gauge",
    "1 if the latest health probe reached the device, else 0.", HEALTH_LABELS,
)  # fmt: skip
DEVICE_TEMPERATURE = Spec(
    "farm_device_temperature_celsius", "gauge",
    "Hottest readable thermal zone at the latest health probe. Absent when no zone is readable or the device is "
    "down.", HEALTH_LABELS,
)  # fmt: skip
DEVICE_BATTERY = Spec(
    "farm_device_battery_ratio", "gauge",
    "Battery charge (0-1) at the latest health probe. Absent without a battery or when the device is down.",
    HEALTH_LABELS,
)  # fmt: skip
DEVICE_CHARGING = Spec(
    "farm_device_battery_charging", "gauge",
    "1 if the battery reported Charging at the latest health probe, 0 for Discharging, Not charging or Full. "
    "Absent when unknown.", HEALTH_LABELS,
)  # fmt: skip
DEVICE_LAST_SEEN = Spec(
    "farm_device_last_seen_timestamp_seconds", "gauge",
    "When a health probe last reached the device (Unix time). Absent until one has.", HEALTH_LABELS,
)  # fmt: skip
DEVICE_INFO = Spec(
    "farm_device_info", "gauge",
    "Always 1: the inventory's description of each device polled for health.",
    ("device", "platform", "target", "transport", "simulated"),
)  # fmt: skip

RESULT_SPECS = (DECODE_FPS, FRAME_SECONDS, POWER, ENERGY_PER_FRAME, BYTES_PER_PIXEL, PSNR, SSIM, VMAF)
COUNTER_SPECS = (ENERGY_TOTAL, FRAMES_TOTAL)
RUN_SPECS = (BD_RATE, LAST_RUN, RUN_DURATION, GATE_PASSED, GATE_VERDICT, GATE_VALUE)
HEALTH_SPECS = (DEVICE_UP, DEVICE_TEMPERATURE, DEVICE_BATTERY, DEVICE_CHARGING, DEVICE_LAST_SEEN, DEVICE_INFO)
ALL_SPECS = RESULT_SPECS + COUNTER_SPECS + RUN_SPECS + HEALTH_SPECS

QUANTILES = (0.5, 0.9, 0.99)
PLANES = ("y", "u", "v", "yuv")
VERDICTS = ("pass", "fail", "missing", "inconclusive")  # farm.gates.verdict.VERDICTS


def sample_names() -> set[str]:
    """Every sample name the exporter can emit (summaries add _count and _sum): what queries may refer to."""
    names: set[str] = set()
    for spec in ALL_SPECS:
        names.add(spec.name)
        if spec.kind == "summary":
            names.update({spec.name + "_count", spec.name + "_sum"})
    return names
