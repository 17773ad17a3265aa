"""MLflow tracking driven as Tune drives it (Tune's own Trial objects), then reconciled against the
records on disk, on a sqlite store; and the writer's and the stage end's failure policy."""
import json
import os
import time

from mlflow.tracking import MlflowClient
from ray.tune.experiment import Trial

from raysweep.spec import Spec
from raysweep.sweep import StageResult, TrialRecord
from raysweep.tracking import Tracker, pending
from raysweep.tracking.writer import BatchWriter, SqliteRows, resolved

SPEC = Spec.model_validate({"name": "t", "task": "digits_mlp", "metric": {"name": "val_accuracy", "mode": "max"},
                            "parameters": {"lr": {"distribution": "loguniform", "min": 1e-3, "max": 1e-1}}})


def result(trial_id, step, acc, **extra):
    return {"trial_id": trial_id, "training_iteration": step, "epoch": step, "val_accuracy": acc,
            "best_val_accuracy": acc, "status": "running", **extra}


def stage(tmp_path, *records) -> StageResult:
    (tmp_path / "stage").mkdir(exist_ok=True)
    return StageResult("coarse", str(tmp_path / "stage"), "val_accuracy", "max", list(records))


def history(client, run_id):
    return {m.step: m.value for m in client.get_metric_history(run_id, "val_accuracy")}


def live(tmp_path, trial_id):
    """A tracker on sqlite, its Tune callback set up for stage coarse, and a Tune Trial to drive it."""
    tracker = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "t", str(tmp_path / "mlartifacts"))  # not ./mlruns
    callback = tracker.callback(SPEC, "coarse", "k")
    callback.setup()
    return tracker, callback, Trial("run_trial", config={"lr": 0.01}, trial_id=trial_id, stub=True)


def test_a_pbt_clone_that_ends_on_its_donors_checkpoint_logs_that_final_epoch(tmp_path):
    tracker, callback, clone = live(tmp_path, "a_00006")
    callback.on_trial_start(0, [], clone)
    folder = tmp_path / "a_00006"
    folder.mkdir()
    rows = [result("a_00006", step, 0.5 + step / 10) for step in (1, 2)]
    for row in rows:
        callback.on_trial_result(0, [], clone, row)
    (folder / "result.json").write_text("\n".join(json.dumps(r) for r in rows))
    # PBT restored it from its donor's epoch-3 checkpoint (the last): it ends without reporting, and
    # Tune's last result for it (which the stage records) is the donor's
    last = result("a_00007", 3, 0.95, status="completed")
    clone.run_metadata.last_result = last
    callback.on_trial_complete(0, [], clone)
    callback.on_experiment_end([])
    record = TrialRecord("a_00006", {"lr": 0.01}, "completed", 0.95, 3, metrics=last, path=str(folder),
                         ended_as="a_00007")
    assert tracker.finish_stage(stage(tmp_path, record), "k")
    client = MlflowClient(tracker.uri)
    run = client.get_run(resolved(callback.runs["a_00006"]))
    assert history(client, run.info.run_id) == {1: 0.6, 2: 0.7, 3: 0.95}
    assert run.data.tags["raysweep.resumed_from"] == "a_00007" and run.data.tags["raysweep.decision"] == "completed"
    assert run.info.status == "FINISHED"


def test_an_epoch_whose_report_died_with_the_driver_is_logged_from_its_checkpoint_and_no_later_one(tmp_path):
    # with shared storage the driver syncs a trial's result log every few seconds while the worker
    # uploads its checkpoints at once: a driver killed in between leaves epoch 2 only in its checkpoint
    from raysweep.train import checkpoint

    tracker, callback, trial = live(tmp_path, "t1")
    folder = tmp_path / "store/exp/t1"
    folder.mkdir(parents=True)
    (folder / "result.json").write_text("\n".join(json.dumps(result("t1", s, 0.5 + s / 10)) for s in (1, 3)))
    checkpoint.save(str(folder / "checkpoint_000001"), {"epoch": 2, "val_accuracy": 0.7}, loop={"epoch": 2})
    # the worker checkpointed epoch 4 after the scheduler had stopped the trial at 3: never accepted
    checkpoint.save(str(folder / "checkpoint_000002"), {"epoch": 4, "val_accuracy": 0.9}, loop={"epoch": 4})
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, result("t1", 3, 0.8, status="completed"))  # what the new driver saw
    callback.on_trial_complete(0, [], trial)
    callback.on_experiment_end([])
    record = TrialRecord("t1", {"lr": 0.01}, "completed", 0.8, 3, metrics=result("t1", 3, 0.8), path=str(folder))
    assert tracker.finish_stage(stage(tmp_path, record), "k")
    client = MlflowClient(tracker.uri)
    assert history(client, resolved(callback.runs["t1"])) == {1: 0.6, 2: 0.7, 3: 0.8}


