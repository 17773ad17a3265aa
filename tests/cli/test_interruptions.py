"""`raysweep run` interrupted at random moments of its pipeline, SIGINT (Ctrl-C) and SIGKILL in turn,
five times, and run again each time: no finished trial is lost or trained again, progress never goes
back, MLflow holds every trial once with every epoch once. (The wall-time ratio against an
uninterrupted run is a figure of bench/interruptions.py: timings are not asserted in tests.)"""
import json
import os

from tests.chaos import audit, interrupted_run, mid_stage
from tests.support import tiny_pipeline

SPEC = "search_spaces/digits_mlp.yaml"
NAME = "digits_mlp"
TINY = tiny_pipeline(2, 4, "32", "{num_samples: 6, epochs: 2, top_k: 2}",
                     "{num_samples: 6, top_k: 2, stop_window: 20}", "{top_n: 2, num_seeds: 2}")
STAGES = ["lr_range_test", "coarse", "fine", "seeds", "final"]
TRIALS = {"coarse": 6, "fine": 6, "seeds": 4, "final": 2}  # final: the chosen config and the untuned baseline


def test_five_random_interruptions_lose_nothing_and_repeat_nothing(tmp_path, ray_client_env):
    # the drivers are clients of the session's Ray, as on a cluster (the local instance a driver starts
    # and loses with it: tests/cli/test_sweep.py); the second and fourth kills land mid-stage
    chaos = interrupted_run(["run", SPEC, *TINY, "--runs-dir", tmp_path], tmp_path, NAME, kills=5, seed=1,
                            window=(1, 8), env={**os.environ, **ray_client_env}, after_start=True,
                            mid_stage_kills=(1, 3))
    figures = audit(chaos, tmp_path, NAME, STAGES, TRIALS)
    print("\ninterruptions:", json.dumps(figures))
    assert chaos.returncode == 0, chaos.output[-3000:]
    assert figures["interruptions"] == 5 and set(figures["signals"]) == {"SIGINT", "SIGKILL"}, chaos.output[-3000:]
    assert figures["all_stages_done"] and not figures["stages_with_wrong_trial_count"], figures
    for key in ("finished_trials_lost", "finished_trials_rerun", "progress_went_back", "mlflow_trials_twice",
                "mlflow_trials_missing", "mlflow_runs_with_wrong_steps", "mlflow_runs_without_metrics",
                "mlflow_runs_without_kind"):
        assert figures[key] == 0, (key, figures)
    assert figures["mlflow_stage_counts_not_children"] == [], figures  # every stage's counts add up to its trials
    report = tmp_path / "pipelines" / NAME / "report" / "report.html"
    assert report.exists() and f"report: {report}" in chaos.output  # built at the end of the run
    assert sum(map(mid_stage, chaos.snapshots)) >= 2, chaos.snapshots  # kills on stages with finished trials


def test_the_audit_counts_a_finished_trial_as_trained_again_only_for_what_it_trained_after_finishing():
    from tests.chaos import retrained

    def log(*epochs):
        return "".join(json.dumps({"training_iteration": e, "line": i}) + "\n" for i, e in enumerate(epochs))

    resumed_before_it_finished = log(1, 2, 3, 3, 4)  # epoch 3 again from its epoch-2 checkpoint, then done
    assert not retrained(resumed_before_it_finished, resumed_before_it_finished)
    assert not retrained(log(1, 2), log(1, 2, 3, 4))  # a log a kill cut short, completed on resume
    assert retrained(log(1, 2, 3, 4), log(1, 2, 3, 4) + log(3))  # trained again after it finished
    assert retrained(log(1, 2, 3, 4), log(1, 2))  # lines it held are gone
