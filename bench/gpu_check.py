"""GPU checks of the trainer, for a machine with a CUDA GPU (run by hand; CI has none).

  python bench/gpu_check.py [--out results.json]

1. each built-in task trains on cuda in fp32, bf16 (autocast) and fp16 (autocast + GradScaler);
2. four trials share one GPU, as four 0.25-GPU trials would: throughput against one trial alone;
3. the loop under DistributedDataParallel with NCCL (world size 1 here: one GPU), and the refusal
   of two NCCL ranks on one GPU that makes raysweep reject fractional GPUs for DDP workers;
4. the pipeline's LR range test on cuda (fp32, bf16) against the same test on CPU (`--only lr_range`).
Needs no Ray: Ray's own GPU placement is exercised by the sweep on a real cluster."""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from raysweep.train import Run, train  # noqa: E402
from raysweep.train.lr_range import range_test, suggest  # noqa: E402

LM = {"model_dim": 256, "num_heads": 8, "num_layers": 4, "seq_len": 128, "steps_per_epoch": 100, "batch_size": 64,
      "lr": 1e-3, "grad_clip": 1.0, "schedule": "cosine", "warmup_fraction": 0.05}
DIGITS = {"lr": 3e-3, "batch_size": 64}


def run_trial(task, config, epochs, device="cuda"):
    reports = []
    result = train(config, Run(task=task, epochs=epochs), lambda m, d: reports.append(m), device=device)
    later = [r["epoch_seconds"] for r in reports[1:]] or [reports[0]["epoch_seconds"]]
    return {"status": result.status, "val_loss": reports[-1]["val_loss"], "epoch_s": statistics.median(later),
            "samples_per_s": statistics.median(r["samples_per_s"] for r in reports[1:] or reports)}


def precisions():
    out = {}
    for task, config, epochs in (("digits_mlp", DIGITS, 4), ("char_lm", LM, 4)):
        for precision in ("fp32", "bf16", "fp16"):
            out[f"{task}/{precision}"] = run_trial(task, {**config, "precision": precision}, epochs)
            print(task, precision, out[f"{task}/{precision}"], flush=True)
    out["char_lm/fp32_cpu_1_epoch"] = run_trial("char_lm", {**LM, "steps_per_epoch": 10}, 2, device="cpu")
    return out


def _shared_worker(i, queue):
    queue.put(run_trial("char_lm", {**LM, "precision": "bf16", "seed": i}, 3))


def sharing(n=4):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    start = time.perf_counter()
    procs = [ctx.Process(target=_shared_worker, args=(i, queue)) for i in range(n)]
    for p in procs:
        p.start()
    results = [queue.get() for _ in procs]
    for p in procs:
        p.join()
    wall = time.perf_counter() - start
    return {"trials": n, "wall_s": wall, "samples_per_s_each": [r["samples_per_s"] for r in results],
            "samples_per_s_total": sum(r["samples_per_s"] for r in results)}


def _ddp_worker(rank, world, gpu_of_rank, queue):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT="29533")
    try:
        torch.cuda.set_device(gpu_of_rank[rank])
        dist.init_process_group("nccl", rank=rank, world_size=world, timeout=timedelta(seconds=60),
                                device_id=torch.device("cuda", gpu_of_rank[rank]))
        reports = []
        train({**DIGITS, "batch_size": 64 * world}, Run(task="digits_mlp", epochs=2), lambda m, d: reports.append(m),
              device=f"cuda:{gpu_of_rank[rank]}")
        queue.put((rank, "ok", reports[-1].get("ddp_weight_spread"), reports[-1]["val_loss"]))
    except Exception as e:  # the expected failure of two ranks on one GPU
        queue.put((rank, "error", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}", None))
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def ddp(world, gpu_of_rank):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker, args=(r, world, gpu_of_rank, queue)) for r in range(world)]
    for p in procs:
        p.start()
    out = []
    for _ in procs:
        try:
            out.append(queue.get(timeout=150))
        except Exception:
            out.append(("?", "timeout", None, None))
    for p in procs:
        p.join(timeout=10)
        if p.is_alive():
            p.kill()
    return out


def lr_range():
    out = {}
    for task, config in (("digits_mlp", {**DIGITS, "optimizer": "adamw"}), ("char_lm", {**LM, "optimizer": "adamw"})):
        for device, precision in (("cpu", "fp32"), ("cuda", "fp32"), ("cuda", "bf16")):
            if task == "char_lm" and device == "cpu":
                continue  # minutes on a CPU at this size
            start = time.perf_counter()
            curve = range_test({**config, "precision": precision}, task, num_steps=100, device=device)
            s = suggest(curve.lrs, curve.smoothed)
            out[f"{task}/{device}/{precision}"] = {
                "seconds": round(time.perf_counter() - start, 2), "steps": len(curve.lrs), "stopped": curve.stopped,
                "steepest_lr": s.steepest_lr, "min_loss_lr": s.min_loss_lr, "range": [s.low, s.high]}
            print(task, device, precision, out[f"{task}/{device}/{precision}"], flush=True)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out")
    parser.add_argument("--only", choices=["lr_range"])
    args = parser.parse_args()
    assert torch.cuda.is_available(), "no CUDA GPU"
    results = {"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0)}
    if args.only == "lr_range":
        results["lr_range"] = lr_range()
        print(json.dumps(results, indent=1))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(results, f, indent=1)
        return
    results["precisions"] = precisions()
    results["sharing_1"] = sharing(1)
    results["sharing_4"] = sharing(4)
    print("sharing", results["sharing_1"], results["sharing_4"], flush=True)
    results["nccl_world1"] = ddp(1, [0])
    print("nccl world 1", results["nccl_world1"], flush=True)
    if torch.cuda.device_count() == 1:
        results["nccl_two_ranks_one_gpu"] = ddp(2, [0, 0])
        print("nccl 2 ranks 1 gpu", results["nccl_two_ranks_one_gpu"], flush=True)
    print(json.dumps(results, indent=1))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
