"""Gate verdicts as JUnit XML, the format every CI shows as tests: one testcase per gate per scope.

CI dashboards plot ``time`` and sort by ``timestamp``, so both are filled from the store: a testcase's time is
the decode time of the jobs in its scope (a device's jobs, or the whole run's wall time for ``all`` and tags),
the testsuite's timestamp is when the run started. A BD-rate that passes on a sliver of overlapping quality
is still a pass (unless the suite gates on it), but CI readers must see the caveat: it goes into the case's
``system-out`` and a ``warning`` property.
"""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

from farm.gates import Verdict, passing
from farm.report.anchors import gate_notes
from farm.store import Store


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))


def _device_seconds(store: Store, run_id: str) -> dict[str, float]:
    seconds: dict[str, float] = defaultdict(float)
    for row in store.jobs(run_id):
        seconds[row["device_id"]] += max(0.0, float(row["finished_at"]) - float(row["started_at"]))
    return dict(seconds)


def _run_window(store: Store, run_id: str) -> tuple[float | None, float]:
    """When the run started and how long it took (0 while it has not finished)."""
    run = store.run(run_id)
    if run is None:
        return None, 0.0
    finished = run["finished_at"]
    return float(run["started_at"]), max(0.0, float(finished) - float(run["started_at"])) if finished else 0.0


def write_junit(
    path: Path,
    run_id: str,
    suite_name: str,
    verdicts: Sequence[Verdict],
    store: Store | None = None,
    warnings: Mapping[str, Sequence[str]] | None = None,
) -> None:
    """One testcase per gate per scope; missing is a failure (it must never read as passed), exempt (a timing gate
    on an emulated CPU) is skipped with its reason, so CI shows the board's speed was not judged.

    ``store`` gives the times; ``warnings`` (device -> BD-rate caveats) become notes on that device's BD-rate
    cases.
    """
    failures = sum(1 for v in verdicts if not passing(v.verdict))
    skipped = sum(1 for v in verdicts if v.verdict == "exempt")
    started, duration = _run_window(store, run_id) if store else (None, 0.0)
    per_device = _device_seconds(store, run_id) if store else {}
    suites = ET.Element("testsuites", name="codec-farm", tests=str(len(verdicts)), failures=str(failures),
                        time=f"{duration:.3f}")  # fmt: skip
    suite = ET.SubElement(
        suites, "testsuite", name=f"{suite_name}", tests=str(len(verdicts)), failures=str(failures),
        errors="0", skipped=str(skipped), time=f"{duration:.3f}",
    )  # fmt: skip
    if started is not None:
        suite.set("timestamp", _iso(started))
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="run_id", value=run_id)
    for v in verdicts:
        seconds = per_device.get(v.scope_key, duration)
        case = ET.SubElement(suite, "testcase", classname=f"farm.{suite_name}.{v.scope_key}", name=v.label,
                             time=f"{seconds:.3f}")  # fmt: skip
        notes = gate_notes(v.metric, (warnings or {}).get(v.scope_key, ()))
        if v.verdict == "exempt":
            ET.SubElement(case, "skipped", message=v.detail)
        elif v.verdict != "pass":
            value = "missing" if v.value is None else str(v.value)
            failure = ET.SubElement(case, "failure", type=v.verdict, message=f"{v.verdict}: value {value}")
            failure.text = "\n".join([v.detail, *(f"warning: {n}" for n in notes)])
        else:
            ET.SubElement(case, "system-out").text = "\n".join(
                [f"value {v.value}: {v.detail}", *(f"warning: {n}" for n in notes)]
            )
        if notes:
            props = ET.SubElement(case, "properties")
            for note in notes:
                ET.SubElement(props, "property", name="warning", value=note)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(suites).write(path, encoding="utf-8", xml_declaration=True)
