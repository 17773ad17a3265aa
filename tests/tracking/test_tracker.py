"""The MLflow tracker driven with Tune's own Trial objects, as Tune calls it, on a sqlite store."""
import json

from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from raysweep.spec import Spec
from raysweep.tracking.mlflow_callback import MlflowTracker

SPEC = Spec.model_validate({"name": "t", "task": "digits_mlp", "metric": {"name": "val_accuracy", "mode": "max"},
                            "parameters": {"lr": {"distribution": "loguniform", "min": 1e-3, "max": 1e-1}}})


def result(trial_id, step, acc, **extra):
    return {"trial_id": trial_id, "training_iteration": step, "epoch": step, "val_accuracy": acc,
            "best_val_accuracy": acc, "status": "running", **extra}


def test_a_pbt_clone_that_ends_on_its_donors_checkpoint_logs_that_final_epoch(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    tracker = MlflowTracker(uri, "t", "coarse", SPEC, stage_key="k")
    tracker.setup()
    clone = Trial("run_trial", config={"lr": 0.01}, trial_id="a_00006", stub=True)
    tracker.on_trial_start(0, [], clone)
    for step in (1, 2):
        tracker.on_trial_result(0, [], clone, result("a_00006", step, 0.5 + step / 10))
    # PBT restored it from its donor's epoch-3 checkpoint (the last): it ends without reporting, and
    # Tune's last result for it is the donor's
    clone.run_metadata.last_result = result("a_00007", 3, 0.95, status="completed")
    tracker.on_trial_complete(0, [], clone)
    tracker.on_experiment_end([])
    client = MlflowClient(uri)
    run = client.get_run(tracker.runs["a_00006"])
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "val_accuracy")}
    assert history == {1: 0.6, 2: 0.7, 3: 0.95}
    assert run.data.tags["raysweep.resumed_from"] == "a_00007" and run.data.tags["raysweep.decision"] == "completed"
    assert run.info.status == "FINISHED"


def test_an_epoch_whose_report_died_with_the_driver_is_logged_from_its_checkpoint(tmp_path):
    # with shared storage the driver syncs a trial's result log every few seconds while the worker
    # uploads its checkpoints at once: a driver killed in between leaves epoch 2 only in its checkpoint
    from ray.train._internal.storage import StorageContext

    from raysweep.train import checkpoint

    uri = f"sqlite:///{tmp_path}/mlflow.db"
    storage = StorageContext(storage_path=str(tmp_path / "store"), experiment_dir_name="exp", trial_dir_name="t1")
    trial = Trial("run_trial", config={"lr": 0.01}, trial_id="t1", storage=storage, stub=True)
    folder = tmp_path / "store/exp/t1"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text("\n".join(json.dumps(result("t1", s, 0.5 + s / 10)) for s in (1, 3)))
    checkpoint.save(str(folder / "checkpoint_000001"), {"epoch": 2, "val_accuracy": 0.7}, loop={"epoch": 2})
    tracker = MlflowTracker(uri, "t", "coarse", SPEC, stage_key="k")
    tracker.setup()
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_result(0, [], trial, result("t1", 3, 0.8, status="completed"))  # what the new driver saw
    trial.set_status(Trial.TERMINATED)
    tracker.on_trial_complete(0, [], trial)
    tracker.on_experiment_end([trial])
    client = MlflowClient(uri)
    history = {m.step: m.value for m in client.get_metric_history(tracker.runs["t1"], "val_accuracy")}
    assert history == {1: 0.6, 2: 0.7, 3: 0.8}
