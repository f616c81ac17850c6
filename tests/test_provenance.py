"""Runtime provenance from the decoder's stats: parsing, the frame times beside it, and jobs that disagree."""

from __future__ import annotations

import json

from farm import provenance
from farm.devices.posix import parse_decode, parse_stats

RUNTIME = {"runtime": {"name": "onnxruntime", "version": "1.32.0", "providers_requested": ["CPUExecutionProvider"],
                       "providers_used": ["CPUExecutionProvider"], "cpu_fallback_disabled": False,
                       "nodes_by_provider": {"CPUExecutionProvider": 33}, "cpu_fallback_nodes": 0}}  # fmt: skip
FRAMES = [{"frame": 0, "decode_ns": 1000}, {"frame": 1, "decode_ns": 2000}]


def lines(*records: object) -> list[str]:
    return [json.dumps(r) for r in records]


def test_the_runtime_line_is_read_and_the_frame_times_ignore_it() -> None:
    stats = lines(RUNTIME, *FRAMES)
    assert parse_stats(stats) == ((1000, 2000), None)
    runtime, error = provenance.runtime_of(stats)
    assert error is None
    assert dict(runtime) == {
        "name": "onnxruntime", "version": "1.32.0", "providers_requested": "CPUExecutionProvider",
        "providers_used": "CPUExecutionProvider", "cpu_fallback_disabled": "no",
        "nodes_by_provider": '{"CPUExecutionProvider":33}', "cpu_fallback_nodes": "0",
    }  # fmt: skip


def test_a_decoder_without_a_runtime_report_has_none() -> None:
    assert provenance.runtime_of(lines(*FRAMES)) == ((), None)


def test_malformed_or_repeated_runtime_reports_are_stats_errors() -> None:
    assert provenance.runtime_of(lines({"runtime": "onnxruntime"}, *FRAMES))[1] == (
        'stats line 1: "runtime" must be a non-empty JSON object'
    )
    assert provenance.runtime_of(lines(RUNTIME, RUNTIME))[1] == "stats: 2 runtime lines, expected at most one"


def test_the_device_report_carries_the_runtime_into_the_outcome() -> None:
    text = "\n".join(["@@m timing 1 2 0", "@@m sha abc 10", "@@m stats", *lines(RUNTIME, *FRAMES)])
    outcome = parse_decode(text, 0, "m")
    assert outcome.stats_error is None and outcome.frame_times_ns == (1000, 2000)
    assert dict(outcome.runtime)["providers_used"] == "CPUExecutionProvider"
    bad = parse_decode(text.replace('"runtime": {', '"runtime": [').replace("}}", "]}", 1), 0, "m")
    assert bad.stats_error is not None


def test_jobs_that_agree_give_one_value_per_role() -> None:
    props: dict[str, str | float] = {"ro.product.model": "Pixel"}
    report = dict(provenance.runtime_of(lines(RUNTIME))[0])
    for role in ("test", "anchor", "test"):
        provenance.merge(props, role, report)
    assert props["runtime[test].version"] == "1.32.0" and props["runtime[anchor].version"] == "1.32.0"
    assert "runtime_disagreement" not in props
    assert provenance.summary(props) == [
        "anchor: onnxruntime 1.32.0, providers used CPUExecutionProvider (requested CPUExecutionProvider), "
        "CPU fallback nodes 0",
        "test: onnxruntime 1.32.0, providers used CPUExecutionProvider (requested CPUExecutionProvider), "
        "CPU fallback nodes 0",
    ]


def test_jobs_that_disagree_are_recorded_as_such() -> None:
    props: dict[str, str | float] = {}
    provenance.merge(props, "test", {"providers_used": "XnnpackExecutionProvider,CPUExecutionProvider"})
    provenance.merge(props, "test", {"providers_used": "CPUExecutionProvider"})
    provenance.merge(props, "test", {"providers_used": "CPUExecutionProvider"})
    assert props["runtime[test].providers_used"] == (
        "DISAGREE: XnnpackExecutionProvider,CPUExecutionProvider | CPUExecutionProvider"
    )
    assert props["runtime_disagreement"] == "runtime[test].providers_used"
    assert provenance.summary(props)[-1] == "jobs disagreed on runtime[test].providers_used"
