"""Checkpoints that resume exactly: model, optimizer, schedule, scaler, RNG states and loop state."""
from __future__ import annotations

import json
import os
import random

import numpy as np

FILE = "checkpoint.pt"
METRICS = "metrics.json"


# torch is imported where it is used: a function trial reads and writes metrics.json without it
def rng_state() -> dict:
    import torch

    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    import torch

    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save(directory: str, metrics: dict | None = None, **state) -> str:
    """The state, and beside it the metrics of the epoch it ends (METRICS): a record of that epoch that
    travels with the checkpoint, should the report of it be lost with a killed driver."""
    import torch

    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, FILE)
    torch.save({**state, "rng": rng_state()}, path + ".tmp")
    os.replace(path + ".tmp", path)  # never leave a half-written checkpoint behind
    if metrics is not None:
        write_metrics(directory, metrics)
    return directory


def write_metrics(directory: str, metrics: dict) -> None:
    with open(os.path.join(directory, METRICS), "w") as f:
        json.dump(metrics, f, default=str)


def read_metrics(directory: str) -> dict:
    """The metrics saved beside a checkpoint; {} if none (or unreadable)."""
    try:
        with open(os.path.join(directory, METRICS)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def load(directory: str) -> dict:
    import torch

    return torch.load(os.path.join(directory, FILE), map_location="cpu", weights_only=False)


def seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
