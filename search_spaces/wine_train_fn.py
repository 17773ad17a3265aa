"""A training function written for Ray Train, as a user brings it: plain PyTorch and `ray.train`, no
raysweep import. raysweep runs it unchanged as each trial (`task: wine_train_fn:train_wine`).

It reads its hyperparameters from `config`, resumes from `ray.train.get_checkpoint()` (a restored or a
PBT-cloned trial), reports once per epoch with a checkpoint, and scores the test split when the
final stage sets `config["evaluate_test"]`."""
import os
import tempfile

import numpy as np
import ray.train
import ray.train.torch
import torch
from sklearn.datasets import load_wine
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


def _splits():
    x, y = load_wine(return_X_y=True)
    x = (x - x.mean(0)) / x.std(0)
    order = np.random.default_rng(0).permutation(len(x))
    x, y = torch.tensor(x[order], dtype=torch.float32), torch.tensor(y[order])
    return TensorDataset(x[:106], y[:106]), TensorDataset(x[106:142], y[106:142]), TensorDataset(x[142:], y[142:])


def _score(model, dataset):
    x, y = dataset.tensors
    model.eval()
    with torch.no_grad():
        out = model(x)
    return nn.functional.cross_entropy(out, y).item(), (out.argmax(-1) == y).float().mean().item()


def train_wine(config):
    torch.manual_seed(config.get("seed", 0))
    train, val, test = _splits()
    model = nn.Sequential(nn.Linear(13, config["hidden"]), nn.ReLU(), nn.Dropout(config.get("dropout", 0.0)),
                          nn.Linear(config["hidden"], 3))
    model = ray.train.torch.prepare_model(model)
    loader = ray.train.torch.prepare_data_loader(DataLoader(train, batch_size=config["batch_size"], shuffle=True))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config.get("weight_decay", 0.0))
    start = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            saved = torch.load(os.path.join(d, "state.pt"))
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        for group in optimizer.param_groups:  # a PBT clone keeps its donor's moments, with its own lr
            group["lr"] = config["lr"]
        start = saved["epoch"]
    for epoch in range(start, config.get("num_epochs", 20)):
        model.train()
        total, seen = 0.0, 0
        for x, y in loader:
            loss = nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total, seen = total + loss.item() * len(y), seen + len(y)
        val_loss, val_accuracy = _score(model, val)
        metrics = {"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss, "val_accuracy": val_accuracy,
                   "workers": ray.train.get_context().get_world_size()}
        if config.get("evaluate_test"):
            metrics["test_loss"], metrics["test_accuracy"] = _score(model, test)
        with tempfile.TemporaryDirectory() as d:
            if ray.train.get_context().get_world_rank() == 0:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": epoch + 1}
                torch.save(state, os.path.join(d, "state.pt"))
                ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(d))
            else:
                ray.train.report(metrics)
