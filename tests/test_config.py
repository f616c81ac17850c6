"""Config loading: every problem at once, each with file:line: field, and unknown keys are errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from farm.config.inventory import load_inventory, local_target, select
from farm.config.manifest import load_manifest, substitute
from farm.config.suite import load_suite
from farm.errors import InputError
from tests.conftest import ROOT, write


def problems(exc: pytest.ExceptionInfo[InputError]) -> list[str]:
    return [str(p) for p in exc.value.problems]


def test_shipped_files_load() -> None:
    inv = load_inventory(ROOT / "devices.yaml")
    assert [d.id for d in inv.devices] == ["local"]
    assert inv.devices[0].target == local_target()
    suite = load_suite(ROOT / "suites" / "smoke.yaml")
    assert len(suite.sequences) >= 2 and len(suite.rates_kbps) == 4 and suite.repeats == 2
    assert {g.metric.split(".")[0] for g in suite.gates} >= {"fps", "bd_rate", "consistency", "failures"}


def test_suite_errors_are_all_reported_with_lines(tmp_path: Path) -> None:
    path = write(
        tmp_path / "x.yaml",
        """name: x
sequences:
  - id: a
    generate: {source: nosuch, width: 64, height: 64, frames: 3}
rates_kbps: [100, 200]
repeats: 0
colour: blue
gates:
  - {metric: fps.p50, op: ">=", value: 30}
  - {metric: failures, op: "==", value: 0}
  - {metric: fps, op: "=>", value: 1}
""",
    )
    with pytest.raises(InputError) as exc:
        load_suite(path)
    got = problems(exc)
    assert f"{path}:4: sequences[0].generate.source: unknown generator 'nosuch'" in got[0]
    assert any(p.startswith(f"{path}:6: repeats:") for p in got)
    assert f"{path}:7: colour: unknown key" in got
    assert any(p.startswith(f"{path}:11: gates[2].op: unknown operator '=>'") for p in got)
    assert exc.value.exit_code == 2


def test_gate_errors_name_the_field_that_is_wrong(tmp_path: Path) -> None:
    path = write(
        tmp_path / "g.yaml",
        """name: g
sequences:
  - id: a
    generate: {source: testsrc2, width: 64, height: 64, frames: 3}
rates_kbps: [100]
gates:
  - {metric: fps, op: ">=", baseline: released, min_change: 0.05, alpha: 0.01}
  - metric: failures
    op: "<="
    baseline: released
  - {metric: fps, op: "==", baseline: 20260101-000000-abcdef}
  - {metric: fps, op: ">=", baseline: released, stat: p5}
  - {metric: fps, op: ">=", baseline: released, value: 30}
  - {metric: fps, op: ">=", value: 30, alpha: 0.05}
  - {metric: fps, op: ">="}
  - {metric: consistency.max_abs_diff, op: "<=", value: 2, scope: all}
  - {metric: consistency, op: "<=", value: 2}
  - {metric: fps, op: ">=", baseline: released, alpha: 0.5}
""",
    )
    with pytest.raises(InputError) as exc:
        load_suite(path)
    got = problems(exc)
    assert len(got) == 8, got
    assert f"{path}:10: gates[1].baseline: metric 'failures' cannot be compared with a baseline" in got[0]
    assert f"{path}:11: gates[2].baseline: a baseline gate's op gives the good direction" in got[1]
    assert f"{path}:12: gates[3].stat: a baseline gate compares every repeat" in got[2]
    assert f"{path}:13: gates[4].value: give either 'value' (an absolute gate) or 'baseline'" in got[3]
    assert f"{path}:14: gates[5].alpha: 'alpha' only applies to a gate with a 'baseline'" in got[4]
    assert f"{path}:15: gates[6].value: required key missing (or give 'baseline'" in got[5]
    assert f"{path}:17: gates[8].value: consistency gates are written 'consistency == bitexact'" in got[6]
    assert got[7].startswith(f"{path}:18: gates[9].alpha: ")
    assert exc.value.exit_code == 2


def test_baseline_and_tolerance_gates_load_and_survive_the_store_round_trip(tmp_path: Path) -> None:
    from farm.config.suite import Suite

    path = write(
        tmp_path / "ok.yaml",
        """name: ok
sequences:
  - id: a
    generate: {source: testsrc2, width: 64, height: 64, frames: 3}
rates_kbps: [100]
gates:
  - {metric: fps, op: ">=", baseline: released, min_change: 0.05, alpha: 0.001, scope: tag:phones}
  - {metric: energy_per_frame_j, op: "<=", baseline: 20260101-000000-abcdef}
  - {metric: consistency.psnr_db, op: ">=", value: 60, scope: all}
