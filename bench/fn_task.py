"""A Ray Train function as a user brings it to raysweep: it reports `epochs` times and trains nothing
(function_overhead.py runs the same body as a bare Tune function)."""
import ray.train


def train_fn(config):
    for i in range(config["epochs"]):
        ray.train.report({"val_loss": 1.0 / (i + 1 + config["x"])})

