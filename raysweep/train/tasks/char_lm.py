"""A character-level transformer language model on text every machine has offline: the source of
a fixed list of Python standard-library modules, read as bytes (vocabulary 256)."""
from __future__ import annotations

from .base import Splits, Task


class CharLM(Task):
    name = "char_lm"
    quality = "perplexity"
    params = {"model_dim": 64, "num_heads": 4, "num_layers": 2, "dropout": 0.1, "seq_len": 64,
              "steps_per_epoch": 50, "batch_size": 32}

    def datasets(self, config):
        from .char_lm_model import Windows, corpus

        s = self.settings(config)
        data = corpus()
        a, b = int(len(data) * 0.8), int(len(data) * 0.9)
        n_train = int(s["steps_per_epoch"]) * int(s["batch_size"])
        seq = int(s["seq_len"])
        return Splits(Windows(data[:a], seq, n_train, seed=1), Windows(data[a:b], seq, 256, seed=2),
                      Windows(data[b:], seq, 256, seed=3))

    def model(self, config):
        from .char_lm_model import CharTransformer

        s = self.settings(config)
        return CharTransformer(int(s["model_dim"]), int(s["num_heads"]), int(s["num_layers"]), float(s["dropout"]),
                               int(s["seq_len"]))

    def correct(self, output, target):
        return (output.argmax(-1) == target).sum()
