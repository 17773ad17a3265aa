"""GPU checks of the trainer, for a machine with a CUDA GPU (run by hand; CI has none).

  python bench/gpu_check.py [--out results.json]
  python bench/gpu_check.py --bench [--out bench/results/gpu.json] [--device cpu --quick]

--bench measures issue 15's G1 and G2 as rows like bench/suite.py's (suite.py merges the rows of
bench/results/gpu.json into its own JSON): G1, the trainer's samples/s against a plain PyTorch loop
of the same model, batch, optimizer, clipping and schedule, fp32 and bf16; G2, four trials sharing
the GPU as four 0.25-GPU trials would, total samples/s against one alone. `--device cpu --quick`
runs G1 small on a CPU (a dry run of the harness; G2 needs the GPU).

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
import platform
import statistics
import sys
import time
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]
from raysweep.train import Run, train  # noqa: E402
from raysweep.train.lr_range import range_test, suggest  # noqa: E402
from raysweep.train.tasks import get_task  # noqa: E402

LM = {"model_dim": 256, "num_heads": 8, "num_layers": 4, "seq_len": 128, "steps_per_epoch": 100, "batch_size": 64,
      "lr": 1e-3, "grad_clip": 1.0, "schedule": "cosine", "warmup_fraction": 0.05}
DIGITS = {"lr": 3e-3, "batch_size": 64}


def run_trial(task, config, epochs, device="cuda"):
    reports = []
    result = train(config, Run(task=task, epochs=epochs), lambda m, d: reports.append(m), device=device)
    later = [r["epoch_seconds"] for r in reports[1:]] or [reports[0]["epoch_seconds"]]
    return {"status": result.status, "val_loss": reports[-1]["val_loss"], "epoch_s": statistics.median(later),
            "samples_per_s": statistics.median(r["samples_per_s"] for r in reports[1:] or reports),
            "train_loss": reports[-1]["train_loss"]}


def plain_loop(task_name, config, epochs, device="cuda"):
    """samples/s of the loop a user writes by hand: the task's model and data, AdamW, norm clipping, a
    cosine schedule stepped per batch, bf16 autocast if asked; the host waits once an epoch. Median
    over the epochs after the first; the last epoch's mean training loss beside it."""
    task = get_task(task_name)
    torch.manual_seed(config.get("seed", 0))
    splits = task.datasets(config)
    model = task.model(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"], weight_decay=config.get("weight_decay", 0.0))
    loader = DataLoader(splits.train, batch_size=config["batch_size"], shuffle=True)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * len(loader))
    bf16 = config.get("precision") == "bf16"
    rates, loss_sum = [], None
    for _ in range(epochs):
        model.train()
        seen, loss_sum = 0, torch.zeros((), device=device)
        started = time.perf_counter()
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=bf16):
                out = model(x)
            loss = task.loss(out.float(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.get("grad_clip", 1.0))
            optimizer.step()
            schedule.step()
            loss_sum += loss.detach() * len(x)
            seen += len(x)
        train_loss = loss_sum.item() / seen  # the epoch's one read of the device
        rates.append(seen / (time.perf_counter() - started))
    return {"samples_per_s": statistics.median(rates[1:] or rates), "train_loss": train_loss}


def trainer_vs_plain(device="cuda", quick=False):
    """G1: the trainer's samples/s over the plain loop's, the same config, alternated and run twice each."""
    config = {**LM, **({"model_dim": 64, "num_heads": 4, "num_layers": 2, "seq_len": 64, "steps_per_epoch": 20,
                        "batch_size": 32} if quick else {})}
    epochs, rows = (2 if quick else 4), {}
    for precision in ("fp32", "bf16"):
        c = {**config, "precision": precision}
        mine, plain = [], []
        for _ in range(1 if quick else 2):
            mine.append(run_trial("char_lm", c, epochs, device))
            plain.append(plain_loop("char_lm", c, epochs, device))
        rows[precision] = {"trainer_samples_per_s": statistics.median(r["samples_per_s"] for r in mine),
                           "plain_samples_per_s": statistics.median(r["samples_per_s"] for r in plain),
                           "trainer_train_loss": mine[-1]["train_loss"], "plain_train_loss": plain[-1]["train_loss"]}
        rows[precision]["ratio"] = rows[precision]["trainer_samples_per_s"] / rows[precision]["plain_samples_per_s"]
        print("G1", precision, rows[precision], flush=True)
    return rows


def bench(device, quick):
    from suite import row

    g1 = trainer_vs_plain(device, quick)
    where = torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({os.cpu_count()} cores)"
    out = {"G1": row("G1", min(r["ratio"] for r in g1.values()), device=where, note="the smaller of fp32 and bf16", **g1)}
    if device == "cuda":
        one, four = sharing(1), sharing(4)
        out["G2"] = row("G2", four["samples_per_s_total"] / one["samples_per_s_total"], device=where, one=one, four=four)
    for r in out.values():  # as suite.py's rows name theirs
        r.update(measured=time.strftime("%Y-%m-%d"), command="python bench/gpu_check.py " + " ".join(sys.argv[1:]),
                 machine=f"{platform.node()}: {where}, torch {torch.__version__}")
    return out


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
    parser.add_argument("--bench", action="store_true", help="G1 and G2 as rows of bench/suite.py's JSON")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.bench:
        rows = bench(args.device, args.quick)
        print(json.dumps(rows, indent=1))
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)
        return
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
