"""Nothing trained twice: the fine stage goes on from the coarse top-k's checkpoints instead of training
their first epochs again, and the final stage scores the seeds stage's run of the chosen config instead of
training it again. On a real Ray instance with the real trainer and MLflow (sqlite), read back through
MlflowClient."""
import pytest
import torch

from raysweep.pipeline.outcomes import BASELINE_KEY
from raysweep.pipeline.runner import Pipeline, params_of
from raysweep.session import Session
from raysweep.spec import Space, load_spec
from raysweep.sweep import StageResult, TrialRecord
from raysweep.sweep.progress import result_log
from raysweep.sweep.trainable import config_key
from raysweep.train import Run, train
from tests.support import ROOT, assert_epoch_steps, trial_runs

SMALL = ["resources.cpus_per_worker=0.25", "search.max_concurrent=2", "stopping.max_epochs=4", "parameters.hidden=32",
         "stopping.early_stopping=null", "stages.lr_range_test.enabled=false",
         "stages.coarse={num_samples: 3, epochs: 2, top_k: 2}", "stages.fine={num_samples: 3, top_k: 2}",
         "stages.seeds={top_n: 1, num_seeds: 2}"]


def digits(*sets):
    return load_spec(ROOT / "search_spaces" / "digits_mlp.yaml", [*SMALL, *sets])  # ASHA


def from_scratch(config: dict, spec, **run) -> list[dict]:
    """The config trained in this process from its first epoch for the spec's full length."""
    reports, threads = [], torch.get_num_threads()
    torch.set_num_threads(1)  # as the trial (0.25 CPU): the same sums in the same order
    try:
        train(config, Run.from_spec(spec, **run), lambda metrics, directory: reports.append(metrics))
    finally:
        torch.set_num_threads(threads)
    return reports


@pytest.fixture(scope="module")
def pipeline(ray_session, tmp_path_factory):
    spec = digits()
    session = Session.start(spec, runs_dir=str(tmp_path_factory.mktemp("warm")))
    return spec, session, session.pipeline(spec)


def test_the_fine_stage_goes_on_from_the_coarse_top_ks_checkpoints(pipeline):
    spec, session, done = pipeline
    coarse, fine = (StageResult.load(done[stage].path) for stage in ("coarse", "fine"))
    top = {config_key(t.config): t for t in coarse.ranked()[:2]}
    warm = [t for t in fine.trials if config_key(t.config) in top]
    assert len(warm) == 2, [t.config for t in fine.trials]
    client, _, children = trial_runs(session, "fine")
    runs = {r.data.tags["raysweep.trial_id"]: r for r in children}
    for t in warm:
        donor, log = top[config_key(t.config)], result_log(t.path)
        assert log[0]["epoch"] == 3 and log[0]["resumed_from"] == donor.trial_id and log[0]["resumed_epoch"] == 2
        assert (t.started_from, t.started_at) == (donor.trial_id, 2) and t.trained_epochs == t.epochs - 2 >= 1
        assert_epoch_steps(client, runs[t.trial_id], "val_accuracy", t.epochs, started_at=2)
        assert runs[t.trial_id].data.tags["raysweep.resumed_from"] == donor.trial_id
        # the full-length run it stands for, not a run of its own: epochs 3 and 4 as from the first epoch
        full = from_scratch(t.config, spec)
        for r in log:
            assert r["val_loss"] == pytest.approx(full[r["epoch"] - 1]["val_loss"], rel=1e-4), (r["epoch"], log, full)
    rest = [t for t in fine.trials if t not in warm]
    assert rest and all(t.started_at == 0 and result_log(t.path)[0]["epoch"] == 1 for t in rest)


def test_the_final_stage_scores_the_seeds_stages_run_of_the_chosen_config_without_training_it_again(pipeline):
    spec, session, done = pipeline
    chosen, space = done["seeds"].chosen, Space(spec)
    [ran] = [t for t in StageResult.load(done["seeds"].path).trials
             if params_of(space, t.config) == params_of(space, chosen) and t.config["seed"] == chosen["seed"]]
    assert done["seeds"].checkpoint == ran.checkpoint
    final = StageResult.load(done["final"].path)
    [mine] = [t for t in final.trials if not t.config.get(BASELINE_KEY)]
    [baseline] = [t for t in final.trials if t.config.get(BASELINE_KEY)]
    [report] = result_log(mine.path)  # one report, after no epoch trained
    assert (report["epoch"], report["resumed_from"], report["resumed_epoch"]) == (4, ran.trial_id, 4)
    assert (mine.started_from, mine.started_at, mine.trained_epochs) == (ran.trial_id, 4, 0)
    assert mine.value == ran.value and baseline.trained_epochs == 4  # the untuned baseline still trains
    # what the chosen config scores trained from its first epoch with the test split scored at its end
    full = from_scratch(mine.config, spec, evaluate_test=True)[-1]
    assert done["final"].test["test_accuracy"] == pytest.approx(full["test_accuracy"], rel=1e-4)
    assert done["final"].test["test_loss"] == pytest.approx(full["test_loss"], rel=1e-4)
    assert report["tested_epoch"] == full["tested_epoch"]
    client, _, children = trial_runs(session, "final")
    [run] = [r for r in children if r.data.tags["raysweep.trial_id"] == mine.trial_id]
    assert_epoch_steps(client, run, "val_accuracy", 4, started_at=4)
    assert run.data.tags["raysweep.resumed_from"] == ran.trial_id
    assert run.data.metrics["test_accuracy"] == done["final"].test["test_accuracy"]


RECORD = TrialRecord("c1", {"lr": 0.01}, "completed", 0.9, 2, checkpoint="/ckpt/c1")


@pytest.mark.parametrize("sets, record, warm", [
    ([], RECORD, True),
    (["scheduler={type: median, grace_period: 1}"], RECORD, True),
    (["scheduler={type: hyperband}"], RECORD, False),  # counts Tune's reports, not epochs
    ([], TrialRecord("c2", {"lr": 0.01}, "stopped", 0.9, 2), False),  # stopped before its first checkpoint
    ([], TrialRecord("c3", {"lr": 0.01}, "completed", 0.9, 4, checkpoint="/ckpt/c3"), False),  # as long as fine
    ([], TrialRecord("c4", {"lr": 0.01}, "completed", 0.9, 2, checkpoint="/ckpt/c4", ended_as="c9"), False),
])
def test_which_coarse_trials_the_fine_stage_goes_on_from(sets, record, warm):
    assert Pipeline.warm_starts(digits(*sets), [record], 4) == ({config_key(record.config): record.checkpoint}
                                                                 if warm else {})
