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


def test_a_trials_end_line_counts_pending_trials_and_only_a_heartbeat_asks_the_cluster_why(monkeypatch):
    # between one trial's end and the next one's start the freed slot still looks taken: every end
    # line read "2 pending (needs 1 CPU; largest free node has 0 CPU)" on a sweep that lacked nothing
    from raysweep.spec.model import Resources
    from raysweep.sweep import resources
    from raysweep.sweep.resources import plan

    asked = []
    monkeypatch.setattr(resources, "free_nodes", lambda: asked.append(1) or [{"CPU": 0.0}])
    progress = Progress("coarse", "val_accuracy", "max", total=10, plan=plan(Resources()), every_s=0.0)
    trials = [trial("a", "RUNNING"), trial("b", "PENDING"), trial("c", "PENDING")]
    progress.on_trial_start(0, trials, trials[0])
    progress.on_step_end(0, trials)  # a heartbeat while trials wait: why they wait, from the cluster
    assert asked and "2 pending (needs 1 CPU; largest free node has 0 CPU)" in progress.line(explain=True)
    asked.clear()
    progress.on_trial_complete(1, trials, trial("a", "TERMINATED", 0.9))
    assert "0 running, 2 pending; no result yet" in progress.line() and not asked
