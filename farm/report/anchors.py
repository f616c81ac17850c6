"""A stored run's anchors and its compression-per-operation view, for the tables, JSON and HTML alike.

Runs stored before several anchors existed have no ``anchors_json``: their one anchor (if any) is
``anchor_name`` (``name@version``), its jobs have role ``anchor``, and its name is its bundle's.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from farm.gates.view import RunView
from farm.measures import per_anchor, split_anchor

QUALITIES = ("psnr_yuv", "vmaf")
COMPLEXITY = ("complexity.kmac_per_pixel", "complexity.params", "complexity.model_bytes")


@dataclass(frozen=True)
class RunAnchor:
    name: str
    role: str  # the jobs' role: 'anchor' for the first, 'anchor:NAME' for the others
    label: str  # bundle name@version


def run_anchors(run: Any) -> list[RunAnchor]:
    """The run's anchors in order (the first is the default), from its ``runs`` row."""
    if run is None:
        return []
    if run["anchors_json"]:
        return [RunAnchor(a["name"], a["role"], a["label"]) for a in json.loads(run["anchors_json"])]
    if run["anchor_name"]:
        return [RunAnchor(str(run["anchor_name"]).split("@", 1)[0], "anchor", str(run["anchor_name"]))]
    return []


def bd_metric(quality: str, anchor: RunAnchor, anchors: list[RunAnchor]) -> str:
    """The stored name of the BD-rate against ``anchor``: an old single-anchor run has only ``bd_rate.Q``."""
    return f"bd_rate.{quality}" if anchor == anchors[0] else per_anchor(f"bd_rate.{quality}", anchor.name)


def per_operation(run: Any, view: RunView) -> list[dict[str, Any]]:
    """Per device: the bundle's complexity beside its BD-rate against each anchor (compression per operation).

    Values are as stored (BD-rate a fraction, complexity in its declared unit); a missing one is None with its
    reason under ``detail``.
    """
    anchors = run_anchors(run)
    rows = []
    for device, metrics in sorted(view.device_metrics.items()):
        row: dict[str, Any] = {"device": device, "bundle": f"{run['bundle_name']}@{run['bundle_version']}"}
        for name in COMPLEXITY:
            row[name.split(".", 1)[1]] = metrics.get(name, (None, None))[0]
        row["complexity_detail"] = metrics.get(COMPLEXITY[0], (None, "not computed"))[1]
        row["bd_rate"] = {
            a.name: {q: metrics.get(bd_metric(q, a, anchors), (None, None))[0] for q in QUALITIES} for a in anchors
        }
        rows.append(row)
    return rows


def gate_notes(metric: str, notes: Sequence[str]) -> list[str]:
    """The BD-rate caveats (farm.report.points.bd_warnings, each starting with its metric's name) that belong
    to a gate on ``metric``: those about the same anchor (``bd_rate.Q`` is the default anchor's)."""
    if not metric.startswith("bd_rate"):
        return []
    anchor = split_anchor(metric)[1]
    return [n for n in notes if split_anchor(n.split(" ", 1)[0])[1] == anchor]
