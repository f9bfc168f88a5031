"""The attention core of a deformable block as one replaceable op (contract: plugins/README.md).

`deformable_attention(q, k, v, table, pos, heads, groups, convention, scale)`: channels-last queries
(B, H, W, C) attend to the Nk = Hk*Wk sampled keys and values (B, Nk, C); the logits get the
relative-position bias, the table sampled at the query-to-key displacements (sampling.rel_pos_bias).
Returns (B, H, W, C) before the output projection. The reference below is plain PyTorch; the plugin
export flavour swaps in the `dat::deformable_attention` custom op (DATDeformAttention in ONNX).
"""

from __future__ import annotations

import torch

from dat_deploy.model import sampling


def deformable_attention_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor, pos: torch.Tensor,
    heads: int, groups: int, convention: str, scale: float,
) -> torch.Tensor:
    batch, height, width, channels = q.shape
    num_keys, head_dim = k.shape[1], channels // heads
    q = q.reshape(batch, height * width, heads, head_dim).transpose(1, 2)  # (B, heads, HW, d)
    k = k.reshape(batch, num_keys, heads, head_dim).permute(0, 2, 3, 1)  # (B, heads, d, Nk)
    v = v.reshape(batch, num_keys, heads, head_dim).transpose(1, 2)  # (B, heads, Nk, d)
    logits = (q @ k) * scale
    # Through the sampling contract, so that an export with only the sampling ops swapped (the official
    # layout's plugin flavour, bench_ops's baseline) gets a DATRelPosBias node here. It reads only the
    # shape of its x: B and the query grid H x W.
    bias = sampling.rel_pos_bias(table, pos, q.new_empty(1).expand(batch, channels, height, width), groups, convention)
    logits = logits + bias.reshape(batch, heads, height * width, num_keys)
    return (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(batch, height, width, channels)
