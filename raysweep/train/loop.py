"""The training loop a trial runs: one process, or one rank of a DistributedDataParallel job.

It knows nothing of Ray or MLflow: it calls `report(metrics, checkpoint_dir)` once per epoch on
every rank (only rank 0 passes a checkpoint), and the caller decides where that goes.
"""
from __future__ import annotations

import copy
import math
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset

from ..spec.settings import TrainSettings, scaled_lr
from . import checkpoint
from .device import precision_for
from .optim import build_optimizer
from .run import ConfigError, Run
from .schedules import Schedule
from .step import SYNC_EVERY, Step, all_reduce, distributed, micro_batches
from .tasks import Task, get_task
from .tasks.base import BATCH_QUALITIES

# Between checkpoints by time: at least this long, and long enough that saving costs at most this share
# of the trial's time, never more than checkpoint_every_s. Work lost to a killed driver or node is then
# seconds while checkpoints are cheap: with only checkpoint_every_s (300 s), char_lm's trials (1-2
# minutes) started over at every interruption of bench/interruptions.py, 53 s a restart; with 30 s,
# the default pipeline's 10-20 s trials still did.
MIN_CHECKPOINT_S = 5.0
CHECKPOINT_SHARE = 0.05

# How often a trial asks, inside an epoch, for the threads the sweep may give it (`train(threads=...)`):
# a CPU freed mid-epoch is then used within a second, not at the next epoch (up to 7 s later here).
THREADS_EVERY_S = 1.0

# Evaluation batches: large on an accelerator; on a CPU a batch past the caches costs more per sample
# (char_lm's largest model: 0.42 s for its validation split in batches of 512, 0.35 s in batches of 64).
EVAL_BATCH, CPU_EVAL_BATCH = 512, 64

# What an epoch cost: not repeated by a report that trained nothing (a run resumed at its end)
EPOCH_COST = ("epoch_seconds", "train_cpu_seconds", "samples_per_s", "threads")

Report = Callable[[dict, "str | None"], None]


def batched(dataset, batch_size: int, sampler) -> DataLoader:
    """Batches of `dataset` in `sampler`'s order. A TensorDataset's batch is one indexing of its tensors,
    not a sample at a time and a collate: on digits 1.0 ms an epoch of data against 3.8 ms (of 32)."""
    if isinstance(dataset, TensorDataset):
        return DataLoader(dataset, sampler=BatchSampler(sampler, batch_size, drop_last=False), batch_size=None)
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler)


@dataclass
class Result:
    status: str  # completed | early_stopped | target_reached | diverged
    reason: str = ""
    epochs: int = 0
    metrics: dict = field(default_factory=dict)


@torch.no_grad()
def evaluate(model, task: Task, dataset, device, precision, rank: int = 0, world: int = 1) -> dict:
    """Loss, quality and the task's split metrics over a split; each rank takes every world-th sample.
    Sums stay on the device and are all-reduced once, then read; a task with split metrics has its
    outputs gathered once, to the host, and scored over the whole split."""
    model.eval()
    sums = torch.zeros(3, dtype=torch.float64, device=device)  # loss x n, correct, n
    names = task.split_metric_names()
    outputs, targets = [], []
    size = CPU_EVAL_BATCH if torch.device(device).type == "cpu" else EVAL_BATCH
    for x, y in batched(dataset, size, range(rank, len(dataset), world)):
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with torch.autocast(precision.device_type, dtype=precision.dtype, enabled=precision.enabled):
            out = model(x)
        n = y.numel()
        sums[0] += task.loss(out.float(), y).double() * n
        if task.quality == "accuracy":
            sums[1] += task.correct(out, y).double()
        sums[2] += n
        if names:
            outputs.append(out.float())
            targets.append(y)
    loss_sum, correct, count = all_reduce(sums).tolist()
    mean = loss_sum / max(count, 1)
    result = {"loss": mean}
    if task.quality in BATCH_QUALITIES:
        result[task.quality] = task.quality_value(mean, correct, count)
    if names:
        mine = (torch.cat(outputs).cpu(), torch.cat(targets).cpu()) if outputs else None
        parts = [mine]
        if distributed():
            parts = [None] * dist.get_world_size()
            dist.all_gather_object(parts, mine)
        parts = [p for p in parts if p is not None]
        result.update(task.split_metrics(torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])))
    return result


