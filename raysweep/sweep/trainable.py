"""The function a Tune trial runs: the trainer in-process (1 worker) or as a DDP job (more)."""
from __future__ import annotations

import json
import math
import threading
import time

from ..spec import Space, Spec
from ..train.run import Run
from . import storage
from .hyperopt_space import from_hyperopt
from .resources import plan

PBT_KEY = "__config"  # PBT allows no searcher: its configs arrive as a grid over whole configs


def suggestion(config: dict, space: Space, nested: bool) -> dict:
    """The flat config a searcher meant: HyperOpt's nested branches flattened; under PBT the
    presampled config with PBT's (possibly mutated) top-level keys over it."""
    if PBT_KEY in config:
        return {**config[PBT_KEY], **{k: v for k, v in config.items() if k != PBT_KEY}}
    return from_hyperopt(space, config) if nested else config


class FromConfig:
    """PBT's starting value of a mutated key: the presampled config's, else the default."""

    def __init__(self, key, default):
        self.key, self.default = key, default

    def __call__(self, config):
        return config[PBT_KEY].get(self.key, self.default)


def config_key(config: dict) -> str:
    """A config as one string: equal configs, equal keys (a warm start's lookup, the seeds stage's grouping)."""
    return json.dumps(config, sort_keys=True, default=str)


def warm_start(payload: dict, config: dict):
    """The checkpoint an earlier stage left for this exact trainer config (the fine stage continues the
    coarse top-k), as a Tune checkpoint, or None."""
    uri = (payload.get("warm_starts") or {}).get(config_key(config))
    if uri is None:
        return None
    from ray import tune

    fs, path = storage.filesystem_of(uri)
    return tune.Checkpoint(path=path, filesystem=fs)


def trial_config(space: Space, suggested: dict) -> dict:
    """What the trainer sees: the parameters with derived values, then any other suggested keys
    (a PBT mutation of a fixed setting, a seed) on top."""
    params = {k: v for k, v in suggested.items() if k in space.params}
    config = space.with_derived(params)
    config.update({k: v for k, v in suggested.items() if k not in space.params})
    return config


class Watchdog:
    """Reports in the trial's place once it has reported no epoch for `timeout` seconds (time spent
    waiting inside a report, on the driver, does not count): a `timed_out` result, on which
    `StatusStopper` has Tune stop the trial and free its actor. A thread, because a hung trial never
    reaches another report; Tune's own stoppers only ever see reports."""

    def __init__(self, timeout: float, report, metric: str):
        self.timeout, self.report, self.metric = timeout, report, metric
        self.lock = threading.Lock()
        self.since, self.last, self.fired = time.monotonic(), {}, False
        threading.Thread(target=self._watch, daemon=True, name="raysweep-trial-timeout").start()

    def __call__(self, metrics, directory):
        with self.lock:
            if self.fired:
                return
            self.since = None  # inside a report: the driver's time, not the trial's
        try:
            self.report(metrics, directory)
        finally:
            with self.lock:
                self.since, self.last = time.monotonic(), metrics

    def _watch(self):
        while True:
            time.sleep(min(1.0, self.timeout / 10))
            with self.lock:
                if self.since is None or time.monotonic() - self.since < self.timeout:
                    continue
                self.fired = True
                last = {k: v for k, v in self.last.items() if k not in ("status", "resumed_from", "resumed_epoch")}
            self.report({self.metric: math.nan, **last, "status": "timed_out",
                         "timeout_reason": f"no epoch reported for {self.timeout:g} s (stopping.trial_timeout_s)"}, None)
            return


def run_trial(config: dict, payload: dict) -> None:
    from ray import tune

    spec = Spec.model_validate(payload["spec"])
    space = Space(spec)
    full = trial_config(space, suggestion(config, space, payload["nested"]))
    run = Run(**payload["run"])
    trial_id = tune.get_context().get_trial_id()
    # its own checkpoint first (Tune restoring it after a kill or a lost node), else an earlier stage's
    restored = tune.get_checkpoint() or warm_start(payload, full)
    p = plan(spec.resources)

    function = payload.get("function")
    if not function:  # raysweep's own loop: torch is imported here (not for a function), before the trial's clock starts
        from ..train import train
        from ..train.device import local_device

    def tune_report(metrics, directory):
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(directory) if directory else None)

    report = Watchdog(spec.stopping.trial_timeout_s, tune_report, run.metric) if spec.stopping.trial_timeout_s else tune_report

    if function:
        from .function import TEST_KEY, nested, run_in_process, worker_loop

        if run.evaluate_test:
            full[TEST_KEY] = True
        full = nested(full, spec.groups)
    if p.workers > 1:
        from .ddp import run_ddp

        inner = storage.join(payload["storage"], "ddp")
        try:
            run_ddp(full, run, p, report, inner, trial_id, resume=restored, origin=trial_id,
                    worker=worker_loop if function else None)
        finally:  # Tune keeps its own copy of every checkpoint: drop Train's
            storage.remove_tree(storage.join(inner, trial_id))
    elif function:
        run_in_process(full, run, report, restored, tune.get_context().get_experiment_name())
    else:
        more = None
        if payload.get("spare_cpus"):
            import torch

            from . import spare

            # a reused process's earlier trial may have had more
            torch.set_num_threads(spare.base_threads(spec.resources.cpus_per_worker))
            spare.register(trial_id)
            more = lambda: spare.threads(trial_id)  # noqa: E731
        if restored is None:
            train(full, run, report, device=local_device(p.use_gpu), origin=trial_id, threads=more)
        else:
            with restored.as_directory() as directory:
                train(full, run, report, resume_from=directory, device=local_device(p.use_gpu), origin=trial_id,
                      threads=more)
