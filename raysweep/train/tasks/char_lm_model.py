"""char_lm's data and model (torch): imported by the task's methods, so naming the task imports no torch."""
from __future__ import annotations

import functools
import importlib
import inspect

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

CORPUS_MODULES = ("argparse", "textwrap", "string", "json.decoder", "json.encoder", "csv", "difflib",
                  "fractions", "heapq", "bisect", "shlex", "calendar", "statistics", "pprint")


@functools.lru_cache(maxsize=1)
def corpus() -> torch.Tensor:
    text = "\n".join(inspect.getsource(importlib.import_module(m)) for m in CORPUS_MODULES)
    return torch.frombuffer(bytearray(text.encode("utf-8")), dtype=torch.uint8).long()


class Windows(Dataset):
    """`count` fixed windows of seq_len+1 bytes at seeded random offsets: (input, next-byte target)."""

    def __init__(self, data: torch.Tensor, seq_len: int, count: int, seed: int):
        self.data, self.seq_len = data, seq_len
        self.starts = np.random.default_rng(seed).integers(0, len(data) - seq_len - 1, size=count)

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        chunk = self.data[self.starts[i]: self.starts[i] + self.seq_len + 1]
        return chunk[:-1], chunk[1:]


class CharTransformer(nn.Module):
    def __init__(self, dim, heads, layers, dropout, seq_len, vocab=256):
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(seq_len, dim))
        block = nn.TransformerEncoderLayer(dim, heads, 4 * dim, dropout, activation="gelu", batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(seq_len), persistent=False)

    def forward(self, x):
        t = x.shape[1]
        h = self.embed(x) + self.pos[:t]
        h = self.blocks(h, mask=self.mask[:t, :t], is_causal=True)
        return self.head(self.norm(h))
