"""The package keeps its shape: functions fit on a screen."""

from __future__ import annotations

import ast
from pathlib import Path

FARM = Path(__file__).resolve().parent.parent / "farm"
MAX_LINES = 60


def test_no_function_in_farm_is_longer_than_a_screen() -> None:
    long = []
    for path in sorted(FARM.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                lines = (node.end_lineno or node.lineno) - node.lineno + 1
                if lines > MAX_LINES:
                    long.append(f"{path.relative_to(FARM.parent)}:{node.lineno} {node.name} ({lines} lines)")
    assert not long, "functions longer than a screen:\n" + "\n".join(long)
