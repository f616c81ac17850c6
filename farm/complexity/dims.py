"""Input dimensions of a decoder model as functions of the decoded frame's width and height (``"H/16"``).

A tiny arithmetic language rather than Python's ``eval``: bundle.yaml is untrusted input, and a shape needs no
more than integers, ``W``, ``H``, ``+ - * // /`` and parentheses. ``/`` must divide exactly at the size it is
evaluated for (a latent of ``W/16`` at a width of 100 is a bundle error, not a silently rounded shape); ``//``
floors, and ``-(-W // 16)`` is the ceiling when a codec pads.
"""

from __future__ import annotations

import ast

NAMES = ("W", "H")
_OPS = (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv, ast.Div)


class DimError(ValueError):
    """A dimension that is not a valid expression, or not a positive whole number at a frame size."""


def check(expr: int | str) -> None:
    """Refuse an expression that could never evaluate, naming what is wrong (for bundle.yaml validation)."""
    if isinstance(expr, bool):
        raise DimError("a dimension is a positive integer or an expression in W and H")
    if isinstance(expr, int):
        if expr <= 0:
            raise DimError(f"dimension {expr} must be positive")
        return
    _walk(_parse(expr), expr)


def evaluate(expr: int | str, width: int, height: int) -> int:
    """The dimension at a decoded frame of ``width`` x ``height``."""
    if isinstance(expr, int):
        return expr
    value = _eval(_parse(expr).body, {"W": width, "H": height}, expr)
    if value <= 0:
        raise DimError(f"{expr!r} is {value} at {width}x{height}; a dimension must be positive")
    return value


def _parse(expr: str) -> ast.Expression:
    if len(expr) > 100:
        raise DimError("dimension expression longer than 100 characters")
    try:
        return ast.parse(expr, mode="eval")
    except SyntaxError:
        raise DimError(f"{expr!r} is not an expression in W and H") from None


def _walk(tree: ast.Expression, expr: str) -> None:
    for node in ast.walk(tree.body):
        ok = isinstance(node, (ast.BinOp, ast.UnaryOp, ast.USub, ast.UAdd, *_OPS)) or (
            isinstance(node, ast.Name) and node.id in NAMES
        )
        ok = ok or (isinstance(node, ast.Constant) and type(node.value) is int) or isinstance(node, ast.Load)
        if not ok:
            raise DimError(f"{expr!r}: only integers, W, H, + - * / // and parentheses are allowed")


def _eval(node: ast.expr, names: dict[str, int], expr: str) -> int:
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        value = _eval(node.operand, names, expr)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and isinstance(node.op, _OPS):
        a, b = _eval(node.left, names, expr), _eval(node.right, names, expr)
        return _binary(node.op, a, b, expr, names)
    raise DimError(f"{expr!r}: only integers, W, H, + - * / // and parentheses are allowed")


def _binary(op: ast.operator, a: int, b: int, expr: str, names: dict[str, int]) -> int:
    if isinstance(op, ast.Add):
        return a + b
    if isinstance(op, ast.Sub):
        return a - b
    if isinstance(op, ast.Mult):
        return a * b
    if b == 0:
        raise DimError(f"{expr!r} divides by zero")
    if isinstance(op, ast.Div) and a % b:
        size = f"{names['W']}x{names['H']}"
        raise DimError(f"{expr!r} is not a whole number at {size} ({a}/{b}); use // to floor")
    return a // b
