import math
import shutil

import pytest
import torch

from raysweep.train import ConfigError, Run, train
from raysweep.train import checkpoint as ckpt
from raysweep.train.device import precision_for
from raysweep.train.loop import evaluate
from raysweep.train.tasks import get_task

DIGITS = Run(task="digits_mlp", metric="val_accuracy", mode="max", epochs=3)


def run(config, run=DIGITS, keep=None, **kw):
    """Train; return (result, reports); `keep` copies the checkpoint of these epochs aside."""
    reports, kept = [], {}

    def report(metrics, directory):
        reports.append(metrics)
        if directory and keep and metrics["epoch"] in keep:
            kept[metrics["epoch"]] = shutil.copytree(directory, f"{keep[metrics['epoch']]}")

    result = train(config, run, report, **kw)
    return result, reports, kept


def initial_and_final(config, tmp_path, epochs=1):
    ckpt.seed_everything(config.get("seed", 0))
    initial = torch.nn.utils.parameters_to_vector(get_task("digits_mlp").model(config).parameters()).detach()
    _, _, kept = run(config, Run(task="digits_mlp", epochs=epochs), keep={epochs: tmp_path / "final"})
    final_model = get_task("digits_mlp").model(config)
    final_model.load_state_dict(ckpt.load(kept[epochs])["model"])
    return initial, torch.nn.utils.parameters_to_vector(final_model.parameters()).detach()


def test_reports_every_epoch_metric():
    result, reports, _ = run({"lr": 3e-3, "batch_size": 64})
    assert result.status == "completed" and [r["epoch"] for r in reports] == [1, 2, 3]
    for r in reports:
        assert {"train_loss", "val_loss", "val_accuracy", "scheduled_lr", "grad_norm", "epoch_seconds", "samples_per_s",
                "best_val_accuracy", "status"} <= r.keys()
    assert reports[-1]["best_val_accuracy"] == max(r["val_accuracy"] for r in reports)
    assert reports[-1]["val_accuracy"] > 0.8 and reports[-1]["train_loss"] < reports[0]["train_loss"]


@pytest.mark.parametrize("mode, bound", [("norm", 0.01), ("value", 1e-4)])
def test_clipping_bounds_the_update(tmp_path, mode, bound):
    # one SGD step of lr 1 on the whole training set: the update equals the clipped gradient
    base = {"optimizer": "sgd", "lr": 1.0, "batch_size": 1078, "dropout": 0.0}
    initial, final = initial_and_final({**base, "grad_clip": bound, "grad_clip_mode": mode}, tmp_path / "c")
    step = final - initial
    if mode == "norm":
        assert step.norm().item() == pytest.approx(bound, rel=1e-3)  # float32 weights
    else:
        assert step.abs().max().item() == pytest.approx(bound, rel=1e-3)
    initial, final = initial_and_final(base, tmp_path / "u")
    assert (final - initial).norm().item() > 20 * bound  # unclipped, the step is far larger


def test_accumulating_k_micro_batches_equals_one_k_times_batch(tmp_path):
    # 1078 = 11 x 98: with accumulation 7 the micro-batch is 14
    config = {"optimizer": "adamw", "lr": 1e-2, "batch_size": 98, "dropout": 0.0}
    _, whole = initial_and_final(config, tmp_path / "a")
    _, accumulated = initial_and_final({**config, "grad_accum": 7}, tmp_path / "b")
    assert torch.allclose(whole, accumulated, atol=1e-5)
    _, uneven = initial_and_final({**config, "batch_size": 64, "grad_accum": 4}, tmp_path / "c")  # short last step
    _, uneven_whole = initial_and_final({**config, "batch_size": 64}, tmp_path / "d")
    assert torch.allclose(uneven, uneven_whole, atol=1e-5)


def test_divergence_guard_ends_the_trial_without_raising():
    result, reports, _ = run({"optimizer": "sgd", "lr": 10.0, "momentum": 0.99, "batch_size": 16, "dropout": 0.0})
    assert result.status == "diverged"
    assert "loss" in result.reason and reports[-1]["status"] == "diverged"
    assert reports[-1]["diverged_reason"] == result.reason and math.isnan(reports[-1]["val_loss"])


