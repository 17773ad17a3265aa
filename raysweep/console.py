"""raysweep's one voice on the terminal: progress lines, tables, results (`say`, on stdout) and notes
and errors (`note`, `err()`, on the terminal's stderr). Diagnostics go through `logging` instead
(quiet unless -v). Once a sweep routes Ray's logs to a file (fd 2 and sys.stderr point there, so
Ray's Python and C++ output stays off the terminal), notes and errors still reach the terminal."""
from __future__ import annotations

import logging
import os
import sys

_terminal = None


def say(text: str = "", end: str = "\n") -> None:
    print(text, end=end, flush=True)


def error(text: str) -> None:
    """An error line, as is (it names its file and field)."""
    print(text, file=err(), flush=True)


def note(text: str) -> None:
    """A line the user should see beside the results: a degraded service, a skipped check."""
    print(f"raysweep: {text}", file=err(), flush=True)


def keep_terminal(fd: int) -> None:
    """Write raysweep's notes and error lines to `fd` (a duplicate of the terminal's stderr)."""
    global _terminal
    _terminal = os.fdopen(fd, "w", buffering=1)


def err():
    return _terminal or sys.stderr


def routed() -> bool:
    return _terminal is not None


class _Terminal(logging.StreamHandler):
    def emit(self, record):
        self.stream = err()  # the terminal, also after Ray's output is routed to a file
        super().emit(record)


def verbose(level: int) -> None:
    """-v: raysweep's own diagnostics (INFO) on the terminal's stderr; -vv: DEBUG."""
    logger = logging.getLogger("raysweep")
    if level <= 0:
        logger.setLevel(logging.WARNING)
        return
    handler = _Terminal()
    handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", "%H:%M:%S"))
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.INFO if level == 1 else logging.DEBUG)