def test_a_trial_trained_again_from_scratch_after_a_kill_holds_only_its_last_attempts_epochs(tmp_path):
    # it finished 5 epochs in the second before the driver was killed; Tune's saved state still had it
    # running, so the resumed sweep trained it again, and a scheduler stopped it at epoch 2 this time
    tracker, callback, trial = live(tmp_path, "t1")
    callback.on_trial_start(0, [], trial)
    for step in range(1, 6):
        callback.on_trial_result(0, [], trial, result("t1", step, 0.5 + step / 100))
    callback.on_experiment_end([])
    folder = tmp_path / "t1"
    folder.mkdir()
    # Tune's log holds both attempts: the lost one's 5 epochs, then the 2 of the one that counts
    (folder / "result.json").write_text("\n".join(json.dumps(result("t1", s, 0.5 + s / 100 + (s > 2) / 10))
                                                   for s in (1, 2, 3, 4, 5, 1, 2)))
    record = TrialRecord("t1", {"lr": 0.01}, "stopped", 0.52, 2, metrics=result("t1", 2, 0.52), path=str(folder))
    assert tracker.finish_stage(stage(tmp_path, record), "k")
    client = MlflowClient(tracker.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id], "tags.`raysweep.trial_id` = 't1'")
    assert history(client, run.info.run_id) == {1: 0.51, 2: 0.52}
    assert run.data.tags["raysweep.decision"] == "stopped" and run.info.status == "FINISHED"


def test_a_run_mlflow_did_not_make_is_asked_for_again_at_the_next_report_and_the_reconcile_fills_the_gap(tmp_path):
    tracker, callback, trial = live(tmp_path, "t1")
    index, writer = callback.live[0], callback.live[1]
    make, calls = index.create, []

    def create(*args):  # the first try fails as a server that is down does
        calls.append(args)
        if len(calls) == 1:
            raise ConnectionError("MLflow down")
        return make(*args)

    index.create = create
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, result("t1", 1, 0.6))
    writer.flush(5)
    assert callback.runs["t1"].failed and callback.runs["t1"].id is None
    callback.on_trial_result(0, [], trial, result("t1", 2, 0.7))
    deadline = time.monotonic() + 10  # a flush does not wait while the last write failed: the run is awaited
    while callback.runs["t1"].id is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert writer.flush(5)
    run_id = resolved(callback.runs["t1"])
    client = MlflowClient(tracker.uri)
    assert len(calls) == 2 and history(client, run_id) == {2: 0.7}  # epoch 1's report had no run to go to
    assert client.get_run(run_id).data.params["lr"] == "0.01"
    folder = tmp_path / "t1"
    folder.mkdir()
    (folder / "result.json").write_text("\n".join(json.dumps(result("t1", s, 0.5 + s / 10)) for s in (1, 2)))
    record = TrialRecord("t1", {"lr": 0.01}, "completed", 0.7, 2, metrics=result("t1", 2, 0.7), path=str(folder))
    callback.on_trial_complete(0, [], trial)
    callback.on_experiment_end([])
    assert tracker.finish_stage(stage(tmp_path, record), "k")
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id], "tags.`raysweep.trial_id` = 't1'")
    assert run.info.run_id == run_id and history(client, run_id) == {1: 0.6, 2: 0.7}