def test_stable_lr_does_not_trip_the_guard():
    result, _, _ = run({"optimizer": "sgd", "lr": 0.1, "batch_size": 16})
    assert result.status == "completed"


def test_resume_from_checkpoint_is_exact(tmp_path):
    config = {"lr": 3e-3, "batch_size": 32, "dropout": 0.3, "schedule": "cosine", "checkpoint_every": 1}
    four = Run(task="digits_mlp", epochs=4)
    _, full, kept = run(config, four, keep={2: tmp_path / "e2"})
    _, resumed, _ = run(config, four, resume_from=str(kept[2]))
    assert [r["epoch"] for r in resumed] == [3, 4]
    for a, b in zip(full[2:], resumed, strict=False):
        assert (a["train_loss"], a["val_loss"], a["scheduled_lr"]) == (b["train_loss"], b["val_loss"], b["scheduled_lr"])


def test_checkpoints_every_n_epochs_and_at_the_end():
    seen = []
    train({"checkpoint_every": 2, "batch_size": 128}, Run(task="digits_mlp", epochs=5),
          lambda m, d: seen.append((m["epoch"], d is not None)))
    assert seen == [(1, False), (2, True), (3, False), (4, True), (5, True)]


def test_checkpoints_by_time_every_5_s_unless_saving_would_cost_more_than_its_share(monkeypatch):
    from raysweep.train import loop

    def saved(**settings):
        seen = []
        train({"batch_size": 128, **settings}, Run(task="digits_mlp", epochs=4), lambda m, d: seen.append(d is not None))
        return seen

    assert saved() == [False, False, False, True]  # 4 short epochs: under 5 s, only the final one
    monkeypatch.setattr(loop, "MIN_CHECKPOINT_S", 0.0)
    monkeypatch.setattr(loop, "CHECKPOINT_SHARE", 1e9)
    assert saved() == [True] * 4  # cheap saves and no minimum: every epoch ends past the interval
    monkeypatch.setattr(loop, "CHECKPOINT_SHARE", 1e-9)  # a save "costs" more than any interval allows
    assert saved() == [True, False, False, True]  # after the first, none until checkpoint_every_s (300 s)
    assert saved(checkpoint_every_s=1e-6) == [True] * 4  # which bounds the interval


def test_early_stopping_after_patience_epochs():
    run_ = Run(task="digits_mlp", metric="val_loss", mode="min", epochs=10, patience=2, min_delta=10.0)
    result, reports, _ = run({"batch_size": 64}, run_)
    assert result.status == "early_stopped" and len(reports) == 3  # epoch 1 sets the best; 2 and 3 miss by min_delta


def test_target_stops_the_trial():
    result, reports, _ = run({"lr": 3e-3, "batch_size": 32}, Run(task="digits_mlp", metric="val_accuracy", mode="max",
                                                                 epochs=10, target=0.5))
    assert result.status == "target_reached" and len(reports) == 1


def test_same_seed_same_result_other_seed_other_result():
    a = run({"seed": 3, "batch_size": 64})[1]
    b = run({"seed": 3, "batch_size": 64})[1]
    c = run({"seed": 4, "batch_size": 64})[1]
    key = lambda rs: [(r["train_loss"], r["val_loss"]) for r in rs]  # noqa: E731
    assert key(a) == key(b) and key(a) != key(c)


def test_bf16_on_cpu_trains_and_fp16_is_refused():
    result, reports, _ = run({"precision": "bf16", "lr": 3e-3, "batch_size": 64})
    assert result.status == "completed" and reports[-1]["val_accuracy"] > 0.7
    with pytest.raises(ValueError, match="fp16 needs a GPU"):
        run({"precision": "fp16"})


def test_batch_must_split_over_accumulation():
    with pytest.raises(ConfigError, match="use a multiple of 3"):
        run({"batch_size": 32, "grad_accum": 3})


def test_final_stage_sees_the_test_split_only_when_asked():
    _, reports, _ = run({"batch_size": 64}, Run(task="digits_mlp", epochs=2, evaluate_test=True))
    assert "test_accuracy" in reports[-1] and "test_accuracy" not in reports[0]
    _, reports, _ = run({"batch_size": 64}, Run(task="digits_mlp", epochs=2))
    assert not any(k.startswith("test_") for r in reports for k in r)


