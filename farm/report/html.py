"""``farm report RUN --html FILE``: one self-contained HTML page of a stored run, for people and CI artifacts.

Why one file with inline CSS and inline SVG and no script: a CI artifact is opened offline, often from a zip, so
nothing may load from a network or a sibling file, and a page without JavaScript has nothing that can fail in a
browser console. Verdicts come first because that is what a reader opens it for; the pictures explain them.
Every string that comes from the store (device ids, errors, properties, gate details) is escaped.
Power and temperature over each decode (schema 8 traces) are drawn by farm/report/traces.py; what a job lacks is
said on the page, never drawn as zeros.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable, Sequence
from html import escape
from pathlib import Path

from farm.emulation import emulated_devices
from farm.gates import Verdict, load_view, passing
from farm.measures import MEASURES, measure
from farm.report.anchors import per_operation, run_anchors
from farm.report.frames import frames_section
from farm.report.rundata import QUALITY_METRICS, Job, RunData, bd_text, curve_bd_rate, load
from farm.report.svg import PALETTE, Chart, Series, render
from farm.report.traces import traces_section
from farm.store import Store

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{font-size:1.5em}h2{border-bottom:1px solid #ccc;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 7px;text-align:left;
vertical-align:top}th{background:#f3f3f3}.pass{background:#d9f2d9}.fail{background:#f8d0d0}
.missing,.inconclusive{background:#fbefc4}.note{color:#555}.sim{color:#a33;font-weight:bold}
.charts{display:flex;flex-wrap:wrap;gap:10px}svg{font:11px sans-serif;border:1px solid #ddd}
.banner{font-size:1.3em;padding:.4em .8em;display:inline-block;border-radius:4px}
"""


def table(head: Sequence[str], rows: Iterable[Sequence[str]], cls: Sequence[str] | None = None) -> str:
    """An HTML table; cells are escaped here, so callers pass plain text."""
    body = []
    for i, row in enumerate(rows):
        attr = f' class="{escape(cls[i])}"' if cls and cls[i] else ""
        body.append(f"<tr{attr}>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
    top = "<tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>" if head else ""
    return "<table>" + top + "".join(body) + "</table>"


def _num(value: float | None, digits: int = 4) -> str:
    return "missing" if value is None else f"{value:.{digits}g}"


def _count(value: float | None) -> str:
    return "missing" if value is None else f"{int(value):,}"


def _simulated(store: Store, run_id: str) -> set[str]:
    return {d["device_id"] for d in store.devices(run_id) if "SIMULATED" in d["properties_json"]}


def _color(devices: Sequence[str], device: str) -> str:
    return PALETTE[devices.index(device) % len(PALETTE)] if device in devices else PALETTE[-1]


def _header(store: Store, run_id: str, verdicts: Sequence[Verdict]) -> str:
    run = store.run(run_id)
    assert run is not None
    passed = bool(verdicts) and all(passing(v.verdict) for v in verdicts)
    banner = "PASSED" if passed else ("NO VERDICTS" if not verdicts else "NOT PASSED")
    started = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(run["started_at"]))
    anchor = ", ".join(f"{a.name} ({a.label})" for a in run_anchors(run)) or "none"
    facts = [("run", run_id), ("suite", run["suite_name"]), ("bundle", f"{run['bundle_name']}@{run['bundle_version']}"),
             ("bundle digest", run["bundle_digest"]), ("anchor", anchor), ("status", run["status"]),
             ("started", started), ("host", run["host"]), ("farm", run["farm_version"])]  # fmt: skip
    return (
        f"<h1>codec-farm run {escape(run_id)}</h1>"
        f'<p><span class="banner {"pass" if passed else "fail"}" id="overall">{banner}</span></p>' + table((), facts)
    )


def _verdict_value(v: Verdict) -> str:
    """BD-rates and baseline shifts are fractions in the store and % for people; inconclusive has no value."""
    if v.value is None:
        return "-" if v.verdict in ("inconclusive", "exempt") else "missing"
    if isinstance(v.value, str):
        return v.value
    if v.metric.startswith("bd_rate") or v.gate.get("baseline") is not None:
        return _pct(float(v.value))
    return _num(float(v.value))


def _verdicts(verdicts: Sequence[Verdict]) -> str:
    rows = [(v.label, v.verdict.upper(), _verdict_value(v), v.detail) for v in verdicts]
    if not rows:
        return '<h2 id="verdicts">Verdicts</h2><p>no gate evaluation stored for this run</p>'
    return '<h2 id="verdicts">Verdicts</h2>' + table(
        ("gate [scope]", "verdict", "value", "detail"), rows, [v.verdict for v in verdicts]
    )


