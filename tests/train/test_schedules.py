import math

import pytest
import torch

from raysweep.spec.settings import TrainSettings
from raysweep.train import Run, train
from raysweep.train.schedules import Schedule

SPE, EPOCHS, BASE = 10, 6, 0.1  # steps per epoch, epochs, base lr
TOTAL = SPE * EPOCHS


def lr_curve(**settings):
    """lr in force at every optimizer step (before the step is taken), plus the epoch-end hook."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=BASE)
    s = TrainSettings(lr=BASE, **settings)
    sched = Schedule(opt, s, SPE, EPOCHS)
    lrs = []
    for step in range(TOTAL):
        lrs.append(sched.lr)
        opt.step()
        sched.step_batch()
        if (step + 1) % SPE == 0:
            sched.step_epoch(1.0)  # a metric that never improves
    return lrs


def close(a, b):
    return a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_constant():
    assert all(close(lr, BASE) for lr in lr_curve(schedule="constant"))


def test_step_drops_every_step_size_epochs():
    lrs = lr_curve(schedule="step", step_size=2, gamma=0.5)
    assert all(close(lr, BASE * 0.5 ** ((k // SPE) // 2)) for k, lr in enumerate(lrs))


def test_exponential_decays_once_per_epoch():
    lrs = lr_curve(schedule="exponential", gamma=0.9)
    assert all(close(lr, BASE * 0.9 ** (k // SPE)) for k, lr in enumerate(lrs))


def test_cosine_per_batch_to_min_lr():
    lrs = lr_curve(schedule="cosine", min_lr=0.001)
    assert all(close(lr, 0.001 + (BASE - 0.001) * (1 + math.cos(math.pi * k / TOTAL)) / 2) for k, lr in enumerate(lrs))


def test_linear_warmup_then_cosine():
    w = 8
    lrs = lr_curve(schedule="cosine", warmup_steps=w)
    for k in range(w):
        assert close(lrs[k], BASE * (1 / (w + 1) + (1 - 1 / (w + 1)) * k / w))
    assert close(lrs[w], BASE)
    for k in range(w, TOTAL):
        assert close(lrs[k], BASE * (1 + math.cos(math.pi * (k - w) / (TOTAL - w))) / 2)
    assert all(a < b for a, b in zip(lrs[:w], lrs[1:w + 1], strict=False))  # strictly rising during warmup


def test_warmup_fraction_counts_steps():
    lrs = lr_curve(schedule="constant", warmup_fraction=0.1)  # 6 of 60 steps
    assert lrs[5] < BASE and close(lrs[6], BASE) and close(lrs[-1], BASE)


def test_one_cycle_rises_to_lr_then_anneals():
    lrs = lr_curve(schedule="onecycle", pct_start=0.25)
    peak = max(range(TOTAL), key=lambda k: lrs[k])
    assert close(lrs[0], BASE / 25) and close(lrs[peak], BASE)
    assert abs(peak - 0.25 * TOTAL) <= 1
    assert lrs[-1] < BASE / 25 / 100
    assert all(a <= b for a, b in zip(lrs[:peak], lrs[1:peak + 1], strict=False))
    assert all(a >= b for a, b in zip(lrs[peak:], lrs[peak + 1:], strict=False))


def test_plateau_halves_after_patience_epochs_without_improvement():
    lrs = lr_curve(schedule="plateau", plateau_factor=0.5, plateau_patience=1)
    per_epoch = [lrs[e * SPE] for e in range(EPOCHS)]
    # metric constant: epoch 1 sets the best, every later epoch is bad; patience 1 -> drop every 2nd bad epoch
    assert per_epoch == pytest.approx([BASE, BASE, BASE, BASE / 2, BASE / 2, BASE / 4])


def test_the_trainer_reports_the_scheduled_lr():
    reports = []
    train({"optimizer": "sgd", "lr": 0.2, "schedule": "step", "step_size": 1, "gamma": 0.5, "batch_size": 256},
          Run(task="digits_mlp", epochs=3), lambda m, c: reports.append(m))
    assert [r["scheduled_lr"] for r in reports] == pytest.approx([0.1, 0.05, 0.025])


def test_a_run_cut_short_of_its_horizon_is_the_start_of_the_full_length_run():
    """The coarse stage's trials: 2 epochs of a 4-epoch cosine schedule with warmup, step for step the
    full run's first 2 epochs, not a compressed run of their own."""
    config = {"lr": 0.3, "schedule": "cosine", "warmup_steps": 8, "batch_size": 256}

    def epochs(run):
        reports = []
        train(config, run, lambda m, c: reports.append(m))
        return [v for r in reports for v in (r["scheduled_lr"], r["train_loss"])]

    full = epochs(Run(task="digits_mlp", epochs=4))
    cut = epochs(Run(task="digits_mlp", epochs=2, horizon=4))
    compressed = epochs(Run(task="digits_mlp", epochs=2))
    assert cut == pytest.approx(full[:4])
    assert compressed[2] < 0.5 * cut[2]  # a 2-epoch cosine is near its end where the 4-epoch one is mid-way
