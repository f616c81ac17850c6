"""CLI conventions: -h, completion, help on every option with env hints, --quiet / -v, the project root found
from a subdirectory, read-only commands that refuse a missing store, and messages that name a device once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from farm.cli import app
from farm.gates.absolute import failures
from farm.gates.view import JobView, RunView
from farm.project import inventory_path, project_root, store_path
from farm.store import Store
from tests.conftest import ROOT

UNSET: dict[str, str | None] = {"FARM_STORE": None, "FARM_INVENTORY": None, "FARM_STATE": None}


def invoke(*args: str, env: dict[str, str | None] | None = None) -> tuple[int, str, str]:
    res = CliRunner().invoke(app, list(args), env={**UNSET, **(env or {})}, catch_exceptions=False)
    return res.exit_code, res.stdout, res.stderr


def commands(group: click.Command, path: str = "farm") -> list[tuple[str, click.Command]]:
    found = [(path, group)]
    if isinstance(group, click.Group):
        for name, sub in group.commands.items():
            found += commands(sub, f"{path} {name}")
    return found


def test_dash_h_is_help_everywhere() -> None:
    for args in (["-h"], ["run", "-h"], ["devices", "-h"], ["release", "verify", "-h"], ["runs", "-h"]):
        code, out, _ = invoke(*args)
        assert code == 0 and "Usage:" in out, args


def test_shell_completion_is_offered() -> None:
    _, out, _ = invoke("--help")
    assert "--install-completion" in out and "--show-completion" in out


def test_every_option_has_help() -> None:
    undocumented = [
        f"{path} {param.opts[0]}"
        for path, command in commands(typer.main.get_command(app))
        for param in command.params
        if isinstance(param, click.Option) and not param.help
    ]
    assert not undocumented


def test_env_hints_and_defaults_are_visible() -> None:
    _, out, _ = invoke("runs", "--help")
    assert "FARM_STORE" in out and "default: 20" in out
    _, out, _ = invoke("run", "--help")
    assert "FARM_INVENTORY" in out and "600" in out
    _, out, _ = invoke("release", "verify", "--help")
    assert "to tag" not in out  # verify reads a tag, it does not make one


@pytest.mark.parametrize("command", [["runs"], ["report", "abc"], ["gate", "abc"]])
def test_read_only_commands_refuse_a_missing_store(tmp_path: Path, command: list[str]) -> None:
    typo = tmp_path / "resluts.db"
    code, _, err = invoke(*command, "--store", str(typo))
    assert code == 2 and "no results store at" in err and str(typo) in err
    assert not typo.exists()


def test_project_root_is_the_nearest_ancestor_with_an_inventory_or_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in UNSET:
        monkeypatch.delenv(name, raising=False)
    deep = tmp_path / "proj" / "suites" / "more"
    deep.mkdir(parents=True)
    (tmp_path / "proj" / ".farm").mkdir()
    monkeypatch.chdir(deep)
    assert project_root() == tmp_path / "proj"
    assert store_path() == tmp_path / "proj" / ".farm" / "results.db"
    (deep.parent / "devices.yaml").write_text("devices: []\n")
    assert project_root() == deep.parent and inventory_path() == deep.parent / "devices.yaml"
    monkeypatch.chdir(tmp_path / "proj")
    assert store_path() == Path(".farm/results.db")  # at the root itself: the relative path, as before


def test_commands_in_a_subdirectory_use_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shutil.copy(ROOT / "devices.yaml", tmp_path / "devices.yaml")
    (tmp_path / ".farm").mkdir()
    Store(tmp_path / ".farm" / "results.db").close()
    (tmp_path / "suites").mkdir()
    monkeypatch.chdir(tmp_path / "suites")
    code, out, _ = invoke("runs", "--json", "-")
    assert code == 0 and json.loads(out)["store"] == str(tmp_path / ".farm" / "results.db")
    code, out, _ = invoke("devices", "--json", "-")
    assert code == 0 and json.loads(out)["inventory"] == str(tmp_path / "devices.yaml")
    assert not (tmp_path / "suites" / ".farm").exists()


def test_quiet_prints_nothing_and_verbose_logs_device_commands(tmp_path: Path) -> None:
    env = {"FARM_STORE": str(tmp_path / "results.db"), "FARM_INVENTORY": str(ROOT / "devices.yaml")}
    code, out, err = invoke("-q", "devices", env=env)
    assert code == 0 and out == "" and err == ""
    code, out, err = invoke("-v", "devices", "--check", env=env)
    assert code == 0 and "local" in out
    assert "local: " in err and " s)" in err and "exit 0" in err  # each command, how it ended, its time
    code, out, err = invoke("devices", env=env)
    assert "exit 0" not in err  # -v of an earlier command in this process does not stick


def test_a_failed_jobs_reason_names_its_device_once() -> None:
    def job(error: str) -> JobView:
        return JobView("board-2", "test", "s", 100, 0, "failed", None, {}, error)

    view = RunView(devices={"board-2": []}, jobs=[job("board-2: ssh board@10.0.0.2:22: cannot connect")])
    detail = failures(view, ["board-2"]).detail
    assert "board-2: ssh board@" in detail and "board-2: board-2" not in detail
    view = RunView(devices={"board-2": []}, jobs=[job("decoder output is not valid Y4M")])
    assert "board-2: decoder output" in failures(view, ["board-2"]).detail
