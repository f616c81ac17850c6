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


# Real suites and inventories have a few hundred values; aliases can make a 530-byte file expand to 10**9 of them
# (a "billion laughs"). The expanded size is computed on the composed graph first, where each alias is one shared
# node, so a bomb is refused in microseconds, before a single value is copied.
MAX_NODES = 100_000
MAX_DEPTH = 64  # also stops a self-referencing anchor (&a [*a]), which would otherwise recurse without end
MAX_BYTES = 4 << 20  # a suite or inventory is hand-written: megabytes of it are a mistake or an attack


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expanded_sizes(root: yaml.Node, file: str) -> dict[int, int]:
    """How many values each node expands to (by node id), memoised so shared (aliased) nodes cost once."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node, depth: int) -> int:
        if id(node) in sizes:
            return sizes[id(node)]
        if depth > MAX_DEPTH:
            line = node.start_mark.line + 1
            raise InputError(
                [Problem(file, line, "", f"nested deeper than {MAX_DEPTH} levels (an alias inside itself?)")]
            )
        sizes[id(node)] = total = 1 + sum(size(child, depth + 1) for child in _children(node))
        return total

    size(root, 0)
    return sizes


def _check_expansion(root: yaml.Node, file: str) -> None:
    """Refuse a document that expands past MAX_NODES, naming the deepest key whose value crosses the cap."""
    sizes = _expanded_sizes(root, file)
    if sizes[id(root)] <= MAX_NODES:
        return
    loc: Loc = ()
    line = root.start_mark.line + 1
    node = root
    while True:
        if isinstance(node, yaml.MappingNode):
            over = next(((k, v) for k, v in node.value if sizes[id(v)] > MAX_NODES), None)
            if over is None:
                break
            loc, line, node = (*loc, str(over[0].value)), over[0].start_mark.line + 1, over[1]
        elif isinstance(node, yaml.SequenceNode):
            index = next((i for i, v in enumerate(node.value) if sizes[id(v)] > MAX_NODES), None)
            if index is None:
                break
            loc, node = (*loc, index), node.value[index]
        else:
            break
    message = f"expands to {sizes[id(node)]} values, over the cap of {MAX_NODES} (each alias *name repeats &name)"
    raise InputError([Problem(file, line, _dotted(loc), message)])


class _Builder:
    """Turns a composed node tree into plain data, remembering the line of every value."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Loc, int] = {}
        self.problems: list[Problem] = []
        self._loader = _UniqueKeyLoader("")  # one per document: it memoises each scalar node it constructs

    def _scalar(self, node: yaml.Node) -> Any:
        return self._loader.construct_object(node, deep=True)

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.lines.setdefault(loc, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, loc)
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*loc, i)) for i, item in enumerate(node.value)]
        return self._scalar(node)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, Any]:
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.tag == "tag:yaml.org,2002:merge":
                self.problems.append(Problem(self.file, line, _dotted(loc), "merge keys (<<) are not supported"))
                continue
            key = self._scalar(key_node) if isinstance(key_node, yaml.ScalarNode) else None
            if not isinstance(key, str | int | float | bool):
                self.problems.append(Problem(self.file, line, _dotted(loc), "keys must be scalars"))
                continue
            key = str(key)
            if key in out:
                self.problems.append(Problem(self.file, line, _dotted((*loc, key)), "duplicate key"))
                continue
            self.lines[(*loc, key)] = line
            out[key] = self.build(value_node, (*loc, key))
        return out


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
        if path.stat().st_size > MAX_BYTES:
            raise InputError([Problem(file, None, "", f"larger than {MAX_BYTES} bytes: not a hand-written file")])
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
    except RecursionError:  # the composer recurses per nesting level: [[[[... a few thousand deep ends here
        raise InputError([Problem(file, None, "", f"nested deeper than {MAX_DEPTH} levels")]) from None
    if node is not None:
        _check_expansion(node, file)
    builder = _Builder(file)
    try:
        data = {} if node is None else builder.build(node, ())
    except yaml.MarkedYAMLError as exc:  # e.g. an unknown tag (!foo) or a merge key we do not support
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise InputError([Problem(file, line, "", f"YAML: {exc.problem or exc.context}")]) from None
    if builder.problems:
        raise InputError(builder.problems)
    return Located(file, data, builder.lines)


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
