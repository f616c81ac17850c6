"""The exporter's metric schema: its families grouped by what feeds them, with the label values they take.

Why the families are declared in farm/measures.py and only grouped here: a family exports a metric, and the
metric's name, unit and meaning live there; a family declared apart from its metric drifted (a measurement the
exporter silently dropped, help text that described another convention). The collector, the push, the dashboard
tests and docs/prometheus.md read these names, so a misspelt name in a dashboard query shows up in a test rather
than as an empty panel in someone's Grafana. Names follow the Prometheus naming guide: base units (seconds,
watts, joules, celsius, ratios), ``_total`` only on counters, no unit abbreviations. Labels are deliberately
bounded (see farm/measures.py).
"""

from __future__ import annotations

from farm import measures
from farm.measures import (
    BD_RATE,
    BYTES_PER_PIXEL,
    DECODE_FPS,
    DECODER_BYTES,
    DECODER_KMAC,
    DECODER_PARAMS,
    DEVICE_BATTERY,
    DEVICE_CHARGING,
    DEVICE_INFO,
    DEVICE_LAST_SEEN,
    DEVICE_LEASE,
    DEVICE_STATE,
    DEVICE_TEMPERATURE,
    DEVICE_UP,
    ENERGY_PER_FRAME,
    ENERGY_TOTAL,
    FLICKER,
    FRAME_SECONDS,
    FRAMES_TOTAL,
    GATE_PASSED,
    GATE_VALUE,
    GATE_VERDICT,
    LAST_RUN,
    POWER,
    PSNR,
    RUN_DURATION,
    SSIM,
    VMAF,
    Kind,
)
from farm.measures import Family as Spec

__all__ = [
    "AGENT_LABELS", "AGENT_SPECS", "AGENT_STATES", "ALL_SPECS", "BD_RATE", "BYTES_PER_PIXEL", "COUNTER_SPECS",
    "DECODER_BYTES", "DECODER_KMAC", "DECODER_PARAMS", "DECODER_SPECS", "DECODE_FPS", "DEVICE_BATTERY",
    "DEVICE_CHARGING", "DEVICE_INFO", "DEVICE_LAST_SEEN", "DEVICE_LEASE", "DEVICE_STATE", "DEVICE_TEMPERATURE",
    "DEVICE_UP", "ENERGY_PER_FRAME", "ENERGY_TOTAL",
    "FLICKER", "FRAMES_TOTAL", "FRAME_SECONDS", "GATE_LABELS", "GATE_PASSED", "GATE_VALUE", "GATE_VERDICT",
    "HEALTH_LABELS", "HEALTH_SPECS", "LAST_RUN", "PASSING", "PLANES", "POWER", "PSNR", "QUANTILES", "RESULT_LABELS",
    "RESULT_SPECS", "RUN_DURATION", "RUN_LABELS", "RUN_SPECS", "SSIM", "VERDICTS", "VMAF", "Kind", "Spec",
    "sample_names",
]  # fmt: skip

# one decode result: the latest finished run's jobs for this key
RESULT_LABELS = measures.JOB_LABELS
RUN_LABELS = measures.RUN_LABELS
GATE_LABELS = measures.GATE_LABELS
HEALTH_LABELS = measures.PROBE_LABELS
AGENT_LABELS = DEVICE_STATE.labels

RESULT_SPECS = (DECODE_FPS, FRAME_SECONDS, POWER, ENERGY_PER_FRAME, BYTES_PER_PIXEL, PSNR, SSIM, VMAF, FLICKER)
COUNTER_SPECS = (ENERGY_TOTAL, FRAMES_TOTAL)
DECODER_SPECS = (DECODER_KMAC, DECODER_PARAMS, DECODER_BYTES)
RUN_SPECS = (BD_RATE, LAST_RUN, RUN_DURATION, GATE_PASSED, GATE_VERDICT, GATE_VALUE, *DECODER_SPECS)
HEALTH_SPECS = (DEVICE_UP, DEVICE_TEMPERATURE, DEVICE_BATTERY, DEVICE_CHARGING, DEVICE_LAST_SEEN, DEVICE_INFO)
AGENT_SPECS = (DEVICE_STATE, DEVICE_LEASE)  # farm agent --metrics-port, beside HEALTH_SPECS
ALL_SPECS = RESULT_SPECS + COUNTER_SPECS + RUN_SPECS + HEALTH_SPECS + AGENT_SPECS
AGENT_STATES = ("idle", "leased", "down")  # farm.cluster.remote.describe

QUANTILES = tuple(q / 100 for q in measures.FRAME_QUANTILES)
PLANES = tuple(m.export.label for m in measures.exported_as(PSNR) if m.export is not None and m.export.label)
VERDICTS = ("pass", "fail", "missing", "inconclusive", "exempt")  # farm.gates.verdict.VERDICTS
PASSING = ("pass", "exempt")  # farm.gates.verdict.PASSING


def sample_names() -> set[str]:
    """Every sample name the exporter can emit (summaries add _count and _sum): what queries may refer to."""
    names: set[str] = set()
    for spec in ALL_SPECS:
        names.add(spec.name)
        if spec.kind == "summary":
            names.update({spec.name + "_count", spec.name + "_sum"})
    return names
