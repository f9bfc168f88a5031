"""DAT (CVPR 2022) and DAT++ as one module tree with the official attribute names."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dat_deploy.model.attention import (
    DeformableAttention,
    LocalAttention,
    NeighborhoodAttention,
    ShiftWindowAttention,
)
from dat_deploy.model.layers import ConvFFN, LayerNormProxy, TransformerMLP
from dat_deploy.model.variants import Architecture

MLP_EXPANSION = 4


class TransformerStage(nn.Module):
    """A stage of pre-norm blocks; DAT++ adds a residual depthwise conv (LPU) before each block."""

    def __init__(self, arch: Architecture, index: int, fmap_size: int):
        super().__init__()
        dim = arch.dims[index]
        spec = arch.stage_specs[index]
        heads = arch.heads[index]
        is_pp = arch.family == "dat_pp"
        self.depths = arch.depths[index]
        self.use_lpu = is_pp
        self.proj = nn.Identity()  # dims double per stage in every released config: no input projection
        self.layer_norms = nn.ModuleList(LayerNormProxy(dim) for _ in range(2 * self.depths))
        mlp = ConvFFN if is_pp else TransformerMLP
        self.mlps = nn.ModuleList(mlp(dim, MLP_EXPANSION) for _ in range(self.depths))
        if is_pp:
            self.local_perception_units = nn.ModuleList(
                nn.Conv2d(dim, dim, 3, 1, 1, groups=dim) for _ in range(self.depths)
            )
        self.attns = nn.ModuleList()
        for letter in spec:
            if letter == "L":
                self.attns.append(LocalAttention(dim, heads, arch.window_size))
            elif letter == "S":
                self.attns.append(ShiftWindowAttention(dim, heads, arch.window_size, fmap_size))
            elif letter == "N":
                self.attns.append(NeighborhoodAttention(dim, arch.nat_ksize, heads))
            elif letter == "D":
                self.attns.append(DeformableAttention(
                    arch.family, fmap_size, dim, heads, arch.groups[index], arch.strides[index],
                    arch.offset_ksizes[index], arch.offset_range_factor[index],
                ))
            else:
                raise ValueError(f"stage spec letter {letter!r} is not used by any released DAT model")

    def forward(self, x: torch.Tensor, positions: list, references: list) -> torch.Tensor:
        x = self.proj(x)
        for d in range(self.depths):
            if self.use_lpu:
                # contiguous() as the official code: the channels-last view from LayerNorm takes another conv path
                x = x + self.local_perception_units[d](x.contiguous())
            y, pos, ref = self.attns[d](self.layer_norms[2 * d](x))
            x = x + y
            x = x + self.mlps[d](self.layer_norms[2 * d + 1](x))
            if pos is not None:
                positions.append(pos)
                references.append(ref)
        return x


@contextlib.contextmanager
def capture_stage_outputs(model: "DAT") -> Iterator[list[torch.Tensor]]:
    """Collect the four stage maps of the forward passes run inside the block (logits mode too)."""
    maps: list[torch.Tensor] = []
    hooks = [stage.register_forward_hook(lambda _m, _i, out: maps.append(out)) for stage in model.stages]
    try:
        yield maps
    finally:
        for hook in hooks:
            hook.remove()


class DAT(nn.Module):
    """DAT / DAT++ classifier; `features_only=True` gives the four stage maps (strides 4-32) instead."""

    def __init__(self, arch: Architecture, features_only: bool = False):
        super().__init__()
        self.arch = arch
        self.features_only = features_only
        stem, dims = arch.dim_stem, arch.dims
        if arch.family == "dat_pp":
            self.patch_proj = nn.Sequential(
                nn.Conv2d(3, stem // 2, 3, 2, 1), LayerNormProxy(stem // 2), nn.GELU(),
                nn.Conv2d(stem // 2, stem, 3, 2, 1), LayerNormProxy(stem),
            )
        else:
            self.patch_proj = nn.Sequential(nn.Conv2d(3, stem, 4, 4, 0), LayerNormProxy(stem))
        fmap = arch.img_size // 4
        self.stages = nn.ModuleList()
        for i in range(4):
            self.stages.append(TransformerStage(arch, i, fmap))
            fmap //= 2
        down = (3, 2, 1) if arch.family == "dat_pp" else (2, 2, 0)  # kernel, stride, padding
        self.down_projs = nn.ModuleList(
            nn.Sequential(nn.Conv2d(dims[i], dims[i + 1], *down, bias=False), LayerNormProxy(dims[i + 1]))
            for i in range(3)
        )
        if not features_only:
            self.cls_norm = LayerNormProxy(dims[-1])
            self.cls_head = nn.Linear(dims[-1], arch.num_classes)

    def forward(self, x: torch.Tensor, return_positions: bool = False):
        """Logits (or the four stage maps); with `return_positions`, also the sampling positions and
        reference points of every deformable block, each (B, groups, Hk, Wk, 2) in (y, x) order."""
        positions: list[torch.Tensor] = []
        references: list[torch.Tensor] = []
        x = self.patch_proj(x)
        features = []
        for i in range(4):
            x = self.stages[i](x, positions, references)
            features.append(x)
            if i < 3:
                x = self.down_projs[i](x)
        if self.features_only:
            out = features
        else:
            x = F.adaptive_avg_pool2d(self.cls_norm(x), 1).flatten(1)
            out = self.cls_head(x)
        return (out, positions, references) if return_positions else out
