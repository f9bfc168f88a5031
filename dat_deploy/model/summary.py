"""What `dat-deploy info` reports: parameters, MACs, stage shapes and the deformable blocks."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode

from dat_deploy.model import build, get_variant
from dat_deploy.model.attention import DeformableAttention
from dat_deploy.model.dat import capture_stage_outputs


@dataclass
class DeformableBlockInfo:
    stage: int
    block: int  # 1-based within the stage, as `visualize --blocks S.B` counts
    groups: int
    heads: int
    key_grid: tuple[int, int]
    query_grid: tuple[int, int]


@dataclass
class ModelSummary:
    variant: str
    params: int
    gmacs: float
    input_size: int
    stage_shapes: list[tuple[int, int, int]]  # (C, H, W) after each stage
    deformable_blocks: list[DeformableBlockInfo]


def summarize(variant: str, input_size: int | None = None) -> ModelSummary:
    """MACs are torch's flop count / 2 on one image (grid_sample, softmax and norms are not counted)."""
    spec = get_variant(variant)
    size = input_size or spec.input_size
    model = build(variant).eval()
    x = torch.zeros(1, 3, size, size)
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter, capture_stage_outputs(model) as maps:
        _, positions, _ = model(x, return_positions=True)
    blocks = []
    index = 0
    for s, stage in enumerate(model.stages):
        for d, attn in enumerate(stage.attns):
            if isinstance(attn, DeformableAttention):
                pos = positions[index]
                blocks.append(DeformableBlockInfo(s, d + 1, attn.groups, attn.heads, (pos.shape[2], pos.shape[3]),
                                                  (maps[s].shape[2], maps[s].shape[3])))
                index += 1
    return ModelSummary(
        variant=variant,
        params=sum(p.numel() for p in model.parameters()),
        gmacs=counter.get_total_flops() / 2e9,
        input_size=size,
        stage_shapes=[tuple(m.shape[1:]) for m in maps],
        deformable_blocks=blocks,
    )
