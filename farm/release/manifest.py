"""The release manifest: what exactly was released, bound to the stored results that allowed it.

Everything in the manifest except its ``release`` section is rebuilt from the store by :func:`bound_to_store`,
both when a release is tagged and when a tag is verified, so any difference between the two is a change to
the store (or the bundle) since the release. ``results`` holds one sha256 per table of the run's stored
results (run row, devices, jobs, measurements, run metrics, output comparisons) over canonical JSON of its
rows in a fixed order, so verification can name which kind of result changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from pathlib import Path
from typing import Any

from farm.store import Store

FORMAT = "codec-farm-release/1"


def canonical(data: Any) -> str:
    """Stable JSON: sorted keys, no NaN/Infinity (they are not JSON), one trailing newline."""
    return json.dumps(_finite(data), indent=2, sort_keys=True, allow_nan=False) + "\n"


def _finite(data: Any) -> Any:
    if isinstance(data, float) and not math.isfinite(data):
        return str(data)
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def _sha(rows: list[dict[str, Any]]) -> str:
    lines = sorted(json.dumps(_finite(r), sort_keys=True, allow_nan=False) for r in rows)
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# columns that say how a row was written, not what it measured: whether the run's controller lives (schema 7) and
# the idempotency key of the write (schema 9). Kept out of the digests, so a release tagged before they existed
# still verifies once its store is migrated, and a run copied between stores digests the same.
_BOOKKEEPING = frozenset({"heartbeat_at", "write_key"})


def _result(row: Any) -> dict[str, Any]:
    return {k: v for k, v in dict(row).items() if k not in _BOOKKEEPING}


def results_digests(store: Store, run_id: str) -> dict[str, str]:
    """sha256 per table of everything the run stored (gate evaluations are covered by the verdict list)."""
    run = store.run(run_id)
    jobs = store.jobs(run_id)
    measurements = store.measurements(run_id)
    parts = {
        "run": [_result(run)] if run is not None else [],
        "devices": [_result(r) for r in store.devices(run_id)],
        "jobs": [_result(r) for r in jobs],
        "measurements": [dict(m) for ms in measurements.values() for m in ms.values()],
        "run_metrics": [_result(r) for r in store.run_metrics(run_id)],
        "output_diffs": [_result(r) for r in store.output_diffs(run_id)],
    }
    frames = [dataclasses.asdict(f) for f in store.frame_quality(run_id)]
    if frames:  # a run stored before schema 6 has none: its digests (and the releases bound to them) stay as they were
        parts["frame_quality"] = frames
    traces = [dataclasses.asdict(t) | {"job_id": job_id} for job_id, ts in store.traces(run_id).items()
              for t in ts.values()]  # fmt: skip
    if traces:  # likewise a run without traces (stored before schema 8): its digests stay as they were
        parts["job_traces"] = traces
    digests = {name: _sha(rows) for name, rows in parts.items()}
    digests["all"] = hashlib.sha256(json.dumps(digests, sort_keys=True).encode()).hexdigest()
    return digests


def bound_to_store(store: Store, run_id: str, evaluation: int) -> dict[str, Any]:
    """The manifest's store-derived part for a run and one of its gate evaluations."""
    run = store.run(run_id)
    if run is None:
        raise KeyError(run_id)
    verdicts = [
        {
            "gate": f"{row['metric']} {row['op']} {row['threshold']}", "scope": row["scope_key"], "stat": row["stat"],
            "value": row["value"], "verdict": row["verdict"], "detail": row["detail"],
            "declared": json.loads(row["gate_json"]) if row["gate_json"] else None,
            "inputs_sha256": hashlib.sha256(row["inputs_json"].encode()).hexdigest(),
        }
        for row in store.gate_verdicts(run_id, evaluation)
    ]  # fmt: skip
    manifest = {
        "format": FORMAT,
        "run": {
            "id": run_id, "status": run["status"], "started_at": run["started_at"],
            "finished_at": run["finished_at"], "host": run["host"], "farm_version": run["farm_version"],
        },
        "bundle": {"name": run["bundle_name"], "version": run["bundle_version"], "digest": run["bundle_digest"]},
        "anchor": {"name": run["anchor_name"], "digest": run["anchor_digest"]} if run["anchor_name"] else None,
        "suite": {"name": run["suite_name"], "digest": run["suite_digest"]},
        "devices": [
            {"id": d["device_id"], "platform": d["platform"], "target": d["target"],
             "tags": json.loads(d["tags_json"]), "properties": json.loads(d["properties_json"]),
             "status": d["status"], "error": d["error"]}
            for d in store.devices(run_id)
        ],
        "gates": {"evaluation": evaluation, "verdicts": verdicts},
        "results": results_digests(store, run_id),
    }  # fmt: skip
    return manifest | _resumed(store, run_id)


def _resumed(store: Store, run_id: str) -> dict[str, Any]:
    """A resumed run says so, with each attempt (a run that ran once has no such section, as before)."""
    attempts = store.attempts(run_id)
    if len(attempts) < 2:
        return {}
    return {
        "resumed": [
            {"attempt": a.attempt, "host": a.controller_host, "started_at": a.started_at,
             "finished_at": a.finished_at, "status": a.status}
            for a in attempts
        ]
    }  # fmt: skip


def recorded_bundle(store: Store, run_id: str) -> Path | None:
    """Where the run found its bundle (runs recorded before this was kept have no path)."""
    run = store.run(run_id)
    if run is None:
        return None
    source = json.loads(run["plan_json"] or "{}").get("bundle_source")
    return Path(source) if source else None


def subject(manifest: dict[str, Any]) -> str:
    bundle = manifest["bundle"]
    return (
        f"codec-farm release {manifest['release']['version']}: {bundle['name']}@{bundle['version']} "
        f"(run {manifest['run']['id']}, every gate passed)"
    )


def tag_message(manifest: dict[str, Any]) -> str:
    """A subject line for ``git tag -l -n``, then the manifest itself."""
    return f"{subject(manifest)}\n\n{canonical(manifest)}"


def parse_tag_body(body: str) -> dict[str, Any] | None:
    """The manifest in a tag's message body, or None when the tag is not a farm release."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        return None
    if not all(isinstance(data.get(k), dict) for k in ("run", "bundle", "gates", "results", "release")):
        return None
    return data
