"""Per-trial overhead of a user's Ray Train function as raysweep trials, against bare Ray Tune running
the same body, as ratios measured in one run (this machine is noisy: compare within a run).

  .venv/bin/python bench/function_overhead.py [--trials 40] [--epochs 10 100] [--torchtrainer 4]

A: bare Tune: `bare_fn` (tune.report) in a function trainable;
B: raysweep, one worker: `train_fn` (ray.train.report) run in the trial, MLflow off;
T: the other way to run one worker: a 1-worker TorchTrainer inside each trial (fewer trials: it is
   slow), to show why raysweep runs one worker in-process.
Same Ray instance, 0.25 CPU a trial, actors reused. Writes bench/results/function_overhead.json."""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE), HERE]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--torchtrainer", type=int, default=4, help="trials of the 1-worker TorchTrainer option")
    args = parser.parse_args()
    from common import scratch

    tmp = scratch()

    import ray
    from ray import tune

    from raysweep.session import connect_ray
    from raysweep.spec import Spec
    from raysweep.sweep import run_stage
    from raysweep.sweep.ddp import run_ddp
    from raysweep.sweep.function import worker_loop
    from raysweep.sweep.resources import plan
    from raysweep.train import Run

    connect_ray(None)

    def bare_fn(config):  # fn_task.train_fn's body, through tune.report (defined here: shipped by value)
        for i in range(config["epochs"]):
            tune.report({"val_loss": 1.0 / (i + 1 + config["x"])})

    def spec(trials, epochs):
        s = Spec.model_validate({
            "name": "fnbench", "task": "fn_task:train_fn", "metric": {"name": "val_loss", "mode": "min"},
            "search": {"method": "random", "num_samples": trials}, "stopping": {"max_epochs": epochs},
            "resources": {"cpus_per_worker": 0.25}, "fixed": {"epochs": epochs},
            "parameters": {"x": {"distribution": "uniform", "min": 0, "max": 1}}})
        return s.located(os.path.join(HERE, "bench.yaml"), {})  # fn_task.py sits beside it

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def bare(trials, epochs, name):
        grid = tune.Tuner(tune.with_resources(bare_fn, {"cpu": 0.25}),
                   param_space={"x": tune.uniform(0, 1), "epochs": epochs},
                   tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=True, metric="val_loss", mode="min"),
                   run_config=tune.RunConfig(storage_path=tmp, name=name, verbose=0)).fit()
        assert all(r.error is None and r.metrics["training_iteration"] == epochs for r in grid), name  # timed whole

    def raysweep(trials, epochs, name):
        result = run_stage(spec(trials, epochs), name, os.path.join(tmp, "ray"), quiet=True)
        assert len(result.trials) == trials and {t.status for t in result.trials} == {"completed"}, name

    def torchtrainer(trials, epochs, name):
        s = spec(trials, epochs)
        p = dataclasses.replace(plan(s.resources), workers=1, worker={"CPU": 0.25})
        run = dataclasses.asdict(Run.from_spec(s))

        def trial(config):
            run_ddp(config, Run(**run), p, lambda m, d: tune.report(m), tmp, tune.get_context().get_trial_id(),
                    worker=worker_loop)

        tune.Tuner(tune.with_resources(trial, {"cpu": 0.25}), param_space={"x": tune.uniform(0, 1), "epochs": epochs},
                   tune_config=tune.TuneConfig(num_samples=trials, reuse_actors=True, metric="val_loss", mode="min"),
                   run_config=tune.RunConfig(storage_path=tmp, name=name, verbose=0)).fit()

    bare(4, 2, "warm-bare")  # worker processes and imports, for every path
    raysweep(4, 2, "warm-raysweep")
    rows, out = [], {"machine": f"{platform.node()}: {os.cpu_count()} cores, {platform.processor() or platform.machine()}",
                     "command": "python bench/function_overhead.py " + " ".join(sys.argv[1:])}
    for epochs in args.epochs:
        a = timed(lambda e=epochs: bare(args.trials, e, f"bare{e}"))
        b = timed(lambda e=epochs: raysweep(args.trials, e, f"raysweep{e}"))
        rows.append((epochs, a, b))
        out[f"ratio_{epochs}_reports"] = round(b / a, 3)
        out[f"bare_ms_per_trial_{epochs}"] = round(1000 * a / args.trials)
        out[f"raysweep_ms_per_trial_{epochs}"] = round(1000 * b / args.trials)
    if args.torchtrainer:
        e = args.epochs[0]
        t = timed(lambda: torchtrainer(args.torchtrainer, e, "torchtrainer"))
        out[f"torchtrainer_ms_per_trial_{e}"] = round(1000 * t / args.torchtrainer)
    print(f"{args.trials} trials, 0.25 CPU each, on {os.cpu_count()} cores; the same body reporting N times")
    for epochs, a, b in rows:
        verdict = "PASS" if b / a <= 1.10 else "MISS"
        print(f"N={epochs:4d}  A bare Tune {1000 * a / args.trials:6.0f} ms/trial   B raysweep (1 worker, in the trial) "
              f"{1000 * b / args.trials:6.0f} ms/trial   B/A = {b / a:.2f}  (goal <= 1.10: {verdict})")
    if args.torchtrainer:
        print(f"T a 1-worker TorchTrainer per trial: {out[f'torchtrainer_ms_per_trial_{e}']} ms/trial "
              f"({args.torchtrainer} trials, N={e})")
    os.makedirs(os.path.join(HERE, "results"), exist_ok=True)
    with open(os.path.join(HERE, "results", "function_overhead.json"), "w") as f:
        json.dump(out, f, indent=1)
    ray.shutdown()


if __name__ == "__main__":
    main()
