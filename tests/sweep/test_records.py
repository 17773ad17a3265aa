"""A stage's trial records from what Tune holds: whose result it is and the config it ran with come
from Tune's Trial (a trial that cloned a PBT donor holds the donor's last result until it reports),
and a result Tune lost in memory comes from the trial's own log."""
import json
from dataclasses import asdict

from ray.tune import Result
from ray.tune.experiment import Trial

from raysweep.spec import Space, Spec
from raysweep.sweep.progress import result_log
from raysweep.sweep.stage import _last_result, _record
from raysweep.train.loop import Run

SPEC = Spec.model_validate({"name": "r", "task": "digits_mlp", "metric": {"name": "val_accuracy", "mode": "max"},
                            "parameters": {"lr": {"distribution": "loguniform", "min": 1e-3, "max": 1e-1}}})


def record(trial, result):
    payload = {"run": asdict(Run.from_spec(SPEC)), "nested": False}
    log = result_log(result.path)
    return _record(trial, result, log, _last_result(result, log), Space(SPEC), payload)


def test_a_clone_is_recorded_as_itself_with_its_own_config(tmp_path):
    donor = {"trial_id": "a_00007", "training_iteration": 6, "best_val_accuracy": 0.97, "status": "completed",
             "config": {"lr": 0.02}}
    clone = Trial("run_trial", config={"lr": 0.013}, trial_id="a_00006", stub=True)
    rec = record(clone, Result(metrics=donor, checkpoint=None, error=None, path=str(tmp_path)))
    assert (rec.trial_id, rec.config["lr"], rec.value, rec.epochs) == ("a_00006", 0.013, 0.97, 6)
    assert "trial_id" not in rec.metrics and rec.ended_as == "a_00007"  # the donor's state, on record as such


def test_empty_in_memory_result_falls_back_to_the_trials_log(tmp_path):
    lines = [{"training_iteration": i, "best_val_accuracy": 0.5 + i / 10, "status": "running", "config": {"lr": 0.01}}
             for i in (1, 2)]
    (tmp_path / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"training_iter')
    trial = Trial("run_trial", config={"lr": 0.01}, trial_id="a_00001", stub=True)
    rec = record(trial, Result(metrics={"trial_id": "a_00001"}, checkpoint=None, error=None, path=str(tmp_path)))
    assert (rec.epochs, rec.value) == (2, 0.7)  # the last whole line: a line cut off by a kill is skipped


def test_tunes_own_result_wins_when_it_has_one(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({"training_iteration": 1, "config": {"lr": 1}}) + "\n")
    metrics = {"training_iteration": 3, "config": {"lr": 2}, "trial_id": "t3"}
    assert _last_result(Result(metrics=metrics, checkpoint=None, error=None, path=str(tmp_path)),
                        result_log(str(tmp_path))) == metrics
