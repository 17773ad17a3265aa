"""A stage's trial records when Tune's in-memory result is empty (seen for trials PBT had just
restored): they come from the trial's own files, as Tune wrote them."""
import json

from ray.tune import Result

from raysweep.sweep.stage import _last_result


def test_empty_in_memory_result_falls_back_to_the_trials_log(tmp_path):
    lines = [{"training_iteration": i, "val_accuracy": 0.5 + i / 10, "config": {"lr": 0.01}} for i in (1, 2)]
    (tmp_path / "result.json").write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"training_iter')
    last = _last_result(Result(metrics={"trial_id": "t1"}, checkpoint=None, error=None, path=str(tmp_path)))
    assert last == lines[1]  # the last whole line: a line cut off by a kill is skipped


def test_a_trial_that_never_reported_keeps_the_config_it_started_with(tmp_path):
    (tmp_path / "params.json").write_text(json.dumps({"lr": 0.02, "optimizer": "sgd"}, indent=2))
    last = _last_result(Result(metrics={"trial_id": "t2"}, checkpoint=None, error=None, path=str(tmp_path)))
    assert last == {"config": {"lr": 0.02, "optimizer": "sgd"}}


def test_tunes_own_result_wins_when_it_has_one(tmp_path):
    (tmp_path / "result.json").write_text(json.dumps({"training_iteration": 1, "config": {"lr": 1}}) + "\n")
    metrics = {"training_iteration": 3, "config": {"lr": 2}, "trial_id": "t3"}
    assert _last_result(Result(metrics=metrics, checkpoint=None, error=None, path=str(tmp_path))) == metrics
