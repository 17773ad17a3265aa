"""Device and mixed-precision choices: the same code on a CPU laptop and a GPU cluster."""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Precision:
    device_type: str  # "cpu" | "cuda"
    enabled: bool     # autocast on?
    dtype: torch.dtype | None
    scaler: bool      # fp16 needs loss scaling; bf16 does not


def precision_for(precision: str, device_type: str) -> Precision:
    """fp32: no autocast. bf16: autocast on CPU and GPU. fp16: GPU only, with a GradScaler."""
    if precision == "fp32":
        return Precision(device_type, False, None, False)
    if precision == "bf16":
        return Precision(device_type, True, torch.bfloat16, False)
    if precision == "fp16":
        if device_type != "cuda":
            raise ValueError("precision fp16 needs a GPU; use bf16 on CPU")
        return Precision(device_type, True, torch.float16, True)
    raise ValueError(precision)


def local_device(use_gpu: bool, local_rank: int = 0) -> torch.device:
    """The worker's device: its own GPU (Ray sets CUDA_VISIBLE_DEVICES per worker) or the CPU."""
    if use_gpu:
        if not torch.cuda.is_available():
            raise RuntimeError("the trial asked for a GPU but torch sees none (CUDA build and drivers?)")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device("cpu")

