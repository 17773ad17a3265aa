import math

import pytest

from raysweep.spec import Expr, ExprError
from raysweep.spec.expr import Missing


@pytest.mark.parametrize("source, env, value", [
    ("model_dim % num_heads == 0", {"model_dim": 96, "num_heads": 4}, True),
    ("model_dim % num_heads == 0", {"model_dim": 96, "num_heads": 5}, False),
    ("warmup_steps < total_steps", {"warmup_steps": 10, "total_steps": 10}, False),
    ("base_lr * batch_size / 256", {"base_lr": 0.1, "batch_size": 512}, 0.2),
    ("base_lr * sqrt(batch_size / 256)", {"base_lr": 0.1, "batch_size": 1024}, 0.2),
    ("2 ** -3", {}, 0.125),
    ("1 < x <= 3", {"x": 3}, True),
    ("1 < x <= 3", {"x": 1}, False),
    ("opt in ['adam', 'adamw']", {"opt": "adamw"}, True),
    ("opt not in ('adam', 'adamw')", {"opt": "adamw"}, False),
    ("a if a > b else b", {"a": 2, "b": 7}, 7),
    ("not (a and b) or c", {"a": True, "b": False, "c": False}, True),
    ("max(1, min(x, 4)) // 2", {"x": 9}, 2),
    ("ceil(log2(x))", {"x": 9}, 4),
])
def test_evaluates(source, env, value):
    assert Expr(source)(env) == pytest.approx(value) if isinstance(value, float) else Expr(source)(env) == value


def test_names_exclude_functions():
    assert Expr("sqrt(a) + max(b, c) * 2").names == {"a", "b", "c"}


@pytest.mark.parametrize("source", [
    "__import__('os').system('true')",  # calls of anything but the whitelisted functions
    "x.__class__",                      # attribute access
    "x[0]",                             # subscripts
    "(lambda: 1)()",
    "[i for i in range(3)]",
    "open('f')",
    "{'a': 1}",
    "f'{x}'",
    "x := 3",
    "sqrt(x=4)",
])
def test_rejects_anything_outside_the_grammar(source):
    with pytest.raises(ExprError):
        Expr(source)


def test_missing_name_is_reported_not_guessed():
    with pytest.raises(Missing):
        Expr("momentum < 0.99")({})


def test_runaway_power_is_refused():
    with pytest.raises(ExprError, match="too large"):
        Expr("10 ** 10 ** 10")({})


def test_math_errors_become_expr_errors():
    with pytest.raises(ExprError, match="ZeroDivisionError"):
        Expr("a / b")({"a": 1, "b": 0})
    with pytest.raises(ExprError):
        Expr("log(x)")({"x": 0})
    assert math.isclose(Expr("exp(log(x))")({"x": 5}), 5)
