"""What a run looks like to people: the results, verdict and agreement tables.

Everything is built from the store, so ``farm report`` and ``farm gate`` show exactly what ``farm run`` did.
Missing values print as ``missing`` (never 0 or blank) so nobody mistakes an unmeasured number for a result.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from rich.console import Group
from rich.markup import escape
from rich.table import Table

from farm import provenance
from farm.emulation import emulated_devices
from farm.gates import Verdict, load_view
from farm.gates.consistency import decodes, groups
from farm.gates.view import JobView
from farm.measures import Column, aggregate, measure
from farm.report.anchors import QUALITIES, bd_metric, gate_notes, per_operation, run_anchors
from farm.store import Store

MISSING = "missing"


def _mean(values: Sequence[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    if not have or len(have) < len(values):
        return None
    return sum(have) / len(have)


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return MISSING if value is None else f"{value:{spec}}{suffix}"


# the results' columns: row key (stable: --json consumers read it) -> declared metric, whose Column says how
COLUMNS = (
    ("fps_p50", "fps.p50"), ("frame_ms_p99", "frame_time_ms.p99"), ("bpp", "bpp"), ("psnr_yuv", "psnr_yuv"),
    ("ssim", "ssim"), ("vmaf", "vmaf"), ("power_w", "power_w"), ("energy_per_frame_j", "energy_per_frame_j"),
    ("temp_max_c", "temp_max_c"), ("flicker", "temporal.flicker"),
)  # fmt: skip


def _column(name: str) -> Column:
    column = measure(name).column
    assert column is not None, f"{name} declares no table column in farm/measures.py"
    return column


def _summary(name: str, ok: Sequence[JobView]) -> float | None:
    """The metric over a row's successful jobs by its declared aggregation; rate-dependent metrics (quality)
    are summarised per rate point first, then averaged over rate points, so rows with different rate points
    stay comparable."""
    if not _column(name).per_rate:
        return aggregate(name, [j.metrics.get(name) for j in ok])
    by_rate: dict[float, list[JobView]] = defaultdict(list)
    for j in ok:
        by_rate[j.rate_kbps].append(j)
    return _mean([aggregate(name, [j.metrics.get(name) for j in js]) for js in by_rate.values()])


def results_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """One row per device x bundle role x sequence: summaries over repeats, means over rate points."""
    view = load_view(store, run_id)
    groups: dict[tuple[str, str, str], list[JobView]] = defaultdict(list)
    for job in view.jobs:
        groups[(job.device_id, job.role, job.sequence)].append(job)
    rows = []
    for (device, role, seq), jobs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "test", kv[0][2])):
        ok = [j for j in jobs if j.status == "ok"]
        throttled = aggregate("throttled", [j.metrics.get("throttled") for j in ok])
        rows.append({
            "device": device, "role": role, "sequence": seq, "jobs": len(jobs), "failed": len(jobs) - len(ok),
            **{key: _summary(name, ok) for key, name in COLUMNS},
            "throttled_jobs": int(throttled or 0),
        })  # fmt: skip
    return rows


SPEED = ("fps_p50", "frame_ms_p99", "power_w", "energy_per_frame_j", "temp_max_c")
QUALITY = ("bpp", "psnr_yuv", "ssim", "vmaf", "flicker")
"""The results are two tables so each fits 100 columns: how fast and at what power, and how well it compresses."""

FPS_DEFINITION = (
    "fps p50 = 1 / median steady-state frame decode time (after warm-up frames); p99 ms = 99th percentile frame time"
)


def _cells(r: dict[str, Any], simulated: set[str], emulated: set[str] | None = None) -> dict[str, str]:
    """A row's metric cells as the table shows them; power says when it is simulated, fps when the CPU was
    emulated, temperature when the board throttled."""
    cells = {key: _fmt(r[key], f".{_column(name).digits}f", _column(name).suffix) for key, name in COLUMNS}
    if emulated and r["device"] in emulated and r["fps_p50"] is not None:
        cells["fps_p50"] += " (emu)"
    if r["power_w"] is None:
        cells["power_w"] = "[yellow]missing[/]"
    elif r["device"] in simulated:
        cells["power_w"] += " (sim)"
    if r["throttled_jobs"]:
        cells["temp_max_c"] += f" [red]{r['throttled_jobs']} throttled[/]"
    return cells


def _table(title: str, keys: Sequence[str]) -> Table:
    """Names may fold onto a second line; numbers never wrap, so no digit is ever cut or moved."""
    table = Table(title=title)
    for col in ("device", "bundle", "sequence"):
        table.add_column(col, overflow="fold")
    table.add_column("jobs", justify="right", no_wrap=True)
    for key in keys:
        table.add_column(_column(dict(COLUMNS)[key]).heading, justify="right", no_wrap=True)
    return table


def _bd_caption(store: Store, run_id: str) -> list[str]:
    """Per device and anchor, the BD-rate of the bundle against it, always in % (the store keeps fractions)."""
    run = store.run(run_id)
    anchors = run_anchors(run)
    if not run or not anchors:
        return []
    lines = []
    for device, metrics in sorted(load_view(store, run_id).device_metrics.items()):
        for anchor in anchors:
            parts = []
            for quality in QUALITIES:
                value, detail = metrics.get(bd_metric(quality, anchor, anchors), (None, "not computed"))
                shown = f"{value * 100:+.2f}%" if value is not None else escape(f"missing ({detail})")
                parts.append(f"{quality} {shown}")
            name = f"bd_rate[{anchor.name}]" if len(anchors) > 1 else "BD-rate"
            lines.append(f"{device}: {name} of {run['bundle_name']} vs {anchor.label}: " + ", ".join(parts))
    return lines


def complexity_table(store: Store, run_id: str) -> Table:
    """Compression per operation: each device's decoder kMAC/pixel, parameters and model bytes beside the
    bundle's BD-rate (PSNR-YUV) against each anchor."""
    run = store.run(run_id)
    anchors = run_anchors(run)
    table = Table(title=f"compression per operation of run {run_id}")
    for col in ("device", "bundle"):
        table.add_column(col, overflow="fold")
    for col in ("kMAC/pixel", "params", "model bytes", *(f"BD-rate vs {a.name}" for a in anchors)):
        table.add_column(col, justify="right", no_wrap=True)
    notes = set()
    for row in per_operation(run, load_view(store, run_id)) if run else []:
        kmac = row["kmac_per_pixel"]
        if kmac is None:
            notes.add(f"{row['device']}: complexity missing ({row['complexity_detail']})")
        bd = [row["bd_rate"][a.name]["psnr_yuv"] for a in anchors]
        table.add_row(escape(row["device"]), escape(row["bundle"]), _fmt(kmac, ".3f"),
                      _fmt(row["params"], ",.0f"), _fmt(row["model_bytes"], ",.0f"),
                      *(_fmt(None if v is None else v * 100, "+.2f", "%") for v in bd))  # fmt: skip
    table.caption = "\n".join(escape(n) for n in sorted(notes)) or None
    return table