def test_a_stage_end_with_mlflow_down_returns_within_its_bound_and_a_later_sync_writes_everything(tmp_path):
    folder = tmp_path / "t1"
    folder.mkdir()
    (folder / "result.json").write_text("\n".join(json.dumps(result("t1", s, 0.5 + s / 10)) for s in (1, 2, 3)))
    record = TrialRecord("t1", {"lr": 0.01}, "completed", 0.8, 3, metrics=result("t1", 3, 0.8), path=str(folder))
    done = stage(tmp_path, record)
    down = Tracker("http://127.0.0.1:9", "t")  # nothing listens on the discard port
    started = time.monotonic()
    assert not down.finish_stage(done, "k", bound_s=3)
    assert time.monotonic() - started < 3 + 5  # the bound, plus at most one backoff step
    assert pending(done.path)
    started = time.monotonic()
    assert not down.finish_stage(done, "k", bound_s=3)  # still down: tried once, not waited for again
    assert time.monotonic() - started < 2
    up = Tracker(f"sqlite:///{tmp_path}/mlflow.db", "t", str(tmp_path / "mlartifacts"))
    assert up.finish_stage(done, "k") and not pending(done.path)
    assert up.finish_stage(done, "k")  # again: nothing is written twice
    client = MlflowClient(up.uri)
    (run,) = client.search_runs([client.get_experiment_by_name("t").experiment_id], "tags.`raysweep.trial_id` = 't1'")
    assert history(client, run.info.run_id) == {1: 0.6, 2: 0.7, 3: 0.8}
    assert len(client.get_metric_history(run.info.run_id, "val_accuracy")) == 3
    assert run.info.status == "FINISHED" and run.data.params["lr"] == "0.01"


class FlakyClient:
    """A client whose log_batch fails on given calls: what the writer sends, call by call."""

    def __init__(self, fail_calls):
        self.calls, self.fail_calls = [], set(fail_calls)

    def log_batch(self, run_id, **chunk):
        self.calls.append(chunk)
        if len(self.calls) in self.fail_calls:
            raise ConnectionError("down")


def test_the_writer_retries_a_failed_chunk_and_never_resends_one_that_succeeded():
    client = FlakyClient(fail_calls={2})  # the second chunk fails once
    writer = BatchWriter(client, interval_s=0.01)
    writer.metrics("r", {f"m{i}": i for i in range(1500)}, step=1)  # 2 chunks of at most 1000
    deadline = time.monotonic() + 10
    while writer.pending.unfinished_tasks and time.monotonic() < deadline:  # the retry after its backoff
        time.sleep(0.05)
    assert writer.close(timeout_s=1) and not writer.failing
    sizes = [len(c["metrics"]) for c in client.calls]
    assert sizes == [1000, 500, 500]  # chunk 2 failed and was sent again; chunk 1 was not
    assert writer.last_error == "ConnectionError: down"


def test_a_queued_call_runs_once_what_was_queued_before_it_is_written():
    client = FlakyClient(fail_calls={3})  # the third send fails (and is retried)
    writer = BatchWriter(client, interval_s=0.01)
    seen = []
    writer.metrics("a", {"m": 1}, step=1)
    writer.metrics("b", {"m": 2}, step=1)
    writer.call(lambda: seen.append(len(client.calls)))  # the trial's end: after both runs' metrics
    writer.metrics("a", {"m": 3}, step=2)
    writer.call(lambda: seen.append(len(client.calls)))
    deadline = time.monotonic() + 10
    while writer.pending.unfinished_tasks and time.monotonic() < deadline:  # the retry after its backoff
        time.sleep(0.05)
    assert writer.close(timeout_s=1)
    assert seen == [2, 4]  # the first call saw 2 sends; the second, the failed one and its retry
    assert [c["metrics"][0].value for c in client.calls] == [1, 2, 3, 3]