def _roles(store: Store, run_id: str) -> list[tuple[str, str]]:
    """(role, name as drawn): the bundle, then each anchor (just 'anchor' when the run has one)."""
    anchors = run_anchors(store.run(run_id))
    named = [(a.role, f"anchor {a.name}" if len(anchors) > 1 else "anchor") for a in anchors]
    return [("test", "bundle"), *named]


def _rd_chart(data: RunData, seq: str, metric: str, devices: Sequence[str], roles: Sequence[tuple[str, str]]) -> str:
    series = []
    for device in devices:
        for role, shown in roles:
            pts = data.curve(device, role, seq, metric)
            if pts:
                series.append(Series(f"{device} {shown}", [(p.rate, p.quality) for p in pts],
                                     _color(devices, device), dashed=role != "test"))  # fmt: skip
    m = measure(metric)
    unit = data.rate_unit(seq)
    label = f"actual rate, {unit} (log)" if unit == "kbps" else "bpp (log; the sequence's fps is not in the suite)"
    y = f"{metric} ({m.unit})" if m.unit else f"{metric} ({m.help})"
    return render(
        Chart(f"{seq}: rate vs {metric}", label, y, series, log_x=True, css_class="chart rd", legend_at="bottom")
    )


def _bd_rows(
    data: RunData, seq: str, devices: Sequence[str], roles: Sequence[tuple[str, str]]
) -> list[tuple[str, str, str]]:
    rows = []
    for device in devices:
        for role, shown in roles[1:] or [("anchor", "anchor")]:
            for metric in QUALITY_METRICS:
                anchor, test = data.curve(device, role, seq, metric), data.curve(device, "test", seq, metric)
                name = metric if len(roles) <= 2 else f"{metric} vs {shown.removeprefix('anchor ')}"
                if not anchor:
                    rows.append((device, name, "not computed: no anchor curve"))
                    continue
                rows.append((device, name, bd_text(curve_bd_rate(anchor, test))))
    return rows


def _rd_section(store: Store, data: RunData, devices: Sequence[str]) -> str:
    out = [
        '<h2 id="rd">Rate-quality curves</h2><p class="note">Bundle solid, anchors dashed, one colour per device; '
        "points are the mean over repeats of the actual rate (bitstream bytes x 8 / duration, not the target) "
        "and of the quality. Devices that decoded bit-exactly draw the same curve, on top of each other. BD-rate: "
        "PCHIP over the overlapping quality range (negative = fewer bits).</p>"
    ]
    roles = _roles(store, data.run_id)
    for seq in sorted({j.sequence for j in data.jobs}):
        charts = "".join(_rd_chart(data, seq, metric, devices, roles) for metric in QUALITY_METRICS)
        out.append(f'<h3>{escape(seq)}</h3><div class="charts">{charts}</div>')
        out.append(table(("device", "metric", "BD-rate of the bundle vs the anchor"),
                         _bd_rows(data, seq, devices, roles)))  # fmt: skip
    stored = [(r["device_id"], r["name"], _pct(r["value"]), r["detail"] or "") for r in store.run_metrics(data.run_id)
              if r["name"].startswith("bd_rate")]  # fmt: skip
    if stored:
        out.append("<h3>BD-rate as the gates read it (mean over sequences)</h3>")
        out.append(table(("device", "metric", "value", "detail (per sequence)"), stored))
    return "".join(out) + _per_operation(store, data.run_id)


def _per_operation(store: Store, run_id: str) -> str:
    """Compression per operation: the decoder's kMAC/pixel beside the BD-rate against each anchor."""
    run = store.run(run_id)
    anchors = run_anchors(run)
    rows = [
        (r["device"], r["bundle"], _num(r["kmac_per_pixel"]), _count(r["params"]), _count(r["model_bytes"]),
         *(_pct(r["bd_rate"][a.name]["psnr_yuv"]) for a in anchors), r["complexity_detail"] or "")
        for r in (per_operation(run, load_view(store, run_id)) if run else [])
    ]  # fmt: skip
    head = ("device", "bundle", "kMAC/pixel", "params", "model bytes", *(f"BD-rate vs {a.name}" for a in anchors),
            "how counted / why missing")  # fmt: skip
    return '<h2 id="per-operation">Compression per operation</h2>' + table(head, rows)


def _pct(value: float | None) -> str:
    return "missing" if value is None else f"{value * 100:+.2f}%"


def _steady(data: RunData, job: Job) -> list[float]:
    """Frame times in ms after the suite's warm-up frames (what fps is computed from)."""
    return [t / 1e6 for t in job.frame_times_ns[data.suite.warmup_frames :]]


def _ecdf(values: Sequence[float]) -> list[tuple[float, float]]:
    ordered = sorted(values)
    return [(v, (i + 1) / len(ordered)) for i, v in enumerate(ordered)]


