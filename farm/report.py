"""What a run looks like to people and to CI: the results and verdict tables, JSON, and JUnit XML.

Everything is built from the store, so ``farm report`` and ``farm gate`` show exactly what ``farm run`` did.
Missing values print as ``missing`` (never 0 or blank) so nobody mistakes an unmeasured number for a result.
"""

from __future__ import annotations

import itertools
import json
import statistics
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.markup import escape
from rich.table import Table

from farm.gates import Verdict, load_view
from farm.gates.consistency import decodes, groups
from farm.store import Store

MISSING = "missing"


def _median(values: Sequence[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    if not have or len(have) < len(values):
        return None
    return statistics.median(have)


def _mean(values: Sequence[float | None]) -> float | None:
    have = [v for v in values if v is not None]
    if not have or len(have) < len(values):
        return None
    return sum(have) / len(have)


def _fmt(value: float | None, spec: str, suffix: str = "") -> str:
    return MISSING if value is None else f"{value:{spec}}{suffix}"


def results_rows(store: Store, run_id: str) -> list[dict[str, Any]]:
    """One row per device x bundle role x sequence: medians over repeats, means over rate points."""
    view = load_view(store, run_id)
    groups: dict[tuple[str, str, str], list[Any]] = defaultdict(list)
    for job in view.jobs:
        groups[(job.device_id, job.role, job.sequence)].append(job)
    rows = []
    for (device, role, seq), jobs in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] != "test", kv[0][2])):
        ok = [j for j in jobs if j.status == "ok"]
        by_rate: dict[float, list[Any]] = defaultdict(list)
        for j in ok:
            by_rate[j.rate_kbps].append(j)

        def per_rate(name: str, rate_jobs: dict[float, list[Any]] = by_rate) -> float | None:
            return _mean([_median([j.metrics.get(name) for j in js]) for js in rate_jobs.values()])

        rows.append({
            "device": device, "role": role, "sequence": seq, "jobs": len(jobs), "failed": len(jobs) - len(ok),
            "fps_p50": _median([j.metrics.get("fps.p50") for j in ok]) if ok else None,
            "frame_ms_p99": _median([j.metrics.get("frame_time_ms.p99") for j in ok]) if ok else None,
            "bpp": per_rate("bpp") if ok else None, "psnr_yuv": per_rate("psnr_yuv") if ok else None,
            "ssim": per_rate("ssim") if ok else None, "vmaf": per_rate("vmaf") if ok else None,
            "power_w": _median([j.metrics.get("power_w") for j in ok]) if ok else None,
            "energy_per_frame_j": _median([j.metrics.get("energy_per_frame_j") for j in ok]) if ok else None,
            "temp_max_c": max((t for j in ok if (t := j.metrics.get("temp_max_c")) is not None), default=None),
            "throttled_jobs": sum(1 for j in ok if j.metrics.get("throttled") == 1.0),
        })  # fmt: skip
    return rows


def results_table(store: Store, run_id: str) -> Table:
    view = load_view(store, run_id)
    table = Table(title=f"results of run {run_id} (medians over repeats, means over rate points)")
    for col in ("device", "bundle", "sequence", "jobs", "fps p50", "p99 ms", "bpp", "PSNR-YUV", "SSIM", "VMAF",
                "power", "J/frame", "max °C"):  # fmt: skip
        table.add_column(col, justify="left" if col in {"device", "bundle", "sequence"} else "right")
    run = store.run(run_id)
    labels = {
        "test": f"{run['bundle_name']}@{run['bundle_version']}" if run else "test",
        "anchor": (run["anchor_name"] or "anchor") if run else "anchor",
    }
    simulated = {d["device_id"] for d in store.devices(run_id) if "SIMULATED" in d["properties_json"]}
    for r in results_rows(store, run_id):
        power = _fmt(r["power_w"], ".2f", " W") + (" (sim)" if r["device"] in simulated else "")
        if r["power_w"] is None:
            power = "[yellow]missing[/]"
        jobs = f"{r['jobs'] - r['failed']}/{r['jobs']}"
        table.add_row(
            r["device"], labels.get(r["role"], r["role"]), r["sequence"], f"[red]{jobs}[/]" if r["failed"] else jobs,
            _fmt(r["fps_p50"], ".0f"), _fmt(r["frame_ms_p99"], ".2f"), _fmt(r["bpp"], ".4f"),
            _fmt(r["psnr_yuv"], ".2f", " dB"), _fmt(r["ssim"], ".4f"), _fmt(r["vmaf"], ".2f"), power,
            _fmt(r["energy_per_frame_j"], ".4f"),
            _fmt(r["temp_max_c"], ".1f") + (f" [red]{r['throttled_jobs']} throttled[/]" if r["throttled_jobs"] else ""),
        )  # fmt: skip
    if simulated:
        table.caption = (
            f"power and temperature of {', '.join(sorted(simulated))} are SIMULATED by the virtual-board load model"
        )
    for device, metrics in sorted(view.device_metrics.items()):
        parts = []
        for name in ("bd_rate.psnr_yuv", "bd_rate.vmaf"):
            value, detail = metrics.get(name, (None, None))
            shown = f"{value * 100:+.2f}%" if value is not None else escape(f"missing ({detail})")
            parts.append(f"{name.split('.')[1]} {shown}")
        if run and run["anchor_name"]:
            table.caption = (table.caption + "\n" if table.caption else "") + (
                f"{device}: BD-rate of {run['bundle_name']} vs {run['anchor_name']}: " + ", ".join(parts)
            )
    return table