# ranked by the highest val_loss, a trial's best epoch is its first: the test must score those weights
WORST_FIRST = Run(task="digits_mlp", metric="val_loss", mode="max", epochs=3, evaluate_test=True)
BEST_EPOCH_CONFIG = {"lr": 3e-3, "batch_size": 64, "checkpoint_every": 1}


def scored(state_dict):
    task = get_task("digits_mlp")
    model = task.model(BEST_EPOCH_CONFIG)
    model.load_state_dict(state_dict)
    return evaluate(model, task, task.datasets(BEST_EPOCH_CONFIG).test, "cpu", precision_for("fp32", "cpu"))["loss"]


def test_final_test_split_is_scored_on_the_best_epochs_weights_not_the_last(tmp_path):
    _, reports, kept = run(BEST_EPOCH_CONFIG, WORST_FIRST, keep={e: tmp_path / f"e{e}" for e in (1, 2, 3)})
    best = max(reports, key=lambda r: r["val_loss"])["epoch"]
    assert best != 3 and reports[-1]["tested_epoch"] == best
    final = ckpt.load(kept[3])
    assert reports[-1]["test_loss"] == pytest.approx(scored(final["best_model"]))
    assert reports[-1]["test_loss"] != pytest.approx(scored(final["model"]))  # the last epoch's weights differ
    assert all(torch.equal(final["best_model"][k], v) for k, v in ckpt.load(kept[best])["model"].items())


def test_a_resumed_final_run_keeps_the_best_weights_from_its_checkpoint(tmp_path):
    _, full, kept = run(BEST_EPOCH_CONFIG, WORST_FIRST, keep={2: tmp_path / "e2"})
    _, resumed, _ = run(BEST_EPOCH_CONFIG, WORST_FIRST, resume_from=str(kept[2]))
    assert full[-1]["tested_epoch"] < 3 and resumed[-1]["tested_epoch"] == full[-1]["tested_epoch"]
    assert resumed[-1]["test_loss"] == full[-1]["test_loss"]


def test_a_run_resumed_at_its_end_trains_nothing_and_scores_its_best_epochs_weights(tmp_path):
    """The final stage's chosen config, which the seeds stage ran (keeping its best weights): one report,
    its last epoch's, with the test split scored as if the run had been the final stage's own."""
    _, own, _ = run(BEST_EPOCH_CONFIG, WORST_FIRST)
    seeds = Run(**{**WORST_FIRST.__dict__, "evaluate_test": False, "keep_best": True})
    _, ran, kept = run(BEST_EPOCH_CONFIG, seeds, keep={3: tmp_path / "e3"}, origin="seeds_trial")
    assert not any(k.startswith("test_") for r in ran for k in r)
    result, scored_again, again = run(BEST_EPOCH_CONFIG, WORST_FIRST, keep={3: tmp_path / "again"},
                                      resume_from=str(kept[3]), origin="final_trial")
    [report] = scored_again
    assert own[-1]["tested_epoch"] < 3 and report["tested_epoch"] == own[-1]["tested_epoch"]
    assert report["test_loss"] == own[-1]["test_loss"] and report["val_loss"] == ran[-1]["val_loss"]
    assert (report["epoch"], report["resumed_from"], report["resumed_epoch"]) == (3, "seeds_trial", 3)
    assert "epoch_seconds" not in report and result.status == "completed"  # it trained nothing
    assert 3 in again  # a checkpoint of its own, with the weights it scored
    # a run with no test split to score ends there without a report (PBT's clone of a finished trial:
    # a report would be exploited again, and again)
    result, none, _ = run(BEST_EPOCH_CONFIG, seeds, resume_from=str(kept[3]))
    assert none == [] and result.status == "completed" and result.epochs == 3
    # without the best epoch's weights the test split cannot be scored on them: said, not guessed
    _, _, plain = run(BEST_EPOCH_CONFIG, Run(**{**seeds.__dict__, "keep_best": False}), keep={3: tmp_path / "p3"})
    with pytest.raises(ConfigError, match="weights of its best epoch"):
        run(BEST_EPOCH_CONFIG, WORST_FIRST, resume_from=str(plain[3]))


