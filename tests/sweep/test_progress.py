"""The stage's progress line counts a resumed stage's restored trials."""
from types import SimpleNamespace

from raysweep.sweep.progress import Progress


def trial(trial_id, status, value=None, reported="completed"):
    return SimpleNamespace(trial_id=trial_id, status=status,
                           last_result={"val_accuracy": value, "status": reported} if value is not None else {})


def test_a_resumed_stage_counts_the_trials_earlier_drivers_finished():
    progress = Progress("fine", "val_accuracy", "max", total=20)
    restored = [trial("a", "TERMINATED", 0.9), trial("b", "TERMINATED", 0.95, "early_stopped"),
                trial("c", "ERROR"), trial("d", "PENDING"), trial("e", "RUNNING", 0.99, "running")]
    progress.on_step_begin(0, restored)
    progress.on_step_begin(1, restored)  # once, however many steps follow
    assert progress.line().startswith("[fine] 3/20 done (completed 1, early stopped 1, errored 1), 0 running; "
                                      "best val_accuracy 0.95 (b)")
    progress.on_trial_complete(2, restored, trial("d", "TERMINATED", 0.97))
    assert progress.line().startswith("[fine] 4/20 done (completed 2, early stopped 1, errored 1)")