def verdict_table(verdicts: Sequence[Verdict], title: str = "gates") -> Table:
    table = Table(title=title)
    for col in ("gate", "scope", "value", "verdict", "detail"):
        table.add_column(col)
    style = {"pass": "[green]PASS[/]", "fail": "[red]FAIL[/]", "missing": "[yellow]MISSING[/]",
             "inconclusive": "[yellow]INCONCLUSIVE[/]"}  # fmt: skip
    for v in verdicts:
        value = _value_text(v)
        thr = f"{v.threshold:g}" if isinstance(v.threshold, float | int) else str(v.threshold)
        table.add_row(
            f"{v.metric} {v.op} {thr}", escape(v.scope_key), escape(value), style[v.verdict], escape(v.detail[:160])
        )
    return table


def _value_text(v: Verdict) -> str:
    if v.value is None:
        # an inconclusive comparison has no value because nothing could be decided, not because it is unmeasured
        return "-" if v.verdict == "inconclusive" else MISSING
    if isinstance(v.value, float) and v.gate.get("baseline") is not None:
        return f"{v.value * 100:+.2f}%"  # baseline gates: the shift relative to the baseline
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


def run_json(store: Store, run_id: str, verdicts: Sequence[Verdict]) -> dict[str, Any]:
    run = store.run(run_id)
    assert run is not None
    view = load_view(store, run_id)
    return {
        "run": {k: v for k, v in dict(run).items() if not k.endswith("_json")}
        | {"conventions": json.loads(run["conventions_json"]), "summary": json.loads(run["summary_json"] or "{}")},
        "devices": [
            {"id": d["device_id"], "platform": d["platform"], "target": d["target"], "status": d["status"],
             "error": d["error"], "properties": json.loads(d["properties_json"])}
            for d in store.devices(run_id)
        ],
        "results": results_rows(store, run_id),
        "device_metrics": {d: {k: {"value": v, "detail": why} for k, (v, why) in m.items()}
                           for d, m in view.device_metrics.items()},
        "gates": [v.as_dict() for v in verdicts],
        "passed": bool(verdicts) and all(v.verdict == "pass" for v in verdicts),
    }  # fmt: skip


def write_json(path: Path, store: Store, run_id: str, verdicts: Sequence[Verdict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(run_json(store, run_id, verdicts), indent=2, default=str) + "\n")


def write_junit(path: Path, run_id: str, suite_name: str, verdicts: Sequence[Verdict]) -> None:
    """One testcase per gate per scope; missing is a failure (it must never read as passed)."""
    failures = sum(1 for v in verdicts if v.verdict != "pass")
    suites = ET.Element("testsuites", name="codec-farm", tests=str(len(verdicts)), failures=str(failures))
    suite = ET.SubElement(
        suites, "testsuite", name=f"{suite_name}", tests=str(len(verdicts)), failures=str(failures),
        errors="0", skipped="0",
    )  # fmt: skip
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="run_id", value=run_id)
    for v in verdicts:
        case = ET.SubElement(suite, "testcase", classname=f"farm.{suite_name}.{v.scope_key}", name=v.label)
        if v.verdict != "pass":
            value = "missing" if v.value is None else str(v.value)
            failure = ET.SubElement(case, "failure", type=v.verdict, message=f"{v.verdict}: value {value}")
            failure.text = v.detail
        else:
            ET.SubElement(case, "system-out").text = f"value {v.value}: {v.detail}"
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
