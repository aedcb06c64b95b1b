"""A small, safe expression language for sweep ``derive:`` keys and ``constraints:``.

An expression is parsed with :mod:`ast` and every node is checked against a short allow-list
before anything is evaluated; nothing is handed to ``eval``. Allowed: numbers, ``true``/
``false``, config key paths (``arch.array.rows``, ``runs.0.batch``), ``+ - * / // % **``,
comparisons (chains too), ``and``/``or``/``not``, ``a if c else b`` and the functions
``min max abs round int float ceil floor sqrt log log2 log10 exp``.
"""
from __future__ import annotations

import ast
import math
import operator
import re
from typing import Any, Callable, Mapping

__all__ = ["Expr", "ExprError", "FUNCTIONS"]

FUNCTIONS: dict[str, Callable] = {
    "min": min, "max": max, "abs": abs, "round": round, "int": int, "float": float,
    "ceil": math.ceil, "floor": math.floor, "sqrt": math.sqrt, "log": math.log,
    "log2": math.log2, "log10": math.log10, "exp": math.exp,
}
_BIN = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
        ast.Div: operator.truediv, ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod,
        ast.Pow: operator.pow}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_CMP = {ast.Lt: operator.lt, ast.LtE: operator.le, ast.Gt: operator.gt, ast.GtE: operator.ge,
        ast.Eq: operator.eq, ast.NotEq: operator.ne}
# A dotted key path: a name followed by one or more .name or .index parts.
_PATH = re.compile(r"(?<![\w.])([A-Za-z_]\w*(?:\.\w+)+)")
_MAX_POW = 4096       # keeps 10 ** 10 ** 10 from freezing the parent


class ExprError(ValueError):
    """A bad expression; the message says what is wrong, the caller adds file and key."""


class Expr:
    """One parsed expression. ``names`` lists the key paths (and bare names) it reads."""

    def __init__(self, text: str):
        if not isinstance(text, str) or not text.strip():
            raise ExprError("an expression (text), got " + repr(text))
        self.text = text
        self._paths: dict[str, str] = {}

        def sub(m: re.Match) -> str:
            name = f"__k{len(self._paths)}"
            self._paths.setdefault(m.group(1), name)
            return self._paths[m.group(1)]

        src = _PATH.sub(sub, text.strip())
        src = re.sub(r"\btrue\b", "True", re.sub(r"\bfalse\b", "False", src))
        try:
            tree = ast.parse(src, mode="eval")
        except SyntaxError as e:
            raise ExprError(f"a valid expression, got {text!r} ({e.msg})") from None
        self._back = {v: k for k, v in self._paths.items()}
        bare: list[str] = []
        self._check(tree.body, bare)
        self._tree = tree.body
        self.names = tuple(dict.fromkeys(list(self._paths) + bare))

    def _check(self, node: ast.AST, bare: list) -> None:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, bool)):
                raise ExprError(f"numbers only in {self.text!r}, got {node.value!r}")
        elif isinstance(node, ast.Name):
            if node.id not in self._back and node.id not in ("True", "False"):
                if node.id in FUNCTIONS:
                    raise ExprError(f"{node.id}(...) called, in {self.text!r}")
                bare.append(node.id)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BIN:
            self._check(node.left, bare)
            self._check(node.right, bare)
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            self._check(node.operand, bare)
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v, bare)
        elif isinstance(node, ast.Compare) and all(type(o) in _CMP for o in node.ops):
            for v in [node.left, *node.comparators]:
                self._check(v, bare)
        elif isinstance(node, ast.IfExp):
            for v in (node.test, node.body, node.orelse):
                self._check(v, bare)
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) \
                and node.func.id in FUNCTIONS and not node.keywords:
            for a in node.args:
                if isinstance(a, ast.Starred):
                    raise ExprError(f"no *args in {self.text!r}")
                self._check(a, bare)
        else:
            what = type(node).__name__
            if isinstance(node, ast.Call):
                what = "a call of " + (node.func.id if isinstance(node.func, ast.Name)
                                       else "something other than a function name")
            raise ExprError(f"arithmetic, comparisons and {', '.join(sorted(FUNCTIONS))} "
                            f"only, got {what} in {self.text!r}")

    def __call__(self, lookup: Callable[[str], Any]) -> Any:
        return self._eval(self._tree, lookup)

    def _eval(self, node: ast.AST, look: Callable[[str], Any]) -> Any:
        ev = self._eval
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in ("True", "False"):
                return node.id == "True"
            return look(self._back.get(node.id, node.id))
        if isinstance(node, ast.BinOp):
            a, b = ev(node.left, look), ev(node.right, look)
            if isinstance(node.op, ast.Pow) and abs(b) > _MAX_POW:
                raise ExprError(f"an exponent of at most {_MAX_POW} in {self.text!r}, got {b}")
            return _BIN[type(node.op)](a, b)
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](ev(node.operand, look))
        if isinstance(node, ast.BoolOp):
            vals = (ev(v, look) for v in node.values)
            return all(vals) if isinstance(node.op, ast.And) else any(vals)
        if isinstance(node, ast.Compare):
            left = ev(node.left, look)
            for op, right in zip(node.ops, node.comparators):
                r = ev(right, look)
                if not _CMP[type(op)](left, r):
                    return False
                left = r
            return True
        if isinstance(node, ast.IfExp):
            return ev(node.body, look) if ev(node.test, look) else ev(node.orelse, look)
        assert isinstance(node, ast.Call)
        return FUNCTIONS[node.func.id](*(ev(a, look) for a in node.args))

    def evaluate(self, values: Mapping[str, Any]) -> Any:
        return self(values.__getitem__)

    def __repr__(self) -> str:
        return f"Expr({self.text!r})"
