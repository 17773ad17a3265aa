"""Optimizers from trainer settings, with no-decay parameter groups and LAMB (torch has none)."""
from __future__ import annotations

import math

import torch
from torch import nn

from ..spec.settings import TrainSettings


def param_groups(model: nn.Module, weight_decay: float, no_decay: bool) -> list[dict]:
    """Two groups: decayed weights, and biases plus normalisation weights (every tensor of rank < 2),
    which are excluded from weight decay (Loshchilov & Hutter, AdamW)."""
    decay, skip = [], []
    for _, p in model.named_parameters():
        if p.requires_grad:
            (skip if no_decay and p.ndim < 2 else decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if skip:
        groups.append({"params": skip, "weight_decay": 0.0})
    return groups


def build_optimizer(model: nn.Module, s: TrainSettings, lr: float) -> torch.optim.Optimizer:
    groups = param_groups(model, s.weight_decay, s.no_decay)
    betas = (s.beta1, s.beta2)
    if s.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=s.momentum, nesterov=s.nesterov and s.momentum > 0)
    if s.optimizer == "adam":
        return torch.optim.Adam(groups, lr=lr, betas=betas, eps=s.eps)
    if s.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=s.eps)
    if s.optimizer == "rmsprop":
        return torch.optim.RMSprop(groups, lr=lr, alpha=s.beta2, eps=s.eps, momentum=s.momentum)
    if s.optimizer == "adagrad":
        return torch.optim.Adagrad(groups, lr=lr, eps=s.eps)
    if s.optimizer == "nadam":
        return torch.optim.NAdam(groups, lr=lr, betas=betas, eps=s.eps)
    if s.optimizer == "lamb":
        return Lamb(groups, lr=lr, betas=betas, eps=s.eps)
    raise ValueError(s.optimizer)


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al., 2019, "Large Batch Optimization for Deep Learning", Algorithm 2):
    Adam's bias-corrected update plus decoupled weight decay, scaled per tensor by the trust ratio
    ||w|| / ||update|| (1 where either norm is 0)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t, m, v = state["step"], state["m"], state["v"]
                m.mul_(beta1).add_(p.grad, alpha=1 - beta1)
                v.mul_(beta2).addcmul_(p.grad, p.grad, value=1 - beta2)
                update = (m / (1 - beta1 ** t)) / ((v / (1 - beta2 ** t)).sqrt() + group["eps"])
                if group["weight_decay"]:
                    update.add_(p, alpha=group["weight_decay"])
                w_norm, u_norm = p.norm().item(), update.norm().item()
                trust = w_norm / u_norm if w_norm > 0 and u_norm > 0 and math.isfinite(u_norm) else 1.0
                p.add_(update, alpha=-group["lr"] * trust)
        return loss
