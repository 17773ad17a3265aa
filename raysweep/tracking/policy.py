"""One failure policy for everything raysweep writes to MLflow: MLflow failing never fails a sweep.
Live writes are tried once (the writer retries on its own thread); end-of-stage writes are retried
with backoff until a deadline (and once a deadline has passed in vain, tried once each until the
server answers), so a stage end never waits on a dead server longer than
STAGE_END_BOUND_S (RAYSWEEP_MLFLOW_WAIT_S, 60 s unless set) plus one request's timeout
(MLFLOW_HTTP_REQUEST_TIMEOUT, 10 s unless set). What is not written by then stays on disk (each
trial's own log), a marker says so, and `raysweep sync` (or the same command with --resume) writes
it later."""
from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import TypeVar

from .. import console
from .writer import describe

STAGE_END_BOUND_S = float(os.environ.get("RAYSWEEP_MLFLOW_WAIT_S", 60))
log = logging.getLogger("raysweep.tracking")
T = TypeVar("T")


class Policy:
    def __init__(self, uri: str):
        self.uri = uri
        self.last_error: str | None = None
        self.gave_up = False  # a deadline passed with MLflow down: later writes are tried once, not waited for
        self._said = False

    def failed(self, e: Exception) -> None:
        self.last_error = describe(e)
        log.info("MLflow at %s: %s", self.uri, self.last_error)
        if not self._said:
            self._said = True
            console.note(f"MLflow at {self.uri} failed ({type(e).__name__}); the sweep goes on and "
                         "catches up at the end of the stage")

    def once(self, action: Callable[..., T], *args) -> tuple[bool, T | None]:
        try:
            return True, action(*args)
        except Exception as e:  # noqa: BLE001 - any MLflow/HTTP failure
            self.failed(e)
            return False, None

    def until(self, deadline: float, action: Callable[..., T], *args) -> tuple[bool, T | None]:
        """Retry with backoff until it works or the deadline (time.monotonic()) passes. Once one
        deadline has passed in vain, one try each until MLflow answers again: a command waits on a
        dead server once, not at every stage."""
        delay = 0.5
        while True:
            ok, value = self.once(action, *args)
            if ok:
                self.gave_up = False
                return ok, value
            if self.gave_up or time.monotonic() + delay > deadline:
                self.gave_up = True
                return ok, value
            time.sleep(delay)
            delay = min(2 * delay, 5.0)


def deadline(seconds: float = STAGE_END_BOUND_S) -> float:
    return time.monotonic() + seconds