def test_rows_written_to_sqlite_directly_read_back_as_mlflows_own_log_batch_leaves_them(tmp_path):
    import math

    import mlflow.artifacts
    import pytest
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.exceptions import MlflowException

    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment = client.create_experiment("x")
    ours, theirs = (client.create_run(experiment).info.run_id for _ in range(2))
    fast = SqliteRows.of(client)
    batches = [
        [Metric("loss", 0.5, 1000, 1), Metric("acc", math.nan, 1000, 1), Metric("big", math.inf, 1000, 1)],
        [Metric("loss", 0.4, 2000, 2), Metric("loss", 0.4, 2000, 2), Metric("acc", 0.9, 2000, 2),
         Metric("big", -math.inf, 2000, 2)],                        # a duplicate within the batch
        [Metric("loss", 0.9, 3000, 1), Metric("acc", 0.1, 900, 2)],  # older steps / times logged later
        [Metric("loss", 0.4, 2000, 2), Metric("loss", 0.3, 2000, 2)],  # a row again; a tie on step and time
    ]
    params = [[Param("lr", "0.1"), Param("layers", "2")], [Param("lr", "0.1"), Param("width", "8")]]
    tags = [[RunTag("raysweep.decision", "running"), RunTag("mlflow.runName", "trial-1")],
            [RunTag("raysweep.decision", "stopped"), RunTag("raysweep.attempt", "2")], [], []]
    for batch, param, tag in zip(batches, params + [[], []], tags, strict=True):
        rows = [(m.key, m.value, m.timestamp, m.step) for m in batch]  # as the writer queues them
        assert fast.write_many({ours: {"metrics": rows, "params": param, "tags": tag}}) == []
        client.log_batch(theirs, metrics=batch, params=param, tags=tag)

    def seen(run_id):
        latest = {k: repr(v) for k, v in client.get_run(run_id).data.metrics.items()}  # repr: nan == nan
        history = {k: sorted((m.step, m.timestamp, repr(m.value)) for m in client.get_metric_history(run_id, k))
                   for k in latest}
        return latest, history

    assert seen(ours) == seen(theirs)
    assert seen(ours)[0]["loss"] == "0.4" and len(seen(ours)[1]["loss"]) == 4
    assert fast.steps([ours, theirs], "loss") == {ours: {1, 2}, theirs: {1, 2}}  # the reconcile's one query
    mine, yours = client.get_run(ours), client.get_run(theirs)
    assert mine.data.params == yours.data.params == {"lr": "0.1", "layers": "2", "width": "8"}
    assert mine.data.tags == yours.data.tags and mine.data.tags["raysweep.decision"] == "stopped"
    assert mine.info.run_name == yours.info.run_name == "trial-1"  # the name is the run's, not only a tag
    fast.end(ours, {"config.json": '{"lr": 0.1}'}, "FINISHED")  # as log_text and set_terminated leave it
    client.log_text(theirs, '{"lr": 0.1}', "config.json")
    client.set_terminated(theirs, "FINISHED")
    mine, yours = client.get_run(ours), client.get_run(theirs)
    assert mine.info.status == yours.info.status == "FINISHED" and mine.info.end_time >= mine.info.start_time
    assert [a.path for a in client.list_artifacts(ours)] == [a.path for a in client.list_artifacts(theirs)] == ["config.json"]
    assert mlflow.artifacts.load_text(f"{mine.info.artifact_uri}/config.json") == '{"lr": 0.1}'
    [best] = client.search_runs([experiment], order_by=["metrics.loss ASC"], max_results=1)  # latest_metrics
    assert best.data.metrics["loss"] == 0.4
    other = client.create_run(experiment).info.run_id
    client.delete_run(ours)
    rows = [[(m.key, m.value, m.timestamp, m.step) for m in batch] for batch in batches]
    assert fast.write_many({ours: {"metrics": rows[0]}}) == [ours]  # as log_batch refuses a deleted run
    with pytest.raises(MlflowException):  # as set_terminated does
        fast.end(ours, {}, "FAILED")
    # the writer's transaction of several runs: the deleted one is left out, the others' rows go in
    assert fast.write_many({ours: {"metrics": rows[1]}, other: {"metrics": rows[1], "params": params[0]}}) == [ours]
    assert client.get_run(other).data.params == {"lr": "0.1", "layers": "2"}
    assert len(client.get_metric_history(other, "loss")) == 1 and client.get_run(other).data.metrics["acc"] == 0.9
    assert SqliteRows.of(FlakyClient(fail_calls=set())) is None  # another store: MLflow's log_batch


