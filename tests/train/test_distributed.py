"""The trainer's own collectives in a real 2-process gloo group (torch.distributed, no Ray): how many
there are and on which device their tensors live."""
import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from raysweep.train import Run, train

COLLECTIVES = ("all_reduce", "all_gather", "broadcast", "barrier", "reduce", "all_gather_into_tensor")


def _rank(rank: int, world: int, config: dict, run: Run, out: str) -> None:
    """One rank: count every collective the trainer calls (the real ones still run) and the devices
    of their tensors, then train."""
    # rendezvous through a file: a free port picked here could be taken before rank 0 binds it
    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)
    calls = []

    def counting(name, real):
        def call(*args, **kw):
            tensors = [a for a in args if hasattr(a, "device")] + [t for a in args if isinstance(a, list)
                                                                   for t in a if hasattr(t, "device")]
            calls.append((name, sorted({str(t.device) for t in tensors})))
            return real(*args, **kw)
        return call

    for name in COLLECTIVES:
        setattr(dist, name, counting(name, getattr(dist, name)))
    reports = []
    result = train(config, run, lambda m, d: reports.append(m))
    with open(f"{out}/{rank}.json", "w") as f:
        json.dump({"calls": calls, "status": result.status, "reason": result.reason, "reports": reports}, f,
                  default=str)
    dist.barrier()  # neither rank tears the group down under the other
    dist.destroy_process_group()
    # skip the interpreter's teardown: a gloo thread still joinable there aborted the process now and
    # then (SIGABRT, "terminate called without an active exception") after everything was written
    os._exit(0)


def _run(tmp_path, config, epochs=2, world=2, run=None):
    run = run or Run(task="digits_mlp", epochs=epochs)
    mp.start_processes(_rank, args=(world, config, run, str(tmp_path)), nprocs=world,
                       start_method="spawn")
    return [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(world)]


def test_collectives_are_few_and_on_the_models_device(tmp_path):
    # 1078 training samples / 2 ranks / micro-batch 16 = 34 micro-batches = 17 optimizer steps per epoch
    config = {"optimizer": "adam", "lr": 1e-3, "batch_size": 64, "grad_accum": 2, "dropout": 0.0}
    ranks = _run(tmp_path, config)
    for r in ranks:
        assert r["status"] == "completed"
        assert all(devices == ["cpu"] for _, devices in r["calls"])  # the model's device (cpu here)
        names = [n for n, _ in r["calls"]]
        # per epoch: one read of the step window and one of the validation sums; at the end the
        # replicas' weight spread (max and min); nothing per step or per micro-batch
        assert names.count("all_reduce") == 2 * 2 + 2, names
        assert "all_gather" not in names  # only a diverged rank's step is gathered
    assert ranks[0]["reports"][-1]["ddp_weight_spread"] == 0.0
    assert ranks[0]["reports"][-1]["train_loss"] == pytest.approx(ranks[1]["reports"][-1]["train_loss"])


def test_a_diverged_rank_stops_every_rank_at_the_same_step(tmp_path):
    config = {"optimizer": "sgd", "lr": 8.0, "batch_size": 64, "dropout": 0.0}
    ranks = _run(tmp_path, config, epochs=3)
    assert {r["status"] for r in ranks} == {"diverged"}
    assert ranks[0]["reason"] == ranks[1]["reason"]
    assert "at epoch 1, step" in ranks[0]["reason"] and "all_gather" in [n for n, _ in ranks[0]["calls"]]
    assert ranks[0]["reports"][-1]["diverged_reason"] == ranks[0]["reason"]


def _r2_rank(rank: int, world: int, out: str) -> None:
    from sklearn.datasets import load_diabetes

    from raysweep.train import Task, evaluate
    from raysweep.train.device import precision_for

    dist.init_process_group("gloo", init_method=f"file://{out}/rendezvous", rank=rank, world_size=world)
    x, y = (torch.tensor(a, dtype=torch.float32) for a in load_diabetes(return_X_y=True))
    torch.manual_seed(0)
    model = torch.nn.Linear(10, 1)
    task = Task()
    task.quality, task.metrics = "r2", ("mae",)
    got = evaluate(model, task, torch.utils.data.TensorDataset(x, y), "cpu", precision_for("fp32", "cpu"), rank, world)
    with open(f"{out}/{rank}.json", "w") as f:
        json.dump({"got": got, "whole": model(x).detach().squeeze(-1).tolist(), "y": y.tolist()}, f)
    dist.barrier()
    dist.destroy_process_group()
    os._exit(0)


def test_split_metrics_over_ranks_are_the_whole_splits(tmp_path):
    from sklearn.metrics import mean_absolute_error, r2_score

    mp.start_processes(_r2_rank, args=(2, str(tmp_path)), nprocs=2, start_method="spawn")
    ranks = [json.loads((tmp_path / f"{r}.json").read_text()) for r in range(2)]
    y, p = ranks[0]["y"], ranks[0]["whole"]  # each rank scored half (442 = 221 + 221): both must give the whole's
    for r in ranks:
        assert r["got"]["r2"] == pytest.approx(r2_score(y, p), rel=1e-6)
        assert r["got"]["mae"] == pytest.approx(mean_absolute_error(y, p), rel=1e-6)


def test_every_rank_scores_the_test_split_on_the_best_epochs_weights(tmp_path):
    # ranked by the highest val_loss, the best epoch is an early one: each rank must hold its weights
    worst_first = Run(task="digits_mlp", metric="val_loss", mode="max", epochs=3, evaluate_test=True)
    ranks = _run(tmp_path, {"lr": 3e-3, "batch_size": 64}, run=worst_first)
    best = max(ranks[0]["reports"], key=lambda r: r["val_loss"])["epoch"]
    assert best < 3
    assert [r["reports"][-1]["tested_epoch"] for r in ranks] == [best, best]
    assert ranks[0]["reports"][-1]["test_loss"] == ranks[1]["reports"][-1]["test_loss"]
