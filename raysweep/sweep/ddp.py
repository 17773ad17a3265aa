"""A trial as a DistributedDataParallel job on Ray Train (Train V2): one TorchTrainer per trial.

Rank 0's metrics and checkpoints come back to the caller through a Train callback (which runs in
the Train controller) and a small queue actor, so the caller sees each epoch as it happens.
"""
from __future__ import annotations

import threading
from collections.abc import Callable

from ..train import Run, train
from .resources import Plan, scaling_config

_DONE_MARK = "__raysweep_ddp_done__"


def _worker_loop(cfg: dict) -> None:
    """Runs on every Ray Train worker; Ray has already set up the process group (gloo or NCCL)."""
    import ray
    import ray.train
    import ray.train.torch
    import torch.distributed as dist

    nodes = [None] * dist.get_world_size()  # where the ranks run, gathered once: reported with every epoch
    dist.all_gather_object(nodes, ray.get_runtime_context().get_node_id())

    def report(metrics, directory):
        ckpt = ray.train.Checkpoint.from_directory(directory) if directory else None
        ray.train.report({**metrics, "ddp_nodes": ",".join(nodes)}, checkpoint=ckpt)

    resume, device, origin = cfg.get("resume"), ray.train.torch.get_device(), cfg.get("origin")
    if resume is not None:
        with resume.as_directory() as directory:
            train(cfg["config"], Run(**cfg["run"]), report, resume_from=directory, device=device, origin=origin)
    else:
        train(cfg["config"], Run(**cfg["run"]), report, device=device, origin=origin)


def _forwarding_callback(queue):
    from ray.train.v2.api.callback import UserCallback

    class Forward(UserCallback):
        def after_report(self, run_context, metrics, checkpoint):
            queue.put((metrics[0], checkpoint.path if checkpoint else None))

    return Forward()



def run_ddp(config: dict, run: Run, p: Plan, on_report: Callable[[dict, str | None], None],
            storage_path: str, name: str, resume=None, origin: str | None = None, worker: Callable | None = None):
    """Train one config on p.workers DDP workers (raysweep's loop, or `worker` given the same
    train_loop_config); call on_report(metrics, checkpoint_path) per epoch in the calling thread.
    Returns Ray Train's Result."""
    from dataclasses import asdict

    from ray.train import RunConfig
    from ray.train.torch import TorchTrainer
    from ray.util.queue import Queue

    queue = Queue(maxsize=1, actor_options={"num_cpus": 0})
    trainer = TorchTrainer(
        worker or _worker_loop,
        train_loop_config={"config": config, "run": asdict(run), "resume": resume, "origin": origin},
        scaling_config=scaling_config(p),
        run_config=RunConfig(name=name, storage_path=storage_path, callbacks=[_forwarding_callback(queue)]),
    )
    outcome: dict = {}

    def fit():
        try:
            outcome["result"] = trainer.fit()
        except BaseException as e:  # re-raised in the caller's thread
            outcome["error"] = e
        finally:
            queue.put(_DONE_MARK)

    thread = threading.Thread(target=fit, daemon=True)
    thread.start()
    while True:
        item = queue.get()
        if item == _DONE_MARK:
            break
        on_report(*item)
    thread.join()
    queue.shutdown()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]

