"""The report's per-sample traces: power and hottest-zone temperature over each decode, per device and sequence.

What is drawn: one representative job per role, sequence and rate point (the lowest repeat that has samples),
because repeats of one point look alike and a smoke run already has 24 jobs per device; one line per rate point
(the bundle solid, the anchor dashed) over seconds since its decode started, the device's idle baseline as a
dotted line on the power chart. A line is cut to at most ``DRAWN_BUCKETS`` x 2 points by keeping the minimum and
maximum of each bucket, so a spike one sample wide is still drawn while a 600-sample trace costs a few kB. A job
without samples is never drawn as zeros: the page lists why, as the session recorded it (no meter, charger ...).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from html import escape

from farm.report.rundata import Job, RunData
from farm.report.svg import PALETTE, Chart, Series, render
from farm.store import Store
from farm.traces import POWER, TEMP, Trace

NO_ROW = "no trace stored: the job did not reach its decode, or was recorded before schema 8"
DRAWN_BUCKETS = 200
"""Buckets a drawn line keeps the min and max of: about one per pixel of a chart's width."""

CHARTS = ((POWER, "power trace", "W", "trace-power"), (TEMP, "temperature trace", "°C",
          "trace-temp"))  # fmt: skip


def drawn(points: Sequence[tuple[float, float]], buckets: int = DRAWN_BUCKETS) -> list[tuple[float, float]]:
    """The points as drawn: all of them when few, else each bucket's minimum and maximum in time order."""
    if len(points) <= 2 * buckets:
        return list(points)
    out: list[tuple[float, float]] = []
    size = len(points) / buckets
    for b in range(buckets):
        chunk = points[round(b * size) : round((b + 1) * size)]
        lo, hi = min(chunk, key=lambda p: p[1]), max(chunk, key=lambda p: p[1])
        out += sorted({lo, hi})
    return out


def _representatives(jobs: Sequence[Job], traces: dict[int, dict[str, Trace]], series: str) -> list[Job]:
    """Per (role, sequence, rate): the lowest repeat with samples of ``series``, else the lowest repeat."""
    groups: dict[tuple[str, str, float], list[Job]] = defaultdict(list)
    for j in sorted(jobs, key=lambda j: j.repeat):
        groups[(j.role, j.sequence, j.rate_kbps)].append(j)
    return [
        next((j for j in group if traces.get(j.job_id, {}).get(series, Trace(series)).t_s), group[0])
        for _, group in sorted(groups.items())
    ]


def _label(job: Job) -> str:
    return f"{'bundle' if job.role == 'test' else job.role} {job.rate_kbps:g} kbps"


class _Ctx:
    """What every chart of the section reads once: the run's traces, simulated devices, idle baselines."""

    def __init__(self, store: Store, data: RunData, simulated: set[str]) -> None:
        self.traces = store.traces(data.run_id)
        self.simulated = simulated
        self.baseline: dict[str, float] = {}
        for j in data.jobs:
            if (v := j.metrics.get("baseline_w")) is not None:
                self.baseline.setdefault(j.device_id, v)


def _chart(
    data: RunData, device: str, seq: str, spec: tuple[str, str, str, str], ctx: _Ctx
) -> tuple[str, Counter[str]]:
    series_name, what, unit, css = spec
    jobs = [j for j in data.jobs if j.device_id == device and j.sequence == seq]
    rates = sorted({j.rate_kbps for j in jobs})
    lines, missing = [], Counter[str]()
    for job in jobs:
        trace = ctx.traces.get(job.job_id, {}).get(series_name)
        if trace is None or not trace.t_s:
            missing[(trace.missing_reason or "no reason recorded") if trace else NO_ROW] += 1
    for job in _representatives(jobs, ctx.traces, series_name):
        trace = ctx.traces.get(job.job_id, {}).get(series_name)
        if trace is None or not trace.t_s:
            continue
        pts = drawn(trace.points)
        color = PALETTE[rates.index(job.rate_kbps) % len(PALETTE)]
        lines.append(Series(_label(job), pts, color, dashed=job.role != "test", markers=len(pts) < 3))
    if not lines:
        return "", missing
    hlines = [(ctx.baseline[device], f"idle baseline {ctx.baseline[device]:.3g} W")] if (
        series_name == POWER and device in ctx.baseline) else []  # fmt: skip
    sim = " (SIMULATED)" if device in ctx.simulated else ""
    chart = Chart(f"{device}: {seq} {what}{sim}", "s since the decode started", unit, lines, hlines=hlines,
                  css_class=f"chart {css}", legend_at="bottom")  # fmt: skip
    return render(chart), missing


def traces_section(store: Store, data: RunData, devices: Sequence[str], simulated: set[str]) -> str:
    """Power and temperature over each decode, per device and sequence, with why a trace is missing."""
    ctx = _Ctx(store, data, simulated)
    out = [
        '<h2 id="traces">Power and temperature over each decode</h2><p class="note">As sampled on the device '
        "during each decode, on the device's clock (0 = the decoder started). One line per rate point: the first "
        "repeat with samples (bundle solid, anchor dashed); the dotted line is the idle baseline. Long traces are "
        f"drawn with the minimum and maximum of each of {DRAWN_BUCKETS} buckets, so spikes stay visible.</p>"
    ]
    if not ctx.traces:
        out.append('<p class="note">No traces are stored for this run: it was recorded before the store kept them '
                   "(schema 8), or no job reached its decode.</p>")  # fmt: skip
        return "".join(out)
    for device in devices:
        charts, notes = [], []
        for seq in sorted({j.sequence for j in data.jobs if j.device_id == device}):
            for spec in CHARTS:
                svg, missing = _chart(data, device, seq, spec, ctx)
                charts.append(svg)
                notes += [f"{seq}: {spec[1].split()[0]} trace missing for {n} job(s): {why}" for why, n in
                          sorted(missing.items())]  # fmt: skip
        if any(charts):
            out.append(f'<div class="charts">{"".join(charts)}</div>')
        if notes:
            out.append(f'<p class="note trace-missing">{escape(device)}: {escape("; ".join(notes))}</p>')
    return "".join(out)
