"""Short-horizon bias: which configs a short coarse trial ranks best, when it is a whole short run
(its own compressed lr schedule) or the first epochs of a full-length run (the schedule of the run it
stands for), against the full runs' test loss. In-process with raysweep's trainer, no Ray.

    python bench/short_horizon.py [--configs 30] [--out bench/results/short_horizon.json]

Random configs from char_lm_small's space, lr drawn in the LR range test's range; each trained
for max_epochs (4), and again as a whole run of the coarse stage's epochs (2). Reported: Spearman
correlation of each short view with the full runs' test loss, and the mean log10 lr, warmup and depth
of the top 5 by each."""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from multiprocessing import Pool

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SPEC = os.path.join(ROOT, "search_spaces", "char_lm_small.yaml")
LR = (0.00242, 0.0242)  # the LR range test's range for char_lm_small (README, make sweep)


def train_one(job):
    import torch

    from raysweep.spec import Space, load_spec
    from raysweep.train import Run, train

    torch.set_num_threads(1)
    config, epochs = job
    curve = []
    train(Space(load_spec(SPEC)).with_derived(config), Run(task="char_lm", epochs=epochs, evaluate_test=True),
          lambda m, c: curve.append(m))
    return [{k: m[k] for k in ("val_loss", "test_loss") if k in m} for m in curve]


def main() -> None:
    from scipy.stats import spearmanr

    from raysweep.spec import Space, load_spec

    ap = argparse.ArgumentParser()
    ap.add_argument("--configs", type=int, default=30)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "short_horizon.json"))
    args = ap.parse_args()
    spec = load_spec(SPEC)
    full_epochs, short = spec.stopping.max_epochs, spec.stages.coarse.epochs
    space, rng = Space(spec), np.random.default_rng(12345)
    configs = []
    for _ in range(args.configs):
        c = space.sample_feasible(rng)
        configs.append({**c, "lr": float(math.exp(rng.uniform(*np.log(LR))))})
    with Pool(2) as pool:
        curves = pool.map(train_one, [(c, e) for c in configs for e in (full_epochs, short)])
    full, whole = curves[0::2], curves[1::2]
    test = np.array([f[-1]["test_loss"] for f in full])
    views = {f"full run ({full_epochs} epochs)": [min(m["val_loss"] for m in f) for f in full],
             f"whole {short}-epoch run": [min(m["val_loss"] for m in w) for w in whole],
             f"first {short} epochs of the full run": [min(m["val_loss"] for m in f[:short]) for f in full]}
    out = {"machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "command": " ".join(["python", *sys.argv]),
           "configs": len(configs), "views": {}}
    def top5(values) -> dict:
        top = np.argsort(values)[:5]
        return {"top5_log10_lr": round(float(np.mean([math.log10(configs[i]["lr"]) for i in top])), 3),
                "top5_warmup_steps": float(np.mean([configs[i]["warmup_steps"] for i in top])),
                "top5_num_layers": float(np.mean([configs[i]["num_layers"] for i in top])),
                "top5_full_test_loss": round(float(test[top].mean()), 4)}

    for name, values in views.items():
        out["views"][name] = {"spearman_vs_full_test": round(float(spearmanr(values, test)[0]), 3), **top5(values)}
    out["best5_by_full_test"] = top5(test)
    with open(args.out, "w") as f:
        json.dump(out, f, indent=1)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
