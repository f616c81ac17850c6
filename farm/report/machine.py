"""What scripts read: the run as JSON, its rate points as CSV, and ``-`` meaning standard output.

Numbers stay numbers (fractions for BD-rate, never ``"-18.03%"``) and a value that was not measured is null
(JSON) or empty (CSV), never 0. The JSON's keys are a contract: add keys, never rename them.
"""

from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from farm.emulation import emulated_devices
from farm.gates import Verdict, load_view, passing
from farm.report.anchors import per_operation, run_anchors
from farm.report.frames import per_frame_json
from farm.report.points import KEYS, job_metric_names, rate_point_rows, sequence_bd_rows
from farm.report.tables import results_rows
from farm.store import Store

STDOUT = "-"
"""The file name that means standard output, as for most Unix tools."""


def is_stdout(path: Path | str | None) -> bool:
    return path is not None and str(path) == STDOUT


def emit(path: Path | str, text: str) -> None:
    """Write ``text`` to a file (creating its folder) or, for ``-``, to standard output."""
    if is_stdout(path):
        sys.stdout.write(text)
        sys.stdout.flush()
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


def dumps(doc: Any) -> str:
    return json.dumps(doc, indent=2, default=str) + "\n"


def run_json(store: Store, run_id: str, verdicts: Sequence[Verdict]) -> dict[str, Any]:
    """The whole run: ``results`` (one row per device x role x sequence, as the table), ``rate_points`` (every
    rate point), ``anchors`` (name, role, label; the first is the default), ``bd_rate`` (per device x anchor x
    metric x sequence with overlap and warnings), ``per_operation`` (per device: kMAC/pixel, parameters, model
    bytes beside the BD-rate against each anchor), ``device_metrics`` (the stored per-device BD-rates and
    complexity with their detail strings), ``per_frame`` (per scored output: its jobs and per-frame PSNR per
    plane, PSNR-YUV, SSIM, VMAF and flicker as lists), ``gates`` and ``passed``."""
    run = store.run(run_id)
    assert run is not None
    view = load_view(store, run_id)
    emulated = emulated_devices(store.devices(run_id))
    return {
        "run": {k: v for k, v in dict(run).items() if not k.endswith("_json")}
        | {"conventions": json.loads(run["conventions_json"]), "summary": json.loads(run["summary_json"] or "{}")},
        "devices": [
            {"id": d["device_id"], "platform": d["platform"], "target": d["target"], "status": d["status"],
             "error": d["error"], "emulated": d["device_id"] in emulated,
             "properties": json.loads(d["properties_json"])}
            for d in store.devices(run_id)
        ],
        "results": [r | {"fps_label": "EMULATED" if r["device"] in emulated else None}
                    for r in results_rows(store, run_id)],
        "rate_points": rate_point_rows(store, run_id),
        "anchors": [asdict(a) for a in run_anchors(run)],
        "bd_rate": sequence_bd_rows(store, run_id),
        "per_operation": per_operation(run, view),
        "device_metrics": {d: {k: {"value": v, "detail": why} for k, (v, why) in m.items()}
                           for d, m in view.device_metrics.items()},
        "per_frame": per_frame_json(store, run_id),
        "gates": [v.as_dict() for v in verdicts],
        "passed": bool(verdicts) and all(passing(v.verdict) for v in verdicts),
    }  # fmt: skip


def write_json(path: Path | str, store: Store, run_id: str, verdicts: Sequence[Verdict]) -> None:
    emit(path, dumps(run_json(store, run_id, verdicts)))


def csv_text(rows: Sequence[dict[str, Any]]) -> str:
    """Rate-point rows as CSV with a fixed header (a missing value is an empty cell, not 0)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=[*KEYS, *job_metric_names()], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def write_csv(path: Path | str, store: Store, run_id: str) -> None:
    emit(path, csv_text(rate_point_rows(store, run_id)))
