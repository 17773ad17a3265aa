"""What a killed driver can leave half-written, made usable again on resume.

A resumed trial whose saved checkpoint is gone restores from the newest one it has on storage.

Tune deletes a trial's older checkpoints (num_to_keep) as soon as it registers a newer one, but saves
the experiment's state only every second or so: a driver killed in between leaves a state that names a
deleted checkpoint. The resumed trial then failed to restore on every attempt ("Could not recover from
checkpoint as it does not exist on storage anymore") and ended errored, losing its epochs. Seen in the
killed-driver test, about one run in ten.

An experiment state file cut short: Tune writes its state in place (open, dump) and uploads it to the
storage path the same way, so a driver killed in the middle leaves a truncated newest
`experiment_state-*.json`; restored from it, the stage ran as a new one-trial experiment (seen in
tests/sweep/test_engine.py). It is set aside and the newest whole one (an earlier driver's) is
restored instead; with none, the stage starts afresh.

The upload itself, cut short: Tune stages the experiment's files (its state, the searcher's, each
trial's result.json) on the driver's disk and copies them all to the storage path about every second,
each file rewritten in place. A driver killed mid-copy left truncated files there: once the only state
of a first driver (the stage then started afresh and trained its finished trials again), once a
finished trial's result.json (tests/cli/test_sweep.py, 1 run in about 20). The staged copies outlive a
SIGKILL on the driver's machine, and are whole whenever the upload is under way (Tune stages, then
uploads): on resume, that last upload is completed from them.

A trial restarted within one driver (a PBT exploit, a pause, a retry after a lost node) lost its
reports since the last upload: Tune's result.json writer copies the storage's copy over the driver's
own at every trial start, and that copy lags by up to a sync period. Under PBT, 31 of 52 reports went
missing from result.json (tests/sweep/test_function.py). The driver's own file is kept when it has one.
"""
from __future__ import annotations

import json
import logging
import os
import posixpath

from ray.tune import Callback
from ray.tune.logger import JsonLoggerCallback

from . import storage
from .progress import checkpoints

STATE_PREFIX = "experiment_state-"  # Tune's TuneController.CKPT_FILE_TMPL

log = logging.getLogger(__name__)


class RestoreFromWhatExists(Callback):
    # Tune calls on_trial_start before it schedules the restore from trial.latest_checkpoint_result
    def on_trial_start(self, iteration, trials, trial, **info):
        from ray.train._internal.storage import _exists_at_fs_path
        from ray.tune import Checkpoint

        result = trial.run_metadata.checkpoint_manager.latest_checkpoint_result
        if result is None or _exists_at_fs_path(result.checkpoint.filesystem, result.checkpoint.path):
            return
        fs = result.checkpoint.filesystem
        found = checkpoints(trial.path, fs)
        if not found:  # nothing left to restore: it starts again from its first epoch
            trial.run_metadata.checkpoint_manager._latest_checkpoint_result = None
            log.warning("trial %s: its checkpoint %s is gone and none is left; it starts over",
                        trial.trial_id, result.checkpoint.path)
        else:
            path, metrics = found[-1]
            epoch = int(metrics.get("epoch") or int(posixpath.basename(path).split("_")[-1]) + 1)
            log.warning("trial %s: its checkpoint %s is gone; it resumes from %s (epoch %d)",
                        trial.trial_id, result.checkpoint.path, path, epoch)
            result.checkpoint = Checkpoint(path=path, filesystem=fs)
            result.metrics = {**result.metrics, **metrics, "training_iteration": epoch}
        trial.run_metadata.invalidate_cache()
        trial.invalidate_json_state()


class ResultLog(JsonLoggerCallback):
    """Tune's result.json writer; the storage's copy is taken only when this driver has none."""

    def _restore_from_remote(self, file_name: str, trial) -> None:
        if not os.path.exists(os.path.join(trial.local_path, file_name)):
            super()._restore_from_remote(file_name, trial)


def state_files(names: set) -> list[str]:
    """Tune's experiment state files among a folder's names, oldest first (their names hold the time)."""
    return sorted(n for n in names if n.startswith(STATE_PREFIX) and n.endswith(".json"))


def complete_upload(folder: str, fs, names: set) -> None:
    """Copy the files Tune staged for the newest experiment state (found in the local Ray sessions'
    staging folders, the newest whole one) over the stage's folder on storage."""
    import glob

    import ray
    from ray.train._internal.storage import _pyarrow_fs_copy_files
    from ray.train.constants import _get_ray_train_session_dir

    states = state_files(names)
    if not states or not ray.is_initialized():
        return
    root = os.path.dirname(os.path.dirname(_get_ray_train_session_dir()))  # Ray's temp dir, all sessions
    pattern = os.path.join(glob.escape(root), "session_*", "artifacts", "*", glob.escape(posixpath.basename(folder)),
                           "driver_artifacts", glob.escape(states[-1]))
    for staged in sorted(glob.glob(pattern), key=os.path.getmtime, reverse=True):
        try:
            with open(staged) as f:
                json.load(f)  # staged in place too: a driver killed while staging left it cut short
        except (ValueError, OSError):
            continue
        _pyarrow_fs_copy_files(os.path.dirname(staged), folder, destination_filesystem=fs)
        log.warning("%s: completed the upload of the experiment's files a killed driver left unfinished, from %s",
                    folder, os.path.dirname(staged))
        return


def whole_states(folder: str, fs, names: set) -> bool:
    """Set aside every experiment state newer than the newest that parses; True if one parses."""
    for name in reversed(state_files(names)):
        path = posixpath.join(folder, name)
        try:
            json.loads(storage.read_text(path, fs) or "")
            return True
        except (ValueError, OSError):  # pyarrow's errors are OSErrors
            log.warning("%s is cut short (a driver killed while writing it): set aside, an earlier state is restored", path)
            fs.move(path, posixpath.join(folder, "unreadable-" + name))
    return False
