"""A real 2-worker DistributedDataParallel trial (gloo, two Ray Train worker processes)."""
import pytest
from ray.train import Checkpoint

from raysweep.spec.model import Resources
from raysweep.sweep.ddp import run_ddp
from raysweep.sweep.resources import plan
from raysweep.train import Run, train
from raysweep.train import checkpoint as ckpt
from raysweep.train.tasks import get_task


def test_two_worker_ddp_keeps_replicas_identical_matches_one_worker_and_goes_on_from_a_checkpoint(ray_session, tmp_path):
    """Trained in jobs as the pipeline's stages hand runs on: epoch 1 of a 2-epoch run (coarse), epoch 2
    from epoch 1's checkpoint, loaded by both ranks (fine, keeping the best epoch's weights as the seeds
    stage does), then that run's end scored on the test split without training (final)."""
    config = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "batch_size": 98, "dropout": 0.0, "schedule": "cosine"}
    run, p = Run(task="digits_mlp", epochs=2, keep_best=True), plan(Resources(workers_per_trial=2, cpus_per_worker=0.5))
    reports = []
    run_ddp(config, Run(task="digits_mlp", epochs=1, horizon=2), p, lambda metrics, path: reports.append((metrics, path)),
            str(tmp_path), "coarse", origin="coarse")
    run_ddp(config, run, p, lambda metrics, path: reports.append((metrics, path)), str(tmp_path), "fine",
            resume=Checkpoint.from_directory(reports[0][1]), origin="fine")
    run_ddp(config, Run(task="digits_mlp", epochs=2, evaluate_test=True), p,
            lambda metrics, path: reports.append((metrics, path)), str(tmp_path), "final",
            resume=Checkpoint.from_directory(reports[1][1]), origin="final")
    single = []
    train(config, Run(task="digits_mlp", epochs=2, evaluate_test=True), lambda metrics, path: single.append(metrics))

    assert [m["epoch"] for m, _ in reports] == [1, 2, 2] and reports[1][0]["resumed_from"] == "coarse"
    scored = reports.pop()[0]
    assert scored["resumed_from"] == "fine" and "epoch_seconds" not in scored  # scored, not trained again
    assert scored["test_loss"] == pytest.approx(single[-1]["test_loss"], rel=1e-5)
    assert scored["test_accuracy"] == single[-1]["test_accuracy"] and scored["ddp_weight_spread"] == 0.0
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

