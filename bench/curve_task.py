"""Synthetic learning curves for bench/suite.py's ASHA benchmark: a user's function whose validation
loss falls toward a config-dependent floor, at a config-dependent pace (curves cross, as real ones do)."""
import math

import ray.train


def curve(config):
    floor = (math.log10(config["lr"]) + 2) ** 2 + 0.3 * config["width"]
    amplitude = 1.0 + 2.0 * config["width"]  # wide nets start worse and catch up
    for epoch in range(1, 10_000):  # raysweep ends it after the stage's epochs
        ray.train.report({"val_loss": floor + amplitude / epoch})