def results_table(store: Store, run_id: str) -> Group:
    """The speed/power table, then the quality table with the BD-rates under it."""
    run = store.run(run_id)
    labels = {"test": f"{run['bundle_name']}@{run['bundle_version']}" if run else "test", "anchor": "anchor"}
    anchors = run_anchors(run)
    labels.update({a.role: a.label if len(anchors) == 1 else f"{a.name}: {a.label}" for a in anchors})
    simulated = {d["device_id"] for d in store.devices(run_id) if "SIMULATED" in d["properties_json"]}
    emulated = emulated_devices(store.devices(run_id))
    speed = _table(f"speed and power of run {run_id} (medians over repeats)", SPEED)
    quality = _table(f"quality of run {run_id} (medians over repeats, means over rate points)", QUALITY)
    for r in results_rows(store, run_id):
        jobs = f"{r['jobs'] - r['failed']}/{r['jobs']}"
        head = [escape(r["device"]), escape(labels.get(r["role"], r["role"])), escape(r["sequence"]),
                f"[red]{jobs}[/]" if r["failed"] else jobs]  # fmt: skip
        cells = _cells(r, simulated, emulated)
        speed.add_row(*head, *(cells[k] for k in SPEED))
        quality.add_row(*head, *(cells[k] for k in QUALITY))
    speed.caption = FPS_DEFINITION
    if simulated:
        speed.caption += (
            f"\npower and temperature of {', '.join(sorted(simulated))} are SIMULATED by the virtual-board load model"
        )
    if emulated:
        speed.caption += f"\nfps of {', '.join(sorted(emulated))} is EMULATED (QEMU TCG): not a hardware measurement"
    speed.caption += "".join(f"\n{line}" for line in _runtime_caption(store, run_id))
    quality.caption = "\n".join(_bd_caption(store, run_id)) or None
    return Group(speed, quality, complexity_table(store, run_id))


def _runtime_caption(store: Store, run_id: str) -> list[str]:
    """The runtime that really decoded on each device, as its decoder reported it (farm.provenance)."""
    lines = []
    for d in store.devices(run_id):
        for line in provenance.summary(json.loads(d["properties_json"] or "{}")):
            lines.append(escape(f"runtime on {d['device_id']}: {line}"))
    return lines


