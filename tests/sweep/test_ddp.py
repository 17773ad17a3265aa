"""A real 2-worker DistributedDataParallel trial (gloo, two Ray Train worker processes)."""
import pytest

from raysweep.spec.model import Resources
from raysweep.sweep.ddp import run_ddp
from raysweep.sweep.resources import plan
from raysweep.train import Run, train
from raysweep.train import checkpoint as ckpt
from raysweep.train.tasks import get_task


def test_two_worker_ddp_keeps_replicas_identical_and_matches_one_worker(ray_session, tmp_path):
    config = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 98, "dropout": 0.0}
    run = Run(task="digits_mlp", epochs=2)
    reports = []
    run_ddp(config, run, plan(Resources(workers_per_trial=2, cpus_per_worker=0.5)),
            lambda metrics, path: reports.append((metrics, path)), str(tmp_path), "ddp")
    single = []
    train(config, run, lambda metrics, path: single.append(metrics))

    assert [m["epoch"] for m, _ in reports] == [1, 2]
    assert reports[-1][0]["ddp_weight_spread"] == 0.0  # every rank ends with the same weights
    # same global batch (2 x 49 vs 1 x 98), same sample order: the same losses up to float reduction order
    for (ddp, _), one in zip(reports, single, strict=False):
        assert ddp["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)
        assert ddp["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)
        assert ddp["val_accuracy"] == one["val_accuracy"]
    # rank 0's final checkpoint reached storage and holds the trained weights
    final_path = reports[-1][1]
    assert final_path and final_path.startswith(str(tmp_path))
    model = get_task("digits_mlp").model(config)
    model.load_state_dict(ckpt.load(final_path)["model"])
    assert ckpt.load(final_path)["loop"]["epoch"] == 2


def test_a_two_worker_trial_goes_on_from_an_earlier_stages_checkpoint(ray_session, tmp_path):
    """The fine stage's warm start as a DDP job: both ranks load the coarse trial's checkpoint and train
    its second epoch, the one a 2-epoch run from scratch trains."""
    from raysweep.spec import Spec
    from raysweep.sweep import run_stage
    from raysweep.sweep.progress import result_log
    from raysweep.sweep.trainable import config_key

    fixed = {"optimizer": "sgd", "momentum": 0.9, "batch_size": 98, "dropout": 0.0, "schedule": "cosine"}
    spec = Spec.model_validate({"name": "ddp_warm", "task": "digits_mlp", "metric": {"name": "val_loss", "mode": "min"},
                                "search": {"method": "random", "num_samples": 1, "seed": 0},
                                "scheduler": {"type": "fifo"}, "stopping": {"max_epochs": 2}, "fixed": fixed,
                                "resources": {"workers_per_trial": 2, "cpus_per_worker": 0.5},
                                "parameters": {"lr": {"values": [0.05]}}})
    [coarse] = run_stage(spec, "coarse", str(tmp_path), epochs=1, quiet=True).trials
    assert coarse.epochs == 1 and coarse.checkpoint
    [fine] = run_stage(spec, "fine", str(tmp_path), quiet=True,
                       warm_starts={config_key(coarse.config): coarse.checkpoint}).trials
    [first, *rest] = result_log(fine.path)
    assert first["epoch"] == 2 and not rest and first["resumed_from"] == coarse.trial_id
    assert (fine.started_from, fine.started_at) == (coarse.trial_id, 1)
    assert first["ddp_weight_spread"] == 0.0
    single = []
    train(coarse.config, Run(task="digits_mlp", epochs=2), lambda metrics, path: single.append(metrics))
    assert first["val_loss"] == pytest.approx(single[1]["val_loss"], rel=1e-5)
