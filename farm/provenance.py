"""Runtime provenance: which ML runtime, version and execution providers really decoded, as the decoder reported it.

A learned-codec decoder adds one line ``{"runtime": {...}}`` to its stats file (docs/decoder-contract.md). The
farm keeps it with the device's properties (run_devices.properties_json), like getprop, under ``runtime[ROLE].KEY``
so the tested bundle and its anchor stay apart; when jobs of one role disagree (another provider took over half way,
a different model file) the property says so instead of keeping the last value.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, MutableMapping, Sequence

DISAGREE = "DISAGREE: "


def runtime_line(rec: object) -> bool:
    """Whether one parsed stats line is the runtime report rather than a frame time."""
    return isinstance(rec, dict) and "runtime" in rec and "frame" not in rec


def parse_runtime(rec: Mapping[str, object], lineno: int) -> tuple[dict[str, str], str | None]:
    """The runtime object flattened to text values (lists joined by commas), or an error naming the line."""
    body = rec.get("runtime")
    if not isinstance(body, dict) or not body:
        return {}, f'stats line {lineno}: "runtime" must be a non-empty JSON object'
    out: dict[str, str] = {}
    for key, value in body.items():
        if isinstance(value, list):
            out[str(key)] = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            out[str(key)] = json.dumps(value, sort_keys=True, separators=(",", ":"))
        elif isinstance(value, bool):
            out[str(key)] = "yes" if value else "no"
        else:
            out[str(key)] = str(value)
    return out, None


def merge(props: MutableMapping[str, str | float], role: str, reported: Mapping[str, str]) -> None:
    """Add one job's report to the device's properties; a value that differs from an earlier job's is kept beside it.

    ``runtime_disagreement`` then lists the keys whose jobs disagreed, so a report or a reviewer sees it at once.
    """
    for key, value in sorted(reported.items()):
        name = f"runtime[{role}].{key}"
        old = props.get(name)
        if old is None:
            props[name] = value
            continue
        seen = str(old).removeprefix(DISAGREE).split(" | ")
        if value not in seen:
            props[name] = DISAGREE + " | ".join([*seen, value])
            keys = [k for k in str(props.get("runtime_disagreement", "")).split(",") if k]
            props["runtime_disagreement"] = ",".join(sorted({*keys, name}))


def summary(props: Mapping[str, object]) -> list[str]:
    """One human line per role: runtime, version, providers used and CPU-fallback nodes (for the report tables)."""
    roles = sorted({k[len("runtime[") : k.index("]")] for k in props if k.startswith("runtime[") and "]" in k})
    lines = []
    for role in roles:

        def get(key: str, role: str = role) -> str:
            return str(props.get(f"runtime[{role}].{key}", "?"))

        lines.append(
            f"{role}: {get('name')} {get('version')}, providers used {get('providers_used')} "
            f"(requested {get('providers_requested')}), CPU fallback nodes {get('cpu_fallback_nodes')}"
        )
    if props.get("runtime_disagreement"):
        lines.append(f"jobs disagreed on {props['runtime_disagreement']}")
    return lines


def runtime_of(lines: Sequence[str]) -> tuple[tuple[tuple[str, str], ...], str | None]:
    """The decoder's runtime report from its stats lines (none: ``()``); more than one report is an error."""
    found: list[dict[str, str]] = []
    for lineno, line in enumerate(lines, 1):
        try:
            rec = json.loads(line) if line.strip() else None
        except ValueError:
            continue  # parse_stats names malformed lines
        if runtime_line(rec):
            assert isinstance(rec, dict)
            values, error = parse_runtime(rec, lineno)
            if error:
                return (), error
            found.append(values)
    if len(found) > 1:
        return (), f"stats: {len(found)} runtime lines, expected at most one"
    return (tuple(sorted(found[0].items())) if found else ()), None
