"""The training loop a trial runs: one process, or one rank of a DistributedDataParallel job.

It knows nothing of Ray or MLflow: it calls `report(metrics, checkpoint_dir)` once per epoch on
every rank (only rank 0 passes a checkpoint), and the caller decides where that goes.
"""
from __future__ import annotations

import contextlib
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ..spec.settings import TrainSettings
from . import checkpoint
from .device import precision_for
from .optim import build_optimizer, scaled_lr
from .schedules import Schedule
from .tasks import Task, get_task

Report = Callable[[dict, "str | None"], None]


class ConfigError(ValueError):
    """A trial config the trainer cannot run (e.g. a batch that does not split over the workers)."""


@dataclass
class Run:
    """What the sweep asks of one trial, beyond its config."""
    task: str
    metric: str = "val_loss"
    mode: str = "min"
    epochs: int = 20
    patience: int | None = None
    min_delta: float = 0.0
    target: float | None = None
    evaluate_test: bool = False
    task_dirs: tuple = ()  # where a user task module may live (the spec's folder)

    @classmethod
    def from_spec(cls, spec, **overrides) -> "Run":
        es = spec.stopping.early_stopping
        return cls(**{**dict(task=spec.task, metric=spec.metric.name, mode=spec.metric.mode,
                             epochs=spec.stopping.max_epochs, patience=es.patience if es else None,
                             min_delta=es.min_delta if es else 0.0, target=spec.stopping.target,
                             task_dirs=spec_dirs(spec)), **overrides})


def spec_dirs(spec) -> tuple:
    file = getattr(spec, "_file", None)
    return (os.path.dirname(os.path.abspath(file)),) if file else ()


@dataclass
class Result:
    status: str  # completed | early_stopped | target_reached | diverged
    reason: str = ""
    epochs: int = 0
    metrics: dict = field(default_factory=dict)


def _better(a: float, b: float | None, mode: str, min_delta: float = 0.0) -> bool:
    if b is None:
        return True
    return a < b - min_delta if mode == "min" else a > b + min_delta


def _all_sum(values: list[float], world: int) -> list[float]:
    if world == 1:
        return values
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


@torch.no_grad()
def evaluate(model, task: Task, dataset, device, precision, rank: int = 0, world: int = 1) -> dict:
    """Loss and quality over a split; each rank takes every world-th sample, sums are all-reduced."""
    model.eval()
    shard = Subset(dataset, range(rank, len(dataset), world))
    loss_sum = correct = count = 0.0
    for x, y in DataLoader(shard, batch_size=512):
        x, y = x.to(device), y.to(device)
        with torch.autocast(precision.device_type, dtype=precision.dtype, enabled=precision.enabled):
            out = model(x)
        n = y.numel()
        loss_sum += task.loss(out.float(), y).item() * n
        correct += task.correct(out, y).item()
        count += n
    loss_sum, correct, count = _all_sum([loss_sum, correct, count], world)
    mean = loss_sum / max(count, 1)
    return {"loss": mean, task.quality: task.quality_value(mean, correct, count)}


def _weight_spread(model, world: int) -> float:
    """Largest difference of any weight across ranks: 0.0 when DDP kept the replicas identical."""
    flat = torch.cat([p.detach().float().flatten().cpu() for p in model.parameters()])
    hi, lo = flat.clone(), flat.clone()
    dist.all_reduce(hi, op=dist.ReduceOp.MAX)
    dist.all_reduce(lo, op=dist.ReduceOp.MIN)
    return (hi - lo).abs().max().item()


