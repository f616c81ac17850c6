"""What starting the farm pays for: heavy libraries are imported by the modules that use them, when they do.

Behaviour, not timing (bench/bench_startup.py times it): ``farm --help`` must not import scipy, numpy, paramiko,
psycopg, prometheus_client, adb_shell, pydantic or rich's console, and a ``farm run`` on the local device must
reach its first device command without scipy, numpy or any other transport's, store's or exporter's library.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.conftest import ROOT
from tests.support.cli import suite_text, write
from tests.support.startup import INVENTORY, modules_after_help, until_first_command

NEVER_AT_START = ("scipy", "numpy", "paramiko", "psycopg", "prometheus_client", "adb_shell", "dask", "onnxruntime")
NOT_FOR_HELP = (*NEVER_AT_START, "pydantic", "yaml", "rich.console", "rich.markdown", "typer.rich_utils")


def loaded(modules: frozenset[str], heavy: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == h or m.startswith(h + ".") for h in heavy))


def env_for(tmp_path: Path) -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=str(ROOT), FARM_STORE=str(tmp_path / "results.db"))


def test_help_imports_no_heavy_module(tmp_path: Path) -> None:
    modules = modules_after_help(env_for(tmp_path))
    assert "farm.cli" in modules  # the probe did run the CLI
    assert loaded(modules, NOT_FOR_HELP) == []


def test_run_reaches_its_first_device_command_without_heavy_modules(tmp_path: Path) -> None:
    suite = write(tmp_path / "suite.yaml", suite_text())
    inventory = write(tmp_path / "devices.yaml", INVENTORY)
    argv = ["run", str(suite), "--bundle", str(ROOT / "examples/bundles/av1-svt"), "--inventory", str(inventory)]
    first = until_first_command(argv, env_for(tmp_path), tmp_path)
    assert "farm.pipeline" in first.modules and "farm.transports.local" in first.modules
    assert loaded(first.modules, NEVER_AT_START) == []
