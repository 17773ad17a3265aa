"""A task that costs almost nothing to train, so a sweep of it measures overhead alone."""
import torch
from torch import nn
from torch.utils.data import TensorDataset

from raysweep.train import Splits, Task


class Tiny(Task):
    name = "tiny"
    params = {}

    def datasets(self, config):
        g = torch.Generator().manual_seed(0)
        x = torch.randn(32, 4, generator=g)
        y = (x.sum(1) > 0).long()
        return Splits(TensorDataset(x, y), TensorDataset(x, y), TensorDataset(x, y))

    def model(self, config):
        return nn.Linear(4, 2)
