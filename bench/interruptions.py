"""A pipeline interrupted at random moments, SIGINT (Ctrl-C to its process group) and SIGKILL in turn,
and started again each time, against the same pipeline run once without interruption: the wall-time
ratio (all drivers' time together over the uninterrupted run's), and what the interruptions cost in
trials (lost, trained again), progress (gone back) and MLflow (trials or epochs twice). In one run.

    .venv/bin/python bench/interruptions.py [--kills 5] [--seed 0] [--spec search_spaces/digits_mlp.yaml] [--on-ray]
        [--window 0.15 0.45]

Each moment is drawn from 15-45 % of the uninterrupted run's time after that driver started, so the
interruptions fall all along the pipeline. A restart costs a new local Ray instance (the driver's own,
as `make sweep` runs) plus the epochs since each running trial's last checkpoint. With `--on-ray` both
runs are clients of one Ray instance started for them (as drivers on a cluster are): a restart costs
the driver's own start and the lost epochs, not Ray's."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from tests.chaos import audit, interrupted_run  # noqa: E402

STAGES = ["lr_range_test", "coarse", "fine", "seeds", "final"]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spec", default="search_spaces/digits_mlp.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--on-ray", action="store_true", help="drivers as clients of a running Ray instance")
    parser.add_argument("--window", type=float, nargs=2, default=(0.15, 0.45), metavar=("LO", "HI"),
                        help="each moment, as fractions of the uninterrupted time after that driver's start "
                             "(a longer pipeline needs a narrower one to be interrupted --kills times)")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="raysweep-bench-"))
    env = ray_instance(tmp) if args.on_ray else None
    sets = [x for kv in args.overrides for x in ("--set", kv)]
    name = Path(args.spec).stem

    plain = tmp / "plain"
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "raysweep", "run", args.spec, *sets, "--runs-dir", str(plain)],
                          cwd=HERE.parent, capture_output=True, text=True, env=env)
    baseline = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # stages with a fixed number of trials (fine's stop rule ends it after a number that depends on results)
    expected = {stage: len(json.loads((plain / "ray" / f"{name}-{stage}" / "results.json").read_text())["trials"])
                for stage in ("coarse", "seeds", "final")}

    broken = tmp / "interrupted"
    chaos = interrupted_run(["run", args.spec, *sets, "--runs-dir", broken], broken, name, kills=args.kills,
                            seed=args.seed, window=(args.window[0] * baseline, args.window[1] * baseline), env=env)
    assert chaos.returncode == 0, chaos.output[-3000:]
    from raysweep.spec import load_spec

    figures = audit(chaos, broken, name, STAGES, expected, metric=load_spec(args.spec, args.overrides).metric.name)
    figures["work"] = {"uninterrupted": work(plain, name), "interrupted": work(broken, name)}
    figures.update(uninterrupted_s=round(baseline, 1), ratio=round(sum(chaos.seconds) / baseline, 2),
                   spec=args.spec, overrides=args.overrides, seed=args.seed, window=args.window, cpus=os.cpu_count(),
                   drivers_on=("a running Ray instance" if args.on_ray else "each its own local Ray instance"))
    print(json.dumps(figures, indent=1))
    out = HERE / "results" / (f"interruptions{'_on_ray' if args.on_ray else ''}"
                              f"{'' if name == 'digits_mlp' else '_' + name}.json")
    out.write_text(json.dumps(figures, indent=1) + "\n")
    print(f"written: {out}")


def work(runs: Path, name: str) -> dict:
    """Per search stage: its trials, the epochs they ended with, and the epochs trained (every
    reported epoch in Tune's logs, an attempt a kill cut short included): where a restart's time went."""
    from tests.chaos import trial_logs

    out = {}
    for stage in STAGES[1:]:
        logs = trial_logs(runs / "ray" / f"{name}-{stage}")
        results = runs / "ray" / f"{name}-{stage}" / "results.json"
        if results.exists():
            trials = json.loads(results.read_text())["trials"]
            out[stage] = {"trials": len(trials), "epochs": sum(t["epochs"] - t.get("started_at", 0) for t in trials),
                          "epochs_trained": sum(len(log.splitlines()) for log in logs.values())}
    return out


def ray_instance(tmp: Path) -> dict:
    """A one-node Ray cluster (raysweep's local cluster: loopback, token auth) with 2 CPUs for this
    process's lifetime; the environment its clients need."""
    import atexit

    from raysweep.sweep.local_cluster import up

    cluster = up(str(tmp / "cluster"), workers=0, cpus_per_node=2)
    atexit.register(cluster.down)  # its own processes only (never `ray stop`)
    return {**os.environ, **cluster.env()}


if __name__ == "__main__":
    main()