def verdict_table(
    verdicts: Sequence[Verdict], title: str = "gates", warnings: Mapping[str, Sequence[str]] | None = None
) -> Table:
    """The verdicts; ``warnings`` (device -> BD-rate caveats, see farm.report.points.bd_warnings) mark a
    BD-rate verdict of that device, because a PASS on a sliver of overlapping quality must not look clean."""
    table = Table(title=title)
    table.add_column("gate", overflow="fold")
    table.add_column("scope", overflow="fold")
    table.add_column("value", justify="right", no_wrap=True)
    table.add_column("verdict", no_wrap=True)
    table.add_column("detail", overflow="fold")
    style = {"pass": "[green]PASS[/]", "fail": "[red]FAIL[/]", "missing": "[yellow]MISSING[/]",
             "inconclusive": "[yellow]INCONCLUSIVE[/]", "exempt": "[cyan]EXEMPT[/]"}  # fmt: skip
    for v in verdicts:
        notes = gate_notes(v.metric, (warnings or {}).get(v.scope_key, ()))
        detail = escape(v.detail[:160]) + "".join(f"\n[yellow]warning: {escape(n)}[/]" for n in notes)
        verdict = style[v.verdict] + (" [yellow]WARNING[/]" if notes else "")
        table.add_row(escape(_gate_text(v)), escape(v.scope_key), escape(_value_text(v)), verdict, detail)
    return table


def _is_ratio(v: Verdict) -> bool:
    """Values shown as a signed percentage: BD-rates (fractions) and a baseline gate's relative shift."""
    return v.metric.startswith("bd_rate") or v.gate.get("baseline") is not None


def _gate_text(v: Verdict) -> str:
    thr = f"{v.threshold:g}" if isinstance(v.threshold, float | int) else str(v.threshold)
    if v.metric.startswith("bd_rate") and isinstance(v.threshold, float | int):
        thr = f"{v.threshold * 100:+.2f}%"
    return f"{v.metric} {v.op} {thr}"


def _value_text(v: Verdict) -> str:
    if v.value is None:
        # an inconclusive comparison has no value because nothing could be decided, not because it is unmeasured
        return "-" if v.verdict in ("inconclusive", "exempt") else MISSING
    if isinstance(v.value, float) and _is_ratio(v):
        return f"{v.value * 100:+.2f}%"
    return f"{v.value:.4g}" if isinstance(v.value, float) else str(v.value)


def verdicts_from_store(store: Store, run_id: str, evaluation: int | None = None) -> list[Verdict]:
    """The verdicts of one stored evaluation (the latest by default), as they were decided."""
    return [
        Verdict(row["gate_index"], row["metric"], row["op"], _num(row["threshold"]), row["scope"], row["scope_key"],
                row["stat"], _num(row["value"]) if row["value"] is not None else None, row["verdict"], row["detail"],
                json.loads(row["inputs_json"]), json.loads(row["gate_json"]) if row["gate_json"] else {})
        for row in store.gate_verdicts(run_id, evaluation)
    ]  # fmt: skip


def agreement_table(store: Store, run_id: str) -> Table | None:
    """Which devices disagree with which: one row per bitstream whose decodes differ, None if none do.

    Devices are grouped by the digest they produced; with stored comparisons, each pair of groups gets its
    largest sample difference and worst-frame PSNR, so a rounding difference reads differently from garbage.
    """
    view = load_view(store, run_id)
    table = Table(title=f"decodes that differ in run {run_id}")
    for col in ("bitstream", "devices", "vs devices", "max |diff|", "worst-frame PSNR-YUV"):
        table.add_column(col)
    for (seq, rate), pairs in sorted(decodes(view.jobs).items()):
        by_sha = groups(pairs)
        for a, b in itertools.combinations(sorted(by_sha), 2):
            diff = view.diff(a, b)
            left = ",".join(by_sha[a]) + f" ({a[:8]})"
            right = ",".join(by_sha[b]) + f" ({b[:8]})"
            if diff is None:
                numbers = ["not compared", ""]
            elif diff.max_abs_diff is None or diff.psnr_min_db is None:
                numbers = [escape(diff.detail or "not comparable"), ""]
            else:
                numbers = [f"{diff.max_abs_diff:g}", f"{diff.psnr_min_db:.2f} dB"]
            table.add_row(f"{seq}@{rate:g}kbps", escape(left), escape(right), *numbers)
    return table if table.row_count else None


def _num(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text


def status_line(store: Store, run_id: str) -> str | None:
    """Why a run did not complete, as the store knows it (a reaped run's dead controller), or None if it did.

    The results table shows what was measured; without this line a run interrupted half-way reads as a short one.
    """
    run = store.run(run_id)
    if run is None or run["status"] == "complete":
        return None
    why = not_complete_because(run)
    return f"run {run_id} is {run['status']}" + (f": {why}" if why else "")


def not_complete_because(run: sqlite3.Row) -> str | None:
    """The reason stored with a run that ended short (its dead controller, the error that stopped it), if any."""
    if run["status"] in ("complete", "running"):
        return None
    summary = json.loads(run["summary_json"] or "{}")
    why = summary.get("interrupted") or summary.get("error")
    return str(why) if why else None
