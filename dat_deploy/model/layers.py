"""Building blocks shared by both families: channels-first LayerNorm, the two MLP kinds."""

from __future__ import annotations

import torch
from torch import nn


class LayerNormProxy(nn.Module):
    """LayerNorm over channels of a (B, C, H, W) map; the `.norm` attribute matches the official keys."""

    def __init__(self, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TransformerMLP(nn.Module):
    """DAT's token MLP (Linear-GELU-Linear), keys `chunk.linear1/linear2`."""

    def __init__(self, dim: int, expansion: int):
        super().__init__()
        self.chunk = nn.Sequential()
        self.chunk.add_module("linear1", nn.Linear(dim, dim * expansion))
        self.chunk.add_module("act", nn.GELU())
        self.chunk.add_module("linear2", nn.Linear(dim * expansion, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.chunk(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class ConvFFN(nn.Module):
    """DAT++'s MLP: 1x1 conv, a residual depthwise 3x3 conv, GELU after the add, 1x1 conv."""

    def __init__(self, dim: int, expansion: int):
        super().__init__()
        hidden = dim * expansion
        self.linear1 = nn.Sequential(nn.Conv2d(dim, hidden, 1))
        self.dwc = nn.Conv2d(hidden, hidden, 3, 1, 1, groups=hidden)
        self.act = nn.GELU()
        self.linear2 = nn.Sequential(nn.Conv2d(hidden, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = self.linear1(x)
        hidden = self.act(hidden + self.dwc(hidden))
        return self.linear2(hidden)