def _speed_charts(data: RunData, device: str) -> str:
    dist, over = [], []
    for i, role in enumerate(("test", "anchor")):
        times = [t for j in data.jobs if (j.device_id, j.role, j.status) == (device, role, "ok")
                 for t in _steady(data, j)]  # fmt: skip
        if times:
            dist.append(Series(f"{'bundle' if role == 'test' else 'anchor'}", _ecdf(times), PALETTE[i],
                               dashed=role == "anchor", markers=False))  # fmt: skip
    tests = [j for j in data.jobs if (j.device_id, j.role, j.status) == (device, "test", "ok") and j.frame_times_ns]
    for k, j in enumerate(tests):
        pts = [(float(n), t / 1e6) for n, t in enumerate(j.frame_times_ns)]
        over.append(Series(f"{j.sequence}@{j.rate_kbps:g}k r{j.repeat}", pts, PALETTE[k % len(PALETTE)]))
    warm = f", first {data.suite.warmup_frames} are warm-up" if data.suite.warmup_frames else ""
    dist_chart = Chart(
        f"{device}: frame-time distribution (steady state)",
        "frame decode time, ms",
        "fraction of frames",
        dist,
        log_x=True,
        css_class="chart frametimes",
        legend_at="bottom",
    )
    over_chart = Chart(
        f"{device}: bundle frame time over frames{warm}",
        "frame",
        "decode time, ms",
        over,
        css_class="chart frameseries",
    )
    return render(dist_chart) + render(over_chart)  # fmt: skip


def _speed_section(data: RunData, devices: Sequence[str], emulated: set[str] | None = None) -> str:
    out = ['<h2 id="speed">Frame rate and frame times</h2><p class="note">fps = steady-state frames after warm-up '
           "/ their decode time (per-frame decoder timestamps when the decoder reports them).</p>"]  # fmt: skip
    names = ("fps", "fps.p50", "frame_time_ms.p50", "frame_time_ms.p99", "deadline_misses", "wall_s")
    rows = []
    emulated = emulated or set()
    for device in devices:
        if device in emulated:
            out.append(f'<p class="sim">{escape(device)}: frame rates are EMULATED (QEMU TCG), not a measurement '
                       "of any hardware.</p>")  # fmt: skip
        out.append(f'<div class="charts">{_speed_charts(data, device)}</div>')
        label = f"{device} (EMULATED)" if device in emulated else device
        for role in ("test", "anchor"):
            jobs = [j for j in data.jobs if (j.device_id, j.role, j.status) == (device, role, "ok")]
            if jobs:
                rows.append((label, role, str(len(jobs)), *(_num(_median(jobs, n)) for n in names)))
    out.append(table(("device", "role", "jobs", *(f"median {n} ({measure(n).unit})" for n in names)), rows))
    return "".join(out)


