"""The B6 baseline: raysweep's digits model and data trained by a plain PyTorch DDP loop under torchrun
(gloo), no raysweep loop and no Ray: per-epoch wall time (training steps plus the validation pass).

  torchrun --nproc-per-node 2 bench/plain_ddp.py CONFIG_JSON EPOCHS OUT_JSON"""
import json
import sys
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from raysweep.train.tasks import load_task


def main():
    config, epochs, out = json.loads(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    task = load_task("digits_mlp")
    splits = task.datasets(config)
    model = DistributedDataParallel(task.model(config))
    sampler = DistributedSampler(splits.train, shuffle=True, seed=0)
    # batch_size is the global batch, split over the workers, as raysweep's trainer takes it
    loader = DataLoader(splits.train, batch_size=config["batch_size"] // dist.get_world_size(), sampler=sampler)
    val = DataLoader(splits.val, batch_size=256, sampler=DistributedSampler(splits.val, shuffle=False))
    optimizer = torch.optim.AdamW(model.parameters(), lr=config["lr"])
    seconds = []
    for epoch in range(epochs):
        started = time.perf_counter()
        sampler.set_epoch(epoch)
        model.train()
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        model.eval()
        total = torch.zeros(2)
        with torch.no_grad():
            for x, y in val:
                total += torch.tensor([torch.nn.functional.cross_entropy(model(x), y, reduction="sum").item(), len(y)])
        dist.all_reduce(total)
        seconds.append(time.perf_counter() - started)
    if rank == 0:
        with open(out, "w") as f:
            json.dump({"epoch_seconds": seconds, "val_loss": (total[0] / total[1]).item()}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
