"""Trainer settings: the keys a trial's config may set for the trainer, with raysweep's defaults (README,
"How raysweep tunes").

Every other key in a trial's config belongs to the task (model width, dropout, ...).
"""
from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

OPTIMIZERS = ("sgd", "adam", "adamw", "rmsprop", "adagrad", "nadam", "lamb")  # sgd + momentum/nesterov settings
SCHEDULES = ("constant", "step", "exponential", "cosine", "onecycle", "plateau")


class TrainSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)

    optimizer: Literal[OPTIMIZERS] = "adamw"
    lr: float = Field(1e-3, gt=0, le=10)
    momentum: float = Field(0.0, ge=0, lt=1)  # sgd and rmsprop; 0 = plain SGD
    nesterov: bool = False  # sgd with momentum > 0
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    no_decay: bool = True  # exclude biases and normalisation weights from weight decay
    batch_size: int = Field(32, ge=1)  # global batch, split across workers
    lr_scaling: Literal["none", "linear", "sqrt"] = "none"
    lr_scaling_base: int = Field(256, ge=1)  # the batch size `lr` was tuned for
    schedule: Literal[SCHEDULES] = "constant"
    warmup_steps: int = Field(0, ge=0)
    warmup_fraction: float = Field(0.0, ge=0, lt=1)
    step_size: int = Field(30, ge=1)  # epochs between step-decay drops
    gamma: float | None = Field(None, gt=0, le=1)  # step: 0.1, exponential: 0.96
    min_lr: float = Field(0.0, ge=0)
    pct_start: float = Field(0.3, gt=0, lt=1)  # one-cycle
    plateau_factor: float = Field(0.5, gt=0, lt=1)
    plateau_patience: int = Field(10, ge=0)
    grad_clip: float | None = Field(None, gt=0)
    grad_clip_mode: Literal["norm", "value"] = "norm"
    grad_accum: int = Field(1, ge=1)
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    seed: int = 0
    checkpoint_every: int = Field(0, ge=0)  # epochs; 0 = only at the end (and by time, below)
    # and by time: every 5 s, or less often where saving would take over 5% of the time (train/loop.py),
    # at least every checkpoint_every_s: a lost node or driver costs seconds of a trial's work, at most that
    checkpoint_every_s: float = Field(300.0, gt=0)
    divergence_factor: float = Field(10.0, gt=1)  # loss above factor x first loss = diverged


TRAIN_KEYS = frozenset(TrainSettings.model_fields)
BUILTIN_TASKS = ("digits_mlp", "char_lm")


def scaled_lr(s: TrainSettings) -> float:
    """Linear or sqrt scaling of `lr` from the batch size it was tuned for to the global batch."""
    ratio = s.batch_size / s.lr_scaling_base
    return s.lr * {"none": 1.0, "linear": ratio, "sqrt": math.sqrt(ratio)}[s.lr_scaling]