""",
    )
    suite = load_suite(path)
    fps, energy, psnr = suite.gates
    assert (fps.baseline, fps.min_change, fps.alpha, fps.value) == ("released", 0.05, 0.001, None)
    assert (energy.min_change, energy.alpha) == (0.02, 0.01)
    assert fps.describe() == "fps >= baseline(released) [tag:phones]" and psnr.describe() == (
        "consistency.psnr_db >= 60 [all]"
    )
    # runs.suite_json writes every field out, defaults included; reading it back must not trip the checks
    assert Suite.model_validate_json(suite.model_dump_json()) == suite


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.yaml", "name: x\nsequences: [\n  - a: 1\n")
    with pytest.raises(InputError) as exc:
        load_suite(path)
    assert str(exc.value).startswith(f"{path}:")
    assert "YAML syntax" in str(exc.value)


def test_duplicate_keys_are_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "d.yaml", "devices:\n  - id: a\n    id: b\n")
    with pytest.raises(InputError) as exc:
        load_inventory(path)
    assert f"{path}:3: devices[0].id: duplicate key" in problems(exc)


def test_inventory_union_errors_point_at_the_users_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path / "devices.yaml",
        """devices:
  - id: board
    platform: linux
    transport:
      kind: ssh
      hots: pi.local
      user: pi
    target: linux-aarch64
  - id: board
    platform: linux
    transport: {kind: local}
    target: auto
""",
    )
    with pytest.raises(InputError) as exc:
        load_inventory(path)
    got = problems(exc)
    assert f"{path}:6: devices[0].transport.hots: unknown key" in got
    assert f"{path}:4: devices[0].transport.host: required key missing" in got


def test_duplicate_device_ids(tmp_path: Path) -> None:
    path = write(
        tmp_path / "devices.yaml",
        "devices:\n  - {id: a, platform: linux, transport: {kind: local}, target: auto}\n"
        "  - {id: a, platform: linux, transport: {kind: local}, target: auto}\n",
    )
    with pytest.raises(InputError, match="appears twice"):
        load_inventory(path)


def test_select_by_id_and_tag() -> None:
    inv = load_inventory(ROOT / "devices.yaml")
    assert [d.id for d in select(inv, "tag:host")] == ["local"]
    assert [d.id for d in select(inv, None)] == ["local"]
    with pytest.raises(InputError, match="nosuch"):
        select(inv, "local,nosuch")


def test_manifest_rejects_unknown_placeholder_and_escaping_paths(tmp_path: Path) -> None:
    path = write(
        tmp_path / "bundle.yaml",
        """name: b
version: "1"
codec: av1
encoder:
  argv: ["{ffmpeg}", "{input}", "{output}"]
  output_ext: ivf
targets:
  linux-x86_64:
    files: [../../etc/passwd]
    decode: ["{input}"]
  linux-aarch64:
    decode: ["{decoder}", "{input}"]
""",
    )
    with pytest.raises(InputError) as exc:
        load_manifest(path)
    got = "\n".join(problems(exc))
    assert "unknown placeholder {ffmpeg}" in got
    assert "must be a relative path inside the bundle" in got
    assert "unknown placeholder {decoder}" in got


def test_substitute_is_whole_text_and_never_evaluates() -> None:
    argv = substitute(("{input}", "x={output}", "{{literal"), {"input": "a b;$(rm -rf /)", "output": "o"})
    assert argv == ["a b;$(rm -rf /)", "x=o", "{{literal"]
    with pytest.raises(InputError):
        substitute(("{nope}",), {})


@pytest.mark.parametrize(
    ("text", "message"),
    [("name: !foo x\n", "YAML"), ("base: &b {a: 1}\nname:\n  <<: *b\n", "merge keys")],
)
def test_yaml_features_we_do_not_support_are_located_errors(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "s.yaml", text)
    with pytest.raises(InputError) as exc:
        load_suite(path)
    assert str(exc.value).startswith(f"{path}:") and message in str(exc.value)


def test_relative_workdir_is_refused_with_its_line(tmp_path: Path) -> None:
    path = write(
        tmp_path / "devices.yaml",
        "devices:\n  - id: a\n    platform: linux\n    transport: {kind: local}\n    target: auto\n    workdir: rel\n",
    )
    with pytest.raises(InputError) as exc:
        load_inventory(path)
    assert f"{path}:6: devices[0].workdir: workdir 'rel' must be an absolute path" in str(exc.value)


def test_encoder_bundle_files_must_be_listed(tmp_path: Path) -> None:
    write(tmp_path / "enc.sh", "#!/bin/sh\n")
    path = write(
        tmp_path / "bundle.yaml",
        'name: b\nversion: "1"\ncodec: av1\nencoder:\n  argv: ["{bundle}/enc.sh", "{input}", "{output}"]\n'
        "  output_ext: ivf\ntargets:\n  linux-x86_64:\n    decode: [x]\n",
    )
    with pytest.raises(InputError, match=r"uses \{bundle\}/enc.sh; list it in encoder.files"):
        load_manifest(path)