def test_char_lm_learns_and_reports_perplexity():
    config = {"model_dim": 32, "num_heads": 2, "num_layers": 1, "seq_len": 32, "steps_per_epoch": 20,
              "batch_size": 16, "lr": 3e-3, "grad_clip": 1.0}
    result, reports, _ = run(config, Run(task="char_lm", epochs=3))
    assert result.status == "completed"
    first, last = reports[0], reports[-1]
    assert last["val_perplexity"] == pytest.approx(math.exp(last["val_loss"]))
    assert last["val_loss"] < first["val_loss"] and last["val_perplexity"] < 40  # uniform over bytes is 256


def test_resume_under_new_hyperparameters_applies_them(tmp_path):
    """PBT's exploit: restore a donor's checkpoint, continue with mutated lr / weight decay."""
    donor = {"lr": 1e-3, "weight_decay": 0.0, "batch_size": 64, "schedule": "cosine", "checkpoint_every": 1}
    _, reports, kept = run(donor, Run(task="digits_mlp", epochs=3), keep={1: tmp_path / "e1"}, origin="trial_a")
    mutated = {**donor, "lr": 4e-3, "weight_decay": 0.01}
    _, resumed, _ = run(mutated, Run(task="digits_mlp", epochs=3), resume_from=str(kept[1]), origin="trial_b")
    assert resumed[0]["scheduled_lr"] == pytest.approx(4 * reports[1]["scheduled_lr"])  # same point on the cosine, 4x the base
    assert resumed[0]["resumed_from"] == "trial_a" and "resumed_from" not in resumed[1]
    assert ckpt.load(kept[1])["origin"] == "trial_a"
    _, own, _ = run(donor, Run(task="digits_mlp", epochs=3), resume_from=str(kept[1]), origin="trial_a")
    assert "resumed_from" not in own[0]  # resuming one's own checkpoint is no exploit


def test_threads_freed_mid_epoch_are_taken_within_the_epoch_not_at_the_next(monkeypatch):
    # the sweep frees a CPU after the trial's first ask of epoch 1: with asks every step (interval 0),
    # epoch 1 already ends on 2 threads; with the interval longer than the run, only epoch 2 does
    from raysweep.train import loop

    def threads_per_epoch(every_s):
        monkeypatch.setattr(loop, "THREADS_EVERY_S", every_s)
        asks = []

        def threads():
            asks.append(1)
            return 1 if len(asks) == 1 else 2

        before = torch.get_num_threads()
        torch.set_num_threads(1)
        try:
            _, reports, _ = run({"batch_size": 64}, Run(task="digits_mlp", epochs=2), threads=threads)
        finally:
            torch.set_num_threads(before)
        return [r["threads"] for r in reports], len(asks)

    per_epoch, asks = threads_per_epoch(0.0)
    assert per_epoch == [2, 2] and asks > 2
    assert threads_per_epoch(1e9) == ([1, 2], 2)


def test_a_tensor_datasets_batches_are_one_indexing_each_and_the_same_as_a_dataloaders():
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    from raysweep.train.loop import batched

    class Counted(TensorDataset):
        calls = 0

        def __getitem__(self, index):
            Counted.calls += 1
            return super().__getitem__(index)

    class Plain(Dataset):  # any other dataset: a sample at a time, as DataLoader does
        def __init__(self, d):
            self.d = d

        def __len__(self):
            return len(self.d)

        def __getitem__(self, i):
            return self.d[i]

    data = Counted(torch.arange(100).float().reshape(50, 2), torch.arange(50))
    order = torch.randperm(50, generator=torch.Generator().manual_seed(0)).tolist()
    expected = [tuple(t.tolist() for t in b) for b in DataLoader(data, batch_size=8, sampler=order)]
    Counted.calls = 0
    got = [tuple(t.tolist() for t in b) for b in batched(data, 8, order)]
    assert got == expected and Counted.calls == 7  # 7 batches (the last of 2), not 50 samples
    assert [tuple(t.tolist() for t in b) for b in batched(Plain(data), 8, order)] == expected
    assert len(batched(data, 8, range(0, 50, 2))) == 4  # a rank's shard: every world-th sample
