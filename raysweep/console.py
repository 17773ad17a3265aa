"""raysweep's own voice on the terminal. Once a sweep routes Ray's logs to a file (fd 2 and sys.stderr
point there, so Ray's Python and C++ output stays off the terminal), raysweep's error lines still
reach the terminal through `err()`."""
from __future__ import annotations

import os
import sys

_terminal = None


def keep_terminal(fd: int) -> None:
    """Write raysweep's error lines to `fd` (a duplicate of the terminal's stderr)."""
    global _terminal
    _terminal = os.fdopen(fd, "w", buffering=1)


def err():
    return _terminal or sys.stderr


def routed() -> bool:
    return _terminal is not None
