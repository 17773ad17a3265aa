"""One error type for every bad input: it renders as a single line naming file, place, field and fix."""
from __future__ import annotations

import difflib
from dataclasses import dataclass


@dataclass
class SpecError(Exception):
    message: str
    file: str | None = None
    line: int | None = None
    col: int | None = None
    path: str | None = None
    fix: str | None = None

    def __str__(self) -> str:
        where = self.file or "<spec>"
        if self.line is not None:
            where += f":{self.line}:{self.col or 1}"
        text = f"{where}: "
        if self.path:
            text += f"{self.path}: "
        text += self.message
        if self.fix:
            text += f"; {self.fix}"
        return text


def did_you_mean(word: str, choices) -> str:
    """' (did you mean 'x'?)' when a close match exists, else ''."""
    match = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f" (did you mean '{match[0]}'?)" if match else ""


def allowed(choices) -> str:
    return "allowed: " + ", ".join(str(c) for c in choices)
