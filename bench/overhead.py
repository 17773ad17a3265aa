"""Per-trial overhead, as ratios measured in one run (this machine is noisy: compare within a run).

  .venv/bin/python bench/overhead.py [--trials 40] [--epochs 10]

A: bare Ray Tune: a function trainable that only reports `epochs` times;
B: raysweep's trial (spec -> config, derived values, the training loop) on a task that costs nearly
   nothing to train, MLflow off;
C: B with MLflow tracking on (sqlite; batched background writes).
Same Ray instance, same resources (0.25 CPU a trial, actors reused) for all three."""
from __future__ import annotations

import argparse
import os
import secrets
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    tmp = tempfile.mkdtemp(prefix="raysweep-bench-")
    token = os.path.join(tmp, "token")
    with open(token, "w") as f:
        f.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = token

    import ray
    from ray import tune

    from raysweep.session import Session, connect_ray
    from raysweep.spec import Spec
    from raysweep.sweep import run_stage
    from raysweep.tracking import Tracker

    connect_ray(None)
    epochs, trials = args.epochs, args.trials

    def bare(config):
        for i in range(epochs):
            tune.report({"val_loss": 1.0 / (i + 1 + config["x"])})

    def time_bare():
        start = time.perf_counter()
        tune.Tuner(tune.with_resources(bare, {"cpu": 0.25}), param_space={"x": tune.uniform(0, 1)},
                   tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=True, metric="val_loss", mode="min"),
                   run_config=tune.RunConfig(storage_path=tmp, name="bare", verbose=0)).fit()
        return time.perf_counter() - start

    spec = Spec.model_validate({
        "name": "bench", "task": "tiny_task:Tiny", "metric": {"name": "val_loss", "mode": "min"},
        "search": {"method": "random", "num_samples": trials}, "stopping": {"max_epochs": epochs},
        "resources": {"cpus_per_worker": 0.25}, "fixed": {"batch_size": 32},
        "parameters": {"lr": {"distribution": "loguniform", "min": 1e-3, "max": 1e-1}}})
    spec.located(os.path.join(HERE, "bench.yaml"), {})  # the task module sits beside it

    def time_raysweep(name, tracked):
        start = time.perf_counter()
        if tracked:
            session = Session(tmp, Tracker(f"sqlite:///{tmp}/mlflow.db", "bench"))
            session.stage(spec, name, quiet=True)
        else:
            run_stage(spec, name, os.path.join(tmp, "ray"), quiet=True)
        return time.perf_counter() - start

    time_bare()  # warm-up: worker processes and imports, for both paths
    time_raysweep("warmup", False)
    a = time_bare()
    b = time_raysweep("plain", False)
    c = time_raysweep("tracked", True)
    print(f"{trials} trials x {epochs} reports, 0.25 CPU each, on {os.cpu_count()} cores")
    print(f"A bare Tune:              {a:7.1f} s  ({1000 * a / trials:6.0f} ms/trial)")
    print(f"B raysweep, MLflow off:   {b:7.1f} s  ({1000 * b / trials:6.0f} ms/trial)  B/A = {b / a:.2f}")
    print(f"C raysweep, MLflow on:    {c:7.1f} s  ({1000 * c / trials:6.0f} ms/trial)  C/A = {c / a:.2f}  C/B = {c / b:.2f}")
    ray.shutdown()


if __name__ == "__main__":
    main()
