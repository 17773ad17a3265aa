""""Better" under a metric's mode, written once: every ranking, stop rule and comparison uses these."""
from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import TypeVar

T = TypeVar("T")


def score(value: float, mode: str) -> float:
    """Higher is better, whatever the mode."""
    return value if mode == "max" else -value


def better(a: float, b: float, mode: str, by: float = 0.0) -> bool:
    """a beats b by more than `by`."""
    return score(a, mode) - score(b, mode) > by


def gain(old: float, new: float, mode: str) -> float:
    """How much better `new` is than `old` (negative: worse)."""
    return score(new, mode) - score(old, mode)


def ranked(items: Iterable[T], mode: str, value: Callable[[T], float | None] = lambda v: v) -> list[T]:
    """Best first; items without a finite value are left out."""
    scored = [i for i in items if (v := value(i)) is not None and math.isfinite(v)]
    return sorted(scored, key=lambda i: score(value(i), mode), reverse=True)


def best(values: Iterable[float], mode: str) -> float:
    return max(values, key=lambda v: score(v, mode))