def test_a_new_sqlite_store_killed_while_being_made_is_never_left_half_made(tmp_path):
    # MLflow makes a new store in steps (tables, then migrations, about a second); a kill in between
    # left a file every later run failed on ("duplicate column name: step"). An empty cache each time:
    # the store (and the template raysweep keeps of it) is made by MLflow, not copied
    import signal
    import subprocess
    import sys

    make = ("import sys\nfrom mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore\n"
            "from raysweep.tracking import Tracker\nprint('ready', flush=True)\nTracker(sys.argv[1], 't').index.experiment_id\n")
    states = []
    for i, delay in enumerate((0.1, 0.5, 0.9)):
        uri = f"sqlite:///{tmp_path}/{i}/mlflow.db"
        env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / f"cache{i}")}
        proc = subprocess.Popen([sys.executable, "-c", make, uri], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                text=True, env=env)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(delay)  # into the making of the store
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        made = (tmp_path / str(i) / "mlflow.db").exists()
        states.append(made)
        if made:  # whole, or not there at all
            assert "Default" in {e.name for e in MlflowClient(uri).search_experiments()}
        template = list((tmp_path / f"cache{i}" / "raysweep").glob("*.db"))
        assert made <= bool(template)  # the store is a copy of the whole template
        for db in template:
            assert "Default" in {e.name for e in MlflowClient(f"sqlite:///{db}").search_experiments()}
        assert Tracker(uri, "t").index.experiment_id  # and a later run makes or opens it
    print(f"\nstore killed at 3 moments while being made: {sum(states)} whole, {len(states) - sum(states)} not yet there")


def test_a_trial_stopped_before_it_reported_gets_no_run_and_a_trial_that_reported_reads_well(tmp_path):
    tracker, _, quiet = live(tmp_path, "t0")
    callback = tracker.callback(SPEC, "coarse", str(tmp_path / "stage"))  # keyed by the stage's folder
    callback.setup()
    callback.on_trial_start(0, [], quiet)
    callback.on_trial_complete(0, [], quiet)  # a stage-wide stop before its first report
    trial = Trial("run_trial", config={"lr": 0.01}, trial_id="t1", stub=True)
    callback.on_trial_start(0, [], trial)
    callback.on_trial_result(0, [], trial, {**result("t1", 1, 0.5), "scheduled_lr": 0.005, "lr": 0.02})
    callback.on_trial_complete(0, [], trial)
    callback.on_experiment_end([])
    client = MlflowClient(tracker.uri)
    experiment = client.get_experiment_by_name("t").experiment_id
    runs = {r.data.tags.get("raysweep.trial_id"): r for r in client.search_runs([experiment])
            if r.data.tags.get("raysweep.stage_key") != "k"}
    assert set(runs) == {"t1", None}  # the trial and its stage's run; none for t0
    run, stage_run = runs["t1"], runs[None]
    assert run.data.tags["raysweep.kind"] == "trial" and stage_run.data.tags["raysweep.kind"] == "stage"
    assert run.data.params["lr"] == "0.01" and run.data.metrics["scheduled_lr"] == 0.005
    assert "lr" not in run.data.metrics and run.data.metrics["reported_lr"] == 0.02  # a param's name stays the param's
    for r in (run, stage_run):  # as MLflow's own client tags a run, and no path of this machine in raysweep's
        assert r.data.tags["mlflow.user"] and r.data.tags["mlflow.source.name"] and r.data.tags["mlflow.source.type"]
        assert not [v for k, v in r.data.tags.items() if k.startswith("raysweep.") and str(tmp_path) in v]


def test_a_new_store_is_a_copy_of_one_made_once(tmp_path, monkeypatch):
    from raysweep.tracking import runs

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    first = Tracker(f"sqlite:///{tmp_path}/a/mlflow.db", "t")
    assert first.index.experiment_id and len(list((tmp_path / "cache" / "raysweep").glob("*.db"))) == 1

    def migrate(path):
        raise AssertionError("MLflow's migrations ran again")

    monkeypatch.setattr(runs, "_make_store", migrate)
    second = Tracker(f"sqlite:///{tmp_path}/b/mlflow.db", "u")  # copied: no migrations
    assert second.index.experiment_id
    names = {e.name for e in MlflowClient(second.uri).search_experiments()}
    assert names == {"Default", "u"}  # its own store, nothing of the first one's
