"""Files made once per machine and kept in the user's cache ($XDG_CACHE_HOME/raysweep, else
~/.cache/raysweep), shared by every process of every sweep: an empty MLflow store, the digits arrays.
Each is made in a file of its own and renamed into place once whole, so a process killed while
making one leaves nothing half made."""
from __future__ import annotations

import os
from collections.abc import Callable


def whole(path: str, write: Callable[[str], None]) -> None:
    """`write(tmp)` makes the file in one of its own, renamed into place once whole."""
    tmp = f"{path}.{os.getpid()}.tmp"
    write(tmp)
    os.replace(tmp, path)


def cached(name: str, write: Callable[[str], None]) -> str | None:
    """The cache's file `name`, made by `write(tmp)` if it is not there yet; None when the cache
    cannot be written (the caller makes what it needs itself)."""
    folder = os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "raysweep")
    path = os.path.join(folder, name)
    try:
        if not os.path.exists(path):
            os.makedirs(folder, exist_ok=True)
            whole(path, write)
    except OSError:
        return None
    return path
