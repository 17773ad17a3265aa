"""The training function every W&B file of this corpus names: it reports the config it received."""
import json

import ray.train


def train(config):
    for epoch in range(2):
        ray.train.report({"loss": 1.0 / (epoch + 1), "accuracy": 0.5, "config_json": json.dumps(config, sort_keys=True)})
