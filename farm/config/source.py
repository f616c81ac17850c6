"""YAML loading that remembers where every value came from.

pydantic reports errors by location (``gates.2.op``); users need ``suites/x.yaml:12``. We compose the YAML
node tree once, keep a map from each location to its line, and translate every validation error through it,
so one load reports every problem with its line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from farm.errors import InputError, Problem

Loc = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys, which plain YAML silently collapses to the last one."""


def _build(node: yaml.Node, loc: Loc, lines: dict[Loc, int], problems: list[Problem], file: str) -> Any:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                problems.append(
                    Problem(file, key_node.start_mark.line + 1, _dotted(loc), "merge keys (<<) are not supported")
                )
                continue
            key = _scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str | int | float | bool):
                problems.append(Problem(file, key_node.start_mark.line + 1, _dotted(loc), "keys must be scalars"))
                continue
            key = str(key)
            if key in out:
                problems.append(Problem(file, key_node.start_mark.line + 1, _dotted((*loc, key)), "duplicate key"))
                continue
            lines[(*loc, key)] = key_node.start_mark.line + 1
            out[key] = _build(value_node, (*loc, key), lines, problems, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*loc, i), lines, problems, file) for i, item in enumerate(node.value)]
    return _scalar(node)


def _scalar(node: yaml.Node) -> Any:
    return _UniqueKeyLoader("").construct_object(node, deep=True)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


class Located:
    """A parsed YAML document plus the line of every value in it."""

    def __init__(self, file: str, data: Any, lines: dict[Loc, int]) -> None:
        self.file = file
        self.data = data
        self.lines = lines

    def line_of(self, loc: Loc) -> int | None:
        """Line of the deepest known prefix of ``loc`` (an unknown key has no node of its own)."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(tuple(loc[:end]))
            if line is not None:
                return line
        return None

    def problem(self, loc: Loc, message: str) -> Problem:
        return Problem(self.file, self.line_of(loc), _dotted(loc), message)


def load_yaml(path: Path, display: str | None = None) -> Located:
    """Parse ``path``; raise InputError naming the file and line on any syntax problem."""
    file = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError([Problem(file, None, "", "file not found")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError([Problem(file, None, "", f"cannot read: {exc}")]) from None
    try:
        node = yaml.compose(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = mark.line + 1 if mark is not None else None
        raise InputError([Problem(file, line, "", f"YAML syntax: {exc.problem}")]) from None
    lines: dict[Loc, int] = {}
    problems: list[Problem] = []
    try:
        data = {} if node is None else _build(node, (), lines, problems, file)
    except yaml.MarkedYAMLError as exc:  # e.g. an unknown tag (!foo) or a merge key we do not support
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise InputError([Problem(file, line, "", f"YAML: {exc.problem or exc.context}")]) from None
    if problems:
        raise InputError(problems)
    return Located(file, data, lines)


def _message(err: Any) -> str:
    kind = err.get("type", "")
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key missing"
    msg = str(err.get("msg", "invalid"))
    return msg.removeprefix("Value error, ")


def validate(model: type[M], doc: Located, context: dict[str, Any] | None = None) -> M:
    """Validate ``doc`` into ``model``; every error becomes a located Problem, all raised together."""
    try:
        return model.model_validate(doc.data, context=context)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = _strip_union_tags(tuple(err["loc"]), doc)
            problems.append(doc.problem(loc, _message(err)))
        raise InputError(problems) from None


def _strip_union_tags(loc: Loc, doc: Located) -> Loc:
    """Drop the union-member names pydantic inserts into a location.

    A tagged union reports ``transport.ssh.host`` where the document has ``transport.host``. An intermediate
    part that is not a key in the document can only be such a tag (an unknown key is always the last part).
    """
    out: list[str | int] = []
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if not last and isinstance(part, str) and (*out, part) not in doc.lines:
            continue
        out.append(part)
    return tuple(out)
