import math

import numpy as np
import pytest
import torch

from raysweep.spec.settings import OPTIMIZERS, TrainSettings, scaled_lr
from raysweep.train.optim import Lamb, build_optimizer, param_groups
from raysweep.train.tasks import get_task


def digits_batch():
    task = get_task("digits_mlp")
    x, y = task.datasets({}).train[:64]
    return task, x, y


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_every_optimizer_moves_the_parameters_at_its_lr(name):
    task, x, y = digits_batch()
    torch.manual_seed(0)
    model = task.model({"dropout": 0.0})
    before = [p.detach().clone() for p in model.parameters()]
    s = TrainSettings(optimizer=name, lr=0.01, momentum=0.9 if name == "sgd" else 0.0, weight_decay=0.01)
    opt = build_optimizer(model, s, scaled_lr(s))
    assert all(g["lr"] == 0.01 for g in opt.param_groups)
    for _ in range(2):
        opt.zero_grad()
        task.loss(model(x), y).backward()
        opt.step()
    moved = [(a - p.detach()).abs().max().item() for a, p in zip(before, model.parameters(), strict=False)]
    assert all(m > 0 for m in moved), (name, moved)
    loss_after = task.loss(model(x), y).item()
    assert math.isfinite(loss_after)


def test_no_decay_group_holds_biases_and_norm_weights():
    model = get_task("char_lm").model({})
    groups = param_groups(model, weight_decay=0.1, no_decay=True)
    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in groups[0]["params"]}
    skipped = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    assert {n for n in names.values() if n.endswith("bias")} <= skipped
    assert "norm.weight" in skipped and "blocks.layers.0.norm1.weight" in skipped
    assert {"embed.weight", "head.weight", "pos", "blocks.layers.0.linear1.weight"} <= decayed
    assert not decayed & skipped and decayed | skipped == set(names.values())
    assert len(param_groups(model, 0.1, no_decay=False)) == 1


def test_weight_decay_skips_the_no_decay_group():
    """AdamW with a zero gradient only decays: weights shrink by lr*wd, biases stay put."""
    layer = torch.nn.Linear(4, 3)
    s = TrainSettings(optimizer="adamw", lr=0.1, weight_decay=0.5)
    opt = build_optimizer(layer, s, s.lr)
    w0, b0 = layer.weight.detach().clone(), layer.bias.detach().clone()
    layer.weight.grad, layer.bias.grad = torch.zeros_like(w0), torch.zeros_like(b0)
    opt.step()
    assert torch.allclose(layer.weight, w0 * (1 - 0.1 * 0.5))
    assert torch.equal(layer.bias, b0)


def test_lamb_matches_the_update_formula():
    rng = np.random.default_rng(0)
    w = rng.normal(size=(5, 4))
    grads = [rng.normal(size=(5, 4)) for _ in range(3)]
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.999, 1e-6, 0.1
    p = torch.nn.Parameter(torch.tensor(w))
    opt = Lamb([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    m, v, expected = np.zeros_like(w), np.zeros_like(w), w.copy()
    for t, g in enumerate(grads, start=1):
        p.grad = torch.tensor(g)
        opt.step()
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        r = (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps) + wd * expected
        trust = np.linalg.norm(expected) / np.linalg.norm(r)
        expected = expected - lr * trust * r
    np.testing.assert_allclose(p.detach().numpy(), expected, rtol=1e-10)


@pytest.mark.parametrize("rule, batch, expected", [("none", 1024, 0.1), ("linear", 1024, 0.4), ("sqrt", 1024, 0.2),
                                                    ("linear", 64, 0.025)])
def test_lr_scaling_with_the_global_batch(rule, batch, expected):
    s = TrainSettings(lr=0.1, batch_size=batch, lr_scaling=rule, lr_scaling_base=256)
    assert scaled_lr(s) == pytest.approx(expected)