@torch.no_grad()
def _weight_spread(model) -> float:
    """Largest difference of any weight across ranks: 0.0 when DDP kept the replicas identical."""
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])
    hi, lo = flat.clone(), flat.clone()
    all_reduce(hi, dist.ReduceOp.MAX)
    all_reduce(lo, dist.ReduceOp.MIN)
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
          device: torch.device | str = "cpu", origin: str | None = None,
          threads: Callable[[], int | None] | None = None) -> Result:
    """Train `config`; `origin` names who runs it (a trial id), kept in checkpoints so that a resume
    from someone else's checkpoint (PBT's exploit) is reported as `resumed_from`; `threads`, asked at
    each epoch's start and then about once a second, may give torch more threads (CPUs the sweep freed)."""
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
    loader = batched(splits.train, s.batch_size // per_step, sampler)
    model = task.model(config).to(device)
    precision = precision_for(s.precision, device.type)
    optimizer = build_optimizer(model, s, scaled_lr(s))
    steps_per_epoch = math.ceil(len(loader) / s.grad_accum)
    schedule = Schedule(optimizer, s, steps_per_epoch, max(run.horizon or 0, run.epochs), mode=run.mode)
    scaler = torch.amp.GradScaler(device.type, enabled=precision.scaler)
    state = {"epoch": 0, "best": None, "best_epoch": None, "first_loss": None, "bad_epochs": 0}
    # the test split is scored on the weights of the epoch the trial is ranked by (its best), not the
    # last: a copy on the device, on every rank (each scores a share of the split), kept in checkpoints
    best_weights = None
    resumed_from = None
    if resume_from:
        saved = checkpoint.load(resume_from)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        schedule.load_state_dict(saved["schedule"])
        scaler.load_state_dict(saved["scaler"])
        state = {"best_epoch": None, **saved["loop"]}
        best_weights = saved.get("best_model")
        checkpoint.set_rng_state(saved["rng"])
        _apply_settings(optimizer, schedule, s, TrainSettings.model_validate(saved["config"]))
        if origin is not None and saved.get("origin") not in (None, origin):
            resumed_from = saved["origin"]
    resumed_epoch = state["epoch"] if resume_from else None  # reported once: a retry or restore shows where it began
    ddp = distributed()  # a process group, even of one rank (the GPU check runs NCCL that way)
    net = DistributedDataParallel(model) if ddp else model
    step = Step(net, model, task, optimizer, scaler, precision, s, device, state["first_loss"])
    samples_per_epoch = len(sampler) * world
    last_save, save_cost = time.monotonic(), 0.0
    threads_asked = -math.inf

    def end(metrics: dict, epoch: int) -> None:
        """A run's last report: the test split scored on the best epoch's weights, DDP's replica check."""
        if run.evaluate_test:
            tested = model
            if best_weights is not None and state["best_epoch"] != epoch:
                tested = copy.deepcopy(model)
                tested.load_state_dict(best_weights)
            test = evaluate(tested, task, splits.test, device, precision, rank, world)
            metrics.update({f"test_{k}": v for k, v in test.items()})
            if best_weights is not None:
                metrics["tested_epoch"] = state["best_epoch"]
        if ddp:
            metrics["ddp_weight_spread"] = _weight_spread(model)

    def save_and_report(metrics: dict, save: bool) -> None:
        """A checkpoint from rank 0 if `save`, and the report from every rank."""
        nonlocal last_save, save_cost
        directory = None
        if save and rank == 0:
            saving = time.monotonic()
            directory = checkpoint.save(tempfile.mkdtemp(prefix="raysweep-ckpt-"), metrics, model=model.state_dict(),
                                        optimizer=optimizer.state_dict(), schedule=schedule.state_dict(),
                                        scaler=scaler.state_dict(), loop=dict(state), config=config, origin=origin,
                                        best_model=best_weights)
        try:
            report(metrics, directory)
        finally:
            if directory:
                shutil.rmtree(directory, ignore_errors=True)
                # its cost: the save and the report that persisted it (a copy to shared storage)
                last_save = time.monotonic()
                save_cost = last_save - saving

    def more_threads():
        nonlocal threads_asked
        threads_asked = time.monotonic()
        wanted = threads()
        if wanted and wanted != torch.get_num_threads():
            torch.set_num_threads(wanted)

    for epoch in range(state["epoch"], run.epochs):
        # -- one epoch: optimizer steps over groups of micro-batches; the host reads the device's sums
        #    every SYNC_EVERY steps (a diverged trial stops there) and at the end of the epoch -------------
        sampler.set_epoch(epoch)
        if threads is not None:
            more_threads()
        net.train()
        started, cpu_started = time.perf_counter(), time.process_time()
        step.reset_epoch()
        windows = []
        for i, batches in enumerate(micro_batches(loader, s.grad_accum)):
            step(batches)
            schedule.step_batch()
            if threads is not None and time.monotonic() - threads_asked >= THREADS_EVERY_S:
                more_threads()
            if (i + 1) % SYNC_EVERY == 0:
                windows.append(step.sync(epoch + 1))
                if windows[-1].diverged:
                    break
        windows.append(step.sync(epoch + 1))  # the steps since the last read (none after a break)
        state["first_loss"] = step.first_loss
        diverged = next((w.diverged for w in windows if w.diverged), "")
        if diverged:
            # the sweep metric is in every report (Tune refuses a result without it): no value, NaN
            metrics = {"epoch": epoch + 1, "train_loss": math.nan, "val_loss": math.nan, run.metric: math.nan,
                       "scheduled_lr": schedule.lr, "status": "diverged", "diverged_reason": diverged}
            report(metrics, None)
            return Result("diverged", diverged, epoch + 1, metrics)

        # -- evaluate, decide whether to go on ----------------------------------------------------------
        loss_sum, seen = sum(w.loss_sum for w in windows), sum(w.samples for w in windows)
        norm_sum, steps = sum(w.norm_sum for w in windows), sum(w.steps for w in windows)
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        val = evaluate(model, task, splits.val, device, precision, rank, world)
        metrics = {"epoch": epoch + 1, "train_loss": loss_sum / max(seen, 1), "val_loss": val["loss"],
                   **{f"val_{k}": v for k, v in val.items() if k != "loss"}, "scheduled_lr": schedule.lr,
                   "grad_norm": norm_sum / max(steps, 1),
                   "epoch_seconds": seconds, "train_cpu_seconds": cpu_seconds,  # this process's, all its threads
                   "samples_per_s": samples_per_epoch / max(seconds, 1e-9), "threads": torch.get_num_threads()}
        value = metrics[run.metric]
        status = run.judge(state, value, epoch + 1)
        metrics[f"best_{run.metric}"] = state["best"]
        if (run.evaluate_test or run.keep_best) and state["best_epoch"] == epoch + 1:
            best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        schedule.step_epoch(value)
        metrics["status"] = status
        if resumed_from:
            metrics["resumed_from"], resumed_from = resumed_from, None
        if resumed_epoch is not None:
            metrics["resumed_epoch"], resumed_epoch = resumed_epoch, None
        if status != "running":
            end(metrics, epoch + 1)

        # -- checkpoint (rank 0) and report (every rank) ------------------------------------------
        state["epoch"] = epoch + 1
        every_s = min(s.checkpoint_every_s, max(MIN_CHECKPOINT_S, save_cost / CHECKPOINT_SHARE))
        save_now = (status != "running" or (s.checkpoint_every and (epoch + 1) % s.checkpoint_every == 0)
                    or time.monotonic() - last_save >= every_s)
        save_and_report(metrics, save_now)
        if status != "running":
            return Result(status, "", epoch + 1, metrics)

    # -- resumed at its end: nothing to train. Only a run that scores the test split reports again: an
    #    earlier stage ran this exact config (and seed) to the end, as the seeds stage ran the final stage's
    #    chosen config, and its last report comes again with the test split scored on its best epoch's
    #    weights, not the same epochs trained a second time. Any other run ends without a report: PBT
    #    cloning a finished trial into another one would otherwise get a report, clone again, and never end.
    if not run.evaluate_test:
        return Result("completed", "", state["epoch"], {})
    metrics = {k: v for k, v in checkpoint.read_metrics(resume_from).items()
               if k not in (*EPOCH_COST, "resumed_from", "resumed_epoch")}
    if run.metric not in metrics or (best_weights is None and state["best_epoch"] not in (None, state["epoch"])):
        raise ConfigError(f"the checkpoint at {resume_from} ends its run but lacks its last report or the weights "
                          f"of its best epoch ({state['best_epoch']}) to score the test split on")
    metrics.update({"epoch": state["epoch"], **({"resumed_from": resumed_from} if resumed_from else {}),
                    "resumed_epoch": state["epoch"]})
    end(metrics, state["epoch"])
    save_and_report(metrics, True)
    return Result(metrics.get("status", "completed"), "", state["epoch"], metrics)
