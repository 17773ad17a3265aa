"""A concise live view of a stage instead of Ray's per-trial log: one line per finished trial and
a heartbeat line while trials run."""
from __future__ import annotations

import json
import math
import posixpath
import time

from ray.tune import Callback

from .. import console
from ..spec.objective import better


def decision(last: dict | None, errored: bool = False) -> str:
    """How a trial ended: completed, early_stopped (patience), target_reached, diverged, stopped
    (by the scheduler: ASHA, HyperBand, median stopping), or errored."""
    if errored:
        return "errored"
    status = (last or {}).get("status", "running")
    return "stopped" if status == "running" else status


def result_log(folder: str | None, filesystem=None) -> list[dict]:
    """A trial's own per-epoch log (result.json in its folder, on `filesystem` for shared storage), as
    Tune wrote it; [] if none."""
    from .storage import read_text

    try:
        text = read_text(posixpath.join(folder, "result.json"), filesystem) if folder else None
    except OSError:
        return []
    return parse_log(text or "")


def parse_log(text: str) -> list[dict]:
    """The records of a result log's text, without a line a kill cut off."""
    out = []
    for line in text.splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut off by a kill
    return out


def checkpoints(folder: str | None, filesystem=None) -> list[tuple[str, dict]]:
    """A trial's checkpoints that hold their metrics (checkpoint_*/metrics.json, written last), oldest
    first, each with those metrics."""
    import pyarrow.fs as pafs

    from ..train.checkpoint import METRICS
    from .storage import read_text

    try:
        fs = filesystem or pafs.LocalFileSystem()
        entries = fs.get_file_info(pafs.FileSelector(folder)) if folder else []
        found = [(e.path, read_text(posixpath.join(e.path, METRICS), fs)) for e in entries
                 if e.type == pafs.FileType.Directory and e.base_name.startswith("checkpoint_")]
    except OSError:
        return []
    return sorted((path, json.loads(text)) for path, text in found if text)


def checkpoint_log(folder: str | None, filesystem=None) -> list[dict]:
    """The metrics saved with each of a trial's checkpoints: with shared storage, a checkpointed epoch
    whose report died with a killed driver is still on record here."""
    return [metrics for _, metrics in checkpoints(folder, filesystem)]


def error_line(error: BaseException | None) -> str | None:
    """What went wrong in one line: the user's exception, not Ray's wrapper around it."""
    if error is None:
        return None
    cause = getattr(error, "cause", None) or error
    return f"{type(cause).__name__}: {cause}".splitlines()[0][:300]


def error_line_of(trial) -> str:
    """The last line of a trial's error file: what killed its attempt."""
    try:
        with open(trial.error_file) as f:
            return (f.read().strip().splitlines() or ["unknown error"])[-1][:500]
    except (OSError, TypeError):
        return "no error recorded"


class Progress(Callback):
    def __init__(self, stage: str, metric: str, mode: str, total: int, every_s: float = 15.0,
                 plan=None, max_failures: int = 0):
        self.stage, self.metric, self.mode, self.total, self.every_s = stage, metric, mode, total, every_s
        self.plan, self.max_failures = plan, max_failures
        self.pending = 0
        self.counts: dict = {}
        self.running: set = set()
        self.best = None
        self.best_trial = None
        self.started = self.last_print = time.monotonic()
        self.counted = False

    def __setstate__(self, state):  # Tune pickles callbacks with the experiment: a restore starts the clock
        self.__dict__.update(state)
        self.started = self.last_print = time.monotonic()
        self.counted = False

    def _better(self, value):
        if value is None or not math.isfinite(value):
            return False
        return self.best is None or better(value, self.best, self.mode)

    def line(self, explain: bool = False) -> str:
        """The stage's state; with `explain`, why its pending trials wait (asked of the cluster): said
        only when nothing has reported for a while, since between one trial's end and the next one's
        start the freed slot always looks taken."""
        done = sum(self.counts.values())
        parts = [f"{k.replace('_', ' ')} {v}" for k, v in sorted(self.counts.items())]
        best = f"best {self.metric} {self.best:.4g} ({self.best_trial})" if self.best is not None else "no result yet"
        elapsed = time.monotonic() - self.started
        waiting = f", {self.pending} pending" if self.pending else ""
        if self.pending and explain and self.plan is not None:
            from .resources import free_nodes, waiting_reason

            why = waiting_reason(self.plan, free_nodes())
            waiting += f" ({why})" if why else ""
        return (f"[{self.stage}] {done}/{self.total} done ({', '.join(parts) or '-'}), {len(self.running)} running"
                f"{waiting}; {best}; {int(elapsed // 60):02d}:{int(elapsed % 60):02d}")

    def _print(self, explain: bool = False):
        console.say(self.line(explain))
        self.last_print = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info):
        self.running.add(trial.trial_id)

    def on_step_begin(self, iteration, trials, **info):
        if self.counted:
            return
        self.counted = True
        # a resumed stage: the trials earlier drivers finished count too (the line read "1/20 done"
        # with 5 restored), each once however this callback came back
        self.counts = {}
        for t in trials:
            if t.status in ("TERMINATED", "ERROR"):
                d = decision(t.last_result, t.status == "ERROR")
                self.counts[d] = self.counts.get(d, 0) + 1
                if self._better((t.last_result or {}).get(self.metric)):
                    self.best, self.best_trial = t.last_result[self.metric], t.trial_id

    def on_step_end(self, iteration, trials, **info):
        self.pending = sum(t.status == "PENDING" for t in trials)
        if self.pending and time.monotonic() - self.last_print > self.every_s:
            self._print(explain=True)  # nothing may report while trials wait for a node: say so, and why

    def on_trial_recover(self, iteration, trials, trial, **info):
        self.running.discard(trial.trial_id)
        ckpt = trial.latest_checkpoint_result
        epoch = int(ckpt.metrics.get("epoch", ckpt.metrics.get("training_iteration", 0))) if ckpt else 0
        console.say(f"[{self.stage}] trial {trial.trial_id} lost its worker ({error_line_of(trial)}); retrying: attempt "
                    f"{trial.num_failures + 1} of {self.max_failures + 1}, from epoch {epoch}")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        if self._better(result.get(self.metric)):
            self.best, self.best_trial = result[self.metric], trial.trial_id
        if time.monotonic() - self.last_print > self.every_s:
            self._print()

    def _finish(self, trial, errored):
        self.running.discard(trial.trial_id)
        d = decision(trial.last_result, errored)
        self.counts[d] = self.counts.get(d, 0) + 1
        self._print()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trial, False)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trial, True)
