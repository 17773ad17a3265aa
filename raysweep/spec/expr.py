"""Safe expressions for constraints and derived values.

The grammar is Python's expression syntax restricted to a whitelist: numbers, strings, booleans,
parameter names, arithmetic (+ - * / // % **), comparisons (chained too, `in` / `not in` a list),
`and` / `or` / `not`, `a if cond else b`, and calls to a few math functions. Source is parsed with
`ast.parse` and walked by our own evaluator: nothing ever reaches `eval`.
"""
from __future__ import annotations

import ast
import math
import operator

_BINOPS = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod, ast.Pow: operator.pow,
}
_UNARY = {ast.USub: operator.neg, ast.UAdd: operator.pos, ast.Not: operator.not_}
_CMP = {
    ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
    ast.Gt: operator.gt, ast.GtE: operator.ge,
    ast.In: lambda a, b: a in b, ast.NotIn: lambda a, b: a not in b,
}
FUNCTIONS = {
    "sqrt": math.sqrt, "log": math.log, "log2": math.log2, "log10": math.log10, "exp": math.exp,
    "min": min, "max": max, "abs": abs, "round": round, "int": int, "float": float,
    "ceil": math.ceil, "floor": math.floor,
}
_MAX_POW = 1e6  # keeps `10 ** 10 ** 10` from hanging validation
MAX_ITEMS = 10_000  # the longest string or list an expression may build ("x" * 10 ** 10 would take 10 GB)
MAX_SOURCE = 2_000  # characters


class ExprError(ValueError):
    where: tuple = ()  # the spec path of the expression that failed, when the caller knows it


class Missing(KeyError):
    """A name the expression uses is not in the config (an inactive conditional parameter)."""


class Expr:
    """A parsed, checked expression. `Expr("a % b == 0").names == {"a", "b"}`."""

    def __init__(self, source: str):
        if not isinstance(source, str) or not source.strip():
            raise ExprError("expected an expression string")
        self.source = source
        if len(source) > MAX_SOURCE:
            raise ExprError(f"an expression of {len(source):,} characters is too long (at most {MAX_SOURCE:,})")
        try:
            self._tree = ast.parse(source.strip(), mode="eval").body
            self.names: set[str] = set()
            self._check(self._tree)
        except SyntaxError as e:
            raise ExprError(f"syntax error in `{source}` at column {e.offset}") from None
        except (RecursionError, MemoryError):
            raise ExprError(f"`{source[:60]}...` is nested too deeply") from None

    def _check(self, node):
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, (int, float, str, bool)) and node.value is not None:
                raise ExprError(f"`{ast.unparse(node)}` is not allowed in `{self.source}`")
        elif isinstance(node, ast.Name):
            if node.id not in FUNCTIONS:
                self.names.add(node.id)
        elif isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            self._check(node.left), self._check(node.right)
        elif isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
            self._check(node.operand)
        elif isinstance(node, ast.BoolOp):
            for v in node.values:
                self._check(v)
        elif isinstance(node, ast.Compare) and all(type(o) in _CMP for o in node.ops):
            for v in (node.left, *node.comparators):
                self._check(v)
        elif isinstance(node, ast.IfExp):
            for v in (node.test, node.body, node.orelse):
                self._check(v)
        elif isinstance(node, (ast.List, ast.Tuple)):
            for v in node.elts:
                self._check(v)
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FUNCTIONS
              and not node.keywords):
            for v in node.args:
                self._check(v)
        else:
            what = ast.unparse(node)
            raise ExprError(
                f"`{what}` is not allowed in `{self.source}`: use numbers, parameter names, + - * / // % **, "
                f"comparisons, and/or/not, `x if c else y` and {', '.join(sorted(FUNCTIONS))}"
            )

    def __call__(self, env: dict):
        try:
            return self._eval(self._tree, env)
        except (Missing, ExprError):
            raise
        except Exception as e:  # arithmetic on the values: division by zero, log of 0, ...
            raise ExprError(f"`{self.source}` failed: {e.__class__.__name__}: {e}") from None

    def _eval(self, node, env):
        ev = self._eval
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            if node.id in env:
                return env[node.id]
            raise Missing(node.id)
        if isinstance(node, ast.BinOp):
            left, right = ev(node.left, env), ev(node.right, env)
            self._guard(node.op, left, right)
            out = _BINOPS[type(node.op)](left, right)
            if isinstance(out, (int, float)) and not isinstance(out, bool) and abs(out) > 1e300 * _MAX_POW:
                raise ExprError(f"`{self.source}` overflowed")
            return out
        if isinstance(node, ast.UnaryOp):
            return _UNARY[type(node.op)](ev(node.operand, env))
        if isinstance(node, ast.BoolOp):
            if isinstance(node.op, ast.And):
                return all(ev(v, env) for v in node.values)
            return any(ev(v, env) for v in node.values)
        if isinstance(node, ast.Compare):
            left = ev(node.left, env)
            for op, comp in zip(node.ops, node.comparators, strict=False):
                right = ev(comp, env)
                if not _CMP[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            return ev(node.body, env) if ev(node.test, env) else ev(node.orelse, env)
        if isinstance(node, (ast.List, ast.Tuple)):
            return [ev(v, env) for v in node.elts]
        if isinstance(node, ast.Call):
            return FUNCTIONS[node.func.id](*(ev(a, env) for a in node.args))
        raise ExprError(f"cannot evaluate `{ast.unparse(node)}`")  # unreachable after _check

    def _guard(self, op, left, right) -> None:
        """Refuse an operation whose result would be too large to build, before building it."""
        seq = (str, list)
        if isinstance(op, ast.Pow) and isinstance(right, (int, float)) and abs(right) > 64 and abs(left) > 1:
            raise ExprError(f"`{self.source}`: exponent {right} is too large")
        if isinstance(op, ast.Mod) and isinstance(left, str):
            raise ExprError(f"`{self.source}`: string formatting with % is not allowed")
        size = 0
        if isinstance(op, ast.Mult):
            for a, b in ((left, right), (right, left)):
                if isinstance(a, seq) and isinstance(b, int):
                    size = len(a) * b
        elif isinstance(op, ast.Add) and isinstance(left, seq) and isinstance(right, seq):
            size = len(left) + len(right)
        if size > MAX_ITEMS:
            raise ExprError(f"`{self.source}` builds a string or list of {size:,} items (at most {MAX_ITEMS:,})")

    def __repr__(self):
        return f"Expr({self.source!r})"
