"""One optimizer step over its micro-batches, shared by the training loop and the LR range test.

Nothing here reads a value back to the host: each step's loss and gradient norm stay on the device
in a window that `sync()` reads, and reduces across ranks, in one collective. The caller decides
how often (the loop: every SYNC_EVERY steps and at the end of an epoch), so on a GPU the host
queues work ahead instead of waiting on every step.
"""
from __future__ import annotations

import contextlib
import itertools
import math
from dataclasses import dataclass

import torch
import torch.distributed as dist

# Optimizer steps between reads of the window: a diverged trial stops within this many steps, and
# the host waits for the device once per this many steps (well under 1 % of a step's time on a GPU).
SYNC_EVERY = 100


def micro_batches(loader, grad_accum: int):
    """The loader's batches in groups of `grad_accum`, one group per optimizer step (the last may be short)."""
    batches = iter(loader)
    while group := list(itertools.islice(batches, grad_accum)):
        yield group


def distributed() -> bool:
    """True inside a process group, even of one rank: the multi-rank code path then runs as is."""
    return dist.is_available() and dist.is_initialized()


def all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    """Sum (or `op`) a tensor across ranks in place; a no-op outside a process group. The tensor must
    live on the model's device: NCCL has no CPU tensors."""
    if distributed():
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


@dataclass
class Window:
    """What `sync()` read: sums over every rank since the last sync, and the first bad step, if any."""
    loss_sum: float      # sum of step loss x step samples
    samples: int
    norm_sum: float
    steps: int
    diverged: str = ""   # why, with the step (counted in the epoch) where it happened


class Step:
    """forward/backward for each micro-batch (DDP syncs gradients on the last one only), then unscale,
    clip, optimizer step. The loss of each micro-batch is weighted by its share of the step's samples,
    so a short last step is exact."""

    def __init__(self, net, model, task, optimizer, scaler, precision, settings, device,
                 first_loss: float | None = None):
        self.net, self.model, self.task, self.optimizer, self.scaler = net, model, task, optimizer, scaler
        self.precision, self.s, self.device = precision, settings, torch.device(device)
        self.first = None if first_loss is None else torch.tensor(first_loss, dtype=torch.float64, device=self.device)
        self.losses: list[torch.Tensor] = []  # one per step since the last sync, on the device
        self.norms: list[torch.Tensor] = []
        self.sizes: list[int] = []
        self.base = 0  # steps of this epoch before the window

    def __call__(self, batches: list) -> None:
        total = sum(len(y) for _, y in batches)
        step_loss = torch.zeros((), dtype=torch.float64, device=self.device)
        for j, (x, y) in enumerate(batches):
            x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
            last = j == len(batches) - 1
            sync = self.net.no_sync() if not last and hasattr(self.net, "no_sync") else contextlib.nullcontext()
            with sync:
                with torch.autocast(self.precision.device_type, dtype=self.precision.dtype,
                                    enabled=self.precision.enabled):
                    out = self.net(x)
                loss = self.task.loss(out.float(), y) * (len(y) / total)
                self.scaler.scale(loss).backward()
            step_loss += loss.detach()
        self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        if self.s.grad_clip and self.s.grad_clip_mode == "value":
            norm = torch.nn.utils.get_total_norm([p.grad for p in params])
            torch.nn.utils.clip_grad_value_(params, self.s.grad_clip)
        else:
            norm = torch.nn.utils.clip_grad_norm_(params, self.s.grad_clip or math.inf)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        if self.first is None:
            self.first = step_loss.clone()
        self.losses.append(step_loss)
        self.norms.append(norm.detach().double())
        self.sizes.append(total)

    def take_losses(self) -> list[float]:
        """Each step's loss since the last read, read to the host and cleared (the LR range test's curve)."""
        values = torch.stack(self.losses).tolist() if self.losses else []
        self.losses, self.norms, self.sizes = [], [], []
        return values

    def sync(self, epoch: int) -> Window:
        """Read and reset the window: one all-reduce of its sums (a second, gathering the first bad step
        of every rank, only when a rank diverged) so that every rank stops at the same step."""
        n = len(self.losses)
        if not n:
            return Window(0.0, 0, 0.0, 0)
        losses = torch.stack(self.losses)
        sizes = torch.tensor(self.sizes, dtype=torch.float64, device=self.device)
        bad = ~torch.isfinite(losses) | (losses > self.s.divergence_factor * self.first)
        sums = torch.stack([(losses * sizes).sum(), sizes.sum(), torch.stack(self.norms).sum(),
                            torch.tensor(float(n), dtype=torch.float64, device=self.device),
                            bad.any().double()])
        loss_sum, samples, norm_sum, steps, any_bad = all_reduce(sums).tolist()
        window = Window(loss_sum, int(samples), norm_sum, int(steps))
        if any_bad:
            window.diverged = self._first_bad(losses, bad, epoch)
        self.base += n
        self.losses, self.norms, self.sizes = [], [], []
        return window

    def _first_bad(self, losses, bad, epoch: int) -> str:
        flags = bad.tolist()  # the rare path: reading it on the host costs nothing that matters
        i = flags.index(True) if True in flags else None
        mine = torch.tensor([math.inf if i is None else i, math.nan if i is None else losses[i].item(),
                             float(self.first)], dtype=torch.float64, device=self.device)
        if distributed():
            rows = [torch.empty_like(mine) for _ in range(dist.get_world_size())]
            dist.all_gather(rows, mine)
            mine = min(rows, key=lambda r: r[0].item())
        i, value, first = mine.tolist()
        where = f"at epoch {epoch}, step {self.base + int(i) + 1}"
        if not math.isfinite(value):
            return f"loss is {value} {where}"
        return f"loss {value:.4g} exceeds {self.s.divergence_factor:g} x the first loss {first:.4g} {where}"

    def reset_epoch(self) -> None:
        self.base = 0

    @property
    def first_loss(self) -> float | None:
        return None if self.first is None else float(self.first)