def _apply_settings(optimizer, schedule: Schedule, new: TrainSettings, old: TrainSettings) -> None:
    """After restoring a checkpoint written under other settings (a PBT donor's), put the new
    hyperparameters into the restored optimizer and schedule: the restored state keeps its moments."""
    ratio = scaled_lr(new) / scaled_lr(old)
    if ratio != 1.0:
        for g in optimizer.param_groups:
            g["lr"] *= ratio
            if "initial_lr" in g:
                g["initial_lr"] *= ratio
        for sched in schedule.schedulers():
            if hasattr(sched, "base_lrs"):
                sched.base_lrs = [b * ratio for b in sched.base_lrs]
            if hasattr(sched, "max_lrs"):
                sched.max_lrs = [b * ratio for b in sched.max_lrs]
    optimizer.param_groups[0]["weight_decay"] = new.weight_decay  # the decayed group
    for g in optimizer.param_groups:
        for key, value in (("betas", (new.beta1, new.beta2)), ("momentum", new.momentum), ("eps", new.eps)):
            if key in g:
                g[key] = value


def train(config: dict, run: Run, report: Report, resume_from: str | None = None,
          device: torch.device | str = "cpu", origin: str | None = None) -> Result:
    """Train `config`; `origin` names who runs it (a trial id), kept in checkpoints so that a resume
    from someone else's checkpoint (PBT's exploit) is reported as `resumed_from`."""
    # -- settings, data, model --------------------------------------------------------------------
    s = TrainSettings.model_validate(config)
    task = get_task(run.task, tuple(run.task_dirs))
    device = torch.device(device)
    world = dist.get_world_size() if dist.is_initialized() else 1
    rank = dist.get_rank() if dist.is_initialized() else 0
    checkpoint.seed_everything(s.seed)
    per_step = world * s.grad_accum
    if s.batch_size % per_step:
        raise ConfigError(f"batch_size {s.batch_size} does not split into {world} workers x {s.grad_accum} "
                          f"accumulation steps; use a multiple of {per_step}")
    splits = task.datasets(config)
    sampler = DistributedSampler(splits.train, num_replicas=world, rank=rank, shuffle=True, seed=s.seed)
    loader = DataLoader(splits.train, batch_size=s.batch_size // per_step, sampler=sampler)
    model = task.model(config).to(device)
    precision = precision_for(s.precision, device.type)
    optimizer = build_optimizer(model, s, scaled_lr(s))
    steps_per_epoch = math.ceil(len(loader) / s.grad_accum)
    schedule = Schedule(optimizer, s, steps_per_epoch, run.epochs, mode=run.mode)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
    quality = f"val_{task.quality}"
    state = {"epoch": 0, "best": None, "first_loss": None, "bad_epochs": 0}
    resumed_from = None
    if resume_from:
        saved = checkpoint.load(resume_from)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        scaler.load_state_dict(saved["scaler"])
        state = saved["loop"]
        checkpoint.set_rng_state(saved["rng"])
        _apply_settings(optimizer, schedule, s, TrainSettings.model_validate(saved["config"]))
        if origin is not None and saved.get("origin") not in (None, origin):
            resumed_from = saved["origin"]
    net = DistributedDataParallel(model) if world > 1 else model
    samples_per_epoch = len(sampler) * world
    group = loader.batch_size * s.grad_accum  # samples per optimizer step on this rank

    for epoch in range(state["epoch"], run.epochs):
        # -- one epoch: forward/backward with accumulation, clip, step, schedule ------------------
        sampler.set_epoch(epoch)
        net.train()
        started = time.perf_counter()
        loss_sum = norm_sum = 0.0
        seen = steps = 0
        diverged = ""
        for i, (x, y) in enumerate(loader):
            x, y = x.to(device), y.to(device)
            boundary = (i + 1) % s.grad_accum == 0 or i + 1 == len(loader)
            sync = contextlib.nullcontext() if boundary or world == 1 else net.no_sync()
            with sync:
                with torch.autocast(precision.device_type, dtype=precision.dtype, enabled=precision.enabled):
                    out = net(x)
                loss = task.loss(out.float(), y)
                # weight each micro-batch by its share of its step's samples: exact for a short last step
                step_samples = min(group, len(sampler) - (i // s.grad_accum) * group)
                scaler.scale(loss * (y.shape[0] / step_samples)).backward()
            value = loss.item()
            if not math.isfinite(value):
                diverged = f"loss is {value} at epoch {epoch + 1}, step {i + 1}"
            elif state["first_loss"] is not None and value > s.divergence_factor * state["first_loss"]:
                diverged = (f"loss {value:.4g} exceeds {s.divergence_factor:g} x the first loss "
                            f"{state['first_loss']:.4g} at epoch {epoch + 1}, step {i + 1}")
            if world > 1 and _all_sum([float(bool(diverged))], world)[0] and not diverged:
                diverged = "another rank diverged"  # every rank must leave the loop together
            if diverged:
                break
            state["first_loss"] = state["first_loss"] or value
            loss_sum += value * y.shape[0]
            seen += y.shape[0]
            if boundary:
                scaler.unscale_(optimizer)
                if s.grad_clip and s.grad_clip_mode == "value":
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), math.inf)  # measure, then clip
                    torch.nn.utils.clip_grad_value_(model.parameters(), s.grad_clip)
                else:
                    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), s.grad_clip or math.inf)
                norm_sum += norm.item()
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                schedule.step_batch()
                steps += 1
        if diverged:
            metrics = {"epoch": epoch + 1, "train_loss": math.nan, "val_loss": math.nan, "lr": schedule.lr,
                       "status": "diverged", "diverged_reason": diverged}
            report(metrics, None)
            return Result("diverged", diverged, epoch + 1, metrics)

        # -- evaluate, reduce across ranks, decide whether to go on ------------------------------
        loss_sum, seen, norm_sum, steps = _all_sum([loss_sum, seen, norm_sum, steps], world)
        seconds = time.perf_counter() - started
        val = evaluate(model, task, splits.val, device, precision, rank, world)
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "val_loss": val["loss"],
                   quality: val[task.quality], "lr": schedule.lr, "grad_norm": norm_sum / max(steps, 1),
                   "epoch_seconds": seconds, "samples_per_s": samples_per_epoch / max(seconds, 1e-9)}
        value = metrics[run.metric]
        if _better(value, state["best"], run.mode, run.min_delta):
            state["bad_epochs"] = 0
        else:
            state["bad_epochs"] += 1
        if _better(value, state["best"], run.mode):
            state["best"] = value
        metrics[f"best_{run.metric}"] = state["best"]
        schedule.step_epoch(value)
        status = "running"
        if run.target is not None and not _better(run.target, value, run.mode):
            status = "target_reached"
        elif run.patience is not None and state["bad_epochs"] >= run.patience:
            status = "early_stopped"
        elif epoch + 1 == run.epochs:
            status = "completed"
        metrics["status"] = status
        if resumed_from:
            metrics["resumed_from"], resumed_from = resumed_from, None
        if status != "running":
            if run.evaluate_test:
                test = evaluate(model, task, splits.test, device, precision, rank, world)
                metrics.update({"test_loss": test["loss"], f"test_{task.quality}": test[task.quality]})
            if world > 1:
                metrics["ddp_weight_spread"] = _weight_spread(model, world)

        # -- checkpoint (rank 0) and report (every rank) ------------------------------------------
        state["epoch"] = epoch + 1
        directory = None
        save_now = status != "running" or (s.checkpoint_every and (epoch + 1) % s.checkpoint_every == 0)
        if save_now and rank == 0:
            directory = checkpoint.save(tempfile.mkdtemp(prefix="raysweep-ckpt-"), model=model.state_dict(),
                                        optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                                        scaler=scaler.state_dict(), loop=dict(state), config=config, origin=origin)
        try:
            report(metrics, directory)
        finally:
            if directory:
                shutil.rmtree(directory, ignore_errors=True)
        if status != "running":
            return Result(status, "", epoch + 1, metrics)
    return Result("completed", "", state["epoch"], {})