def _median(jobs: Sequence[Job], name: str) -> float | None:
    values = sorted(v for j in jobs if (v := j.metrics.get(name)) is not None)
    return values[len(values) // 2] if values else None


def _job_series(data: RunData, device: str, names: Sequence[str], start: float) -> list[Series]:
    jobs = [j for j in data.jobs if j.device_id == device and j.status == "ok"]
    out = []
    for i, name in enumerate(names):
        pts = [(j.started_at - start, v) for j in jobs if (v := j.metrics.get(name)) is not None]
        out.append(Series(name, pts, PALETTE[i], line=False))
    return out


def _reasons(store: Store, run_id: str, device: str, names: Sequence[str]) -> str:
    """Why a metric is missing on a device, as the session recorded it (so 'missing' is never unexplained)."""
    ids = {int(r["id"]) for r in store.jobs(run_id) if r["device_id"] == device}
    found: dict[str, set[str]] = defaultdict(set)
    for job_id, ms in store.measurements(run_id).items():
        for name in names:
            if job_id in ids and name in ms and ms[name]["value"] is None:
                found[name].add(str(ms[name]["missing_reason"] or "no reason recorded"))
    return "; ".join(f"{n} missing: {', '.join(sorted(r))}" for n, r in sorted(found.items()))


def _power_section(store: Store, data: RunData, devices: Sequence[str], simulated: set[str]) -> str:
    out = [
        '<h2 id="power">Power, energy and temperature per job</h2><p class="note">One point per job, by when it '
        "started (seconds since the first job). The dotted line is the idle baseline measured before the jobs; "
        "energy per frame already subtracts it: (energy - baseline x time) / frames. The samples within each "
        'decode are drawn <a href="#traces">below</a>.</p>'
    ]
    start = min((j.started_at for j in data.jobs), default=0.0)
    for device in devices:
        sim = " (SIMULATED)" if device in simulated else ""
        baseline = next((v for j in data.jobs if j.device_id == device
                         if (v := j.metrics.get("baseline_w")) is not None), None)  # fmt: skip
        hlines = [(baseline, f"idle baseline {baseline:.3g} W")] if baseline is not None else []
        charts = [
            Chart(f"{device}: power per job{sim}", "s since first job", "W",
                  _job_series(data, device, ("power_w",), start), hlines=hlines, css_class="chart power"),
            Chart(f"{device}: energy per frame{sim}", "s since first job", "J/frame",
                  _job_series(data, device, ("energy_per_frame_j",), start), css_class="chart energy"),
            Chart(f"{device}: temperature{sim}", "s since first job", "°C",
                  _job_series(data, device, ("temp_start_c", "temp_max_c", "temp_end_c"), start),
                  css_class="chart temperature", legend_at="bottom"),
        ]  # fmt: skip
        if sim:
            out.append(f'<p class="sim">{escape(device)}: power and temperature are SIMULATED by the virtual-board '
                       "load model, not measured.</p>")  # fmt: skip
        out.append(f'<div class="charts">{"".join(render(c) for c in charts)}</div>')
        names = ("power_w", "energy_per_frame_j", "baseline_w", "temp_max_c")
        if reasons := _reasons(store, data.run_id, device, names):
            out.append(f'<p class="note">{escape(device)}: {escape(reasons)}</p>')
    return "".join(out)


def _consistency(data: RunData, devices: Sequence[str]) -> str:
    """Devices x devices: of the bitstreams both decoded, how many came out bit-identical."""
    outputs: dict[tuple[str, str, float], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for j in data.jobs:
        if j.status == "ok" and j.output_sha:
            outputs[(j.role, j.sequence, j.rate_kbps)][j.device_id].add(j.output_sha)
    rows, classes = [], []
    for a in devices:
        cells = [a]
        worst = "pass"
        for b in devices:
            both = [o for o in outputs.values() if a in o and b in o]
            same = sum(1 for o in both if o[a] == o[b] and len(o[a]) == 1)
            cells.append(f"{same}/{len(both)}" if both else "-")
            worst = worst if same == len(both) else "fail"
        rows.append(cells)
        classes.append(worst)
    return (
        '<h2 id="consistency">Cross-device consistency</h2><p class="note">Bitstreams decoded bit-identically by '
        "both devices (and identically over repeats) / bitstreams both decoded.</p>"
        + table(("device", *devices), rows, classes)
    )


def _devices(store: Store, run_id: str, simulated: set[str]) -> str:
    emulated = emulated_devices(store.devices(run_id))
    rows = []
    for d in store.devices(run_id):
        props = json.loads(d["properties_json"])
        shown = "; ".join(f"{k}={v}" for k, v in sorted(props.items()))
        sim = "SIMULATED sensors" if d["device_id"] in simulated else ""
        if d["device_id"] in emulated:
            sim = ", ".join(x for x in (sim, "EMULATED CPU") if x)
        rows.append((d["device_id"], d["platform"], d["target"], d["status"], d["error"] or "", sim, shown))
    head = ("device", "platform", "target", "status", "error", "sensors", "properties")
    return '<h2 id="devices">Devices</h2>' + table(head, rows)


def _conventions(store: Store, run_id: str) -> str:
    run = store.run(run_id)
    assert run is not None
    conv = json.loads(run["conventions_json"])
    rows = [(k, str(v)) for k, v in sorted(conv.items())]
    used = {(name, m["unit"], m["convention"]) for ms in store.measurements(run_id).values() for name, m in ms.items()}
    per_metric = sorted((n, u, MEASURES[n].help if n in MEASURES else "", c) for n, u, c in used)
    return (
        '<h2 id="conventions">Measurement conventions</h2>' + table(("what", "convention"), rows)
        + "<h3>Per metric, as recorded with each value</h3>"
        + table(("metric", "unit", "meaning", "how it was taken"), per_metric)
    )  # fmt: skip


def render_run(store: Store, run_id: str, verdicts: Sequence[Verdict]) -> str:
    """The whole page as a string."""
    data = load(store, run_id)
    devices = sorted({j.device_id for j in data.jobs} | {d["device_id"] for d in store.devices(run_id)})
    simulated = _simulated(store, run_id)
    emulated = emulated_devices(store.devices(run_id))
    parts = [
        _header(store, run_id, verdicts), _verdicts(verdicts), _rd_section(store, data, devices),
        frames_section(store, run_id), _speed_section(data, devices, emulated),
        _power_section(store, data, devices, simulated), traces_section(store, data, devices, simulated),
        _consistency(data, devices), _devices(store, run_id, simulated), _conventions(store, run_id),
    ]  # fmt: skip
    title = escape(f"codec-farm run {run_id}")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
            f"<style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")  # fmt: skip


def write_html(path: Path, store: Store, run_id: str, verdicts: Sequence[Verdict]) -> int:
    """Write the page; returns its size in bytes (the CLI prints it, so a growing report is noticed)."""
    page = render_run(store, run_id, verdicts).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(page)
    return len(page)
