"""A channels-last (B, H, W, C) forward of DAT / DAT++ for export, on the same modules and weights.

The official code keeps maps channels-first and permutes around every LayerNorm, MLP and window
partition; in an exported graph those permutes become Transpose nodes that cost onnxruntime about
a tenth of DAT-T's time. This forward keeps tokens channels-last between blocks, runs every 1x1
conv as a 2-D Linear (one Gemm with its bias in ONNX) and leaves channels-first only where a
spatial conv needs it. DAT++'s neighborhood attention becomes dense attention over tiles when the
input size is fixed (neighborhood_tiles.py). Everything else is the official math op for op; only
the memory layout and the order of a few sums differ, so results agree with the official forward
to float rounding (tests/test_channels_last.py).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from dat_deploy.model import deformable, fused_ops, sampling, windows
from dat_deploy.model.attention import DeformableAttention, LocalAttention, NeighborhoodAttention, ShiftWindowAttention
from dat_deploy.model.layers import ConvFFN, LayerNormProxy, TransformerMLP
from dat_deploy.model.neighborhood_tiles import tiled_neighborhood_attention
from dat_deploy.model.token_linear import linear, linear_bias_apart, linear_chunks


def to_channels_first(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


def to_channels_last(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def gelu(x: torch.Tensor) -> torch.Tensor:
    """Exact GELU, written in the order onnxruntime's GeluFusion recognises (F.gelu's export is not)."""
    return x * (1.0 + torch.erf(x / math.sqrt(2.0))) * 0.5


def activation(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(layer, nn.GELU) and layer.approximate == "none":
        return gelu(x)
    return layer(x)


def sequential(layers: nn.Sequential, x: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """Run a stem / downsampling Sequential (convs, LayerNormProxy, GELU); returns channels-last."""
    for layer in layers:
        if isinstance(layer, LayerNormProxy):
            x = layer.norm(x if channels_last else to_channels_last(x))
            channels_last = True
        elif isinstance(layer, nn.Conv2d):
            x = layer(to_channels_first(x) if channels_last else x)
            channels_last = False
        else:
            x = activation(layer, x)
    return x if channels_last else to_channels_last(x)


def window_attention(attn: LocalAttention, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    batch, height, width, channels = x.shape
    w, heads = attn.window_size, attn.heads
    rows, cols, tokens = height // w, width // w, w * w
    windows = x.reshape(batch, rows, w, cols, w, channels).transpose(2, 3).reshape(-1, tokens, channels)
    q, k, v = (t.reshape(-1, tokens, heads, channels // heads).transpose(1, 2)  # (windows, heads, tokens, head_dim)
               for t in linear_chunks(windows, attn.proj_qkv, 3))
    table = attn.relative_position_bias_table[attn.relative_position_index.reshape(-1)]
    bias = table.reshape(tokens, tokens, heads).permute(2, 0, 1)[None]  # (1 or nW, heads, T, T)
    if mask is not None:
        bias = bias + mask[:, None]  # both constant: one addend instead of two adds
    attn_logits = (q * attn.scale) @ k.transpose(-2, -1)
    attn_logits = attn_logits.reshape(-1, bias.shape[0], heads, tokens, tokens) + bias
    out = attn_logits.reshape(-1, heads, tokens, tokens).softmax(dim=-1) @ v
    out = linear(out.transpose(1, 2).reshape(-1, tokens, channels), attn.proj_out)
    return out.reshape(batch, rows, cols, w, w, channels).transpose(2, 3).reshape(batch, height, width, channels)


def shift_window_attention(attn: ShiftWindowAttention, x: torch.Tensor) -> torch.Tensor:
    s = attn.shift_size
    shifted = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
    return torch.roll(window_attention(attn, shifted, attn.attn_mask), shifts=(s, s), dims=(1, 2))


def fused_window_attention(attn: LocalAttention, x: torch.Tensor, impl) -> torch.Tensor:
    """An L / S block through one window-attention op (`fused_ops`): the qkv Gemm's output goes in
    as is, the roll, partition and softmax happen inside, and channels-last tokens come out."""
    shift = attn.shift_size if isinstance(attn, ShiftWindowAttention) else 0
    mask = attn.attn_mask if shift else None
    bias = windows.window_bias(attn.relative_position_bias_table, attn.relative_position_index, mask)
    out = impl(linear(x, attn.proj_qkv), bias, attn.heads, attn.window_size, shift, attn.scale)
    return linear(out, attn.proj_out)


def deformable_attention(attn: DeformableAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    batch, height, width, channels = x.shape
    groups = attn.groups
    q = linear(x, attn.proj_q)
    # the offset network starts with a depthwise conv: channels-first per group, then back to channels-last
    q_groups = q.reshape(batch, height, width, groups, attn.group_channels).permute(0, 3, 4, 1, 2)
    dwconv, norm, act, to_offset = attn.conv_offset
    hidden = to_channels_last(dwconv(q_groups.reshape(batch * groups, attn.group_channels, height, width)))
    offset = linear(activation(act, norm.norm(hidden)), to_offset)
    pos, reference = attn.positions_from_offset(offset)
    key_h, key_w = pos.shape[1], pos.shape[2]
    num_keys = key_h * key_w

    sampled = sampling.deform_sample(to_channels_first(x), pos, groups).reshape(batch, channels, num_keys).transpose(1, 2)
    k, v = linear(sampled, attn.proj_k), linear(sampled, attn.proj_v)  # (B, Nk, C)
    # bias sampling, q . k, softmax and P v: one op in the plugin flavour, plain ops otherwise
    core = fused_ops.fused(fused_ops.DEFORMABLE_ATTENTION) or deformable.deformable_attention_reference
    out = core(q, k, v, attn.rpe_table, pos, attn.heads, groups, attn.convention, attn.scale)
    shape = (batch, groups, key_h, key_w, 2)
    return linear(out, attn.proj_out), pos.reshape(shape), reference.reshape(shape)


def attention(attn: nn.Module, x: torch.Tensor, static_size: bool):
    if isinstance(attn, DeformableAttention):
        return deformable_attention(attn, x)
    fused_window = fused_ops.fused(fused_ops.WINDOW_ATTENTION)
    if isinstance(attn, LocalAttention) and fused_window is not None:
        return fused_window_attention(attn, x, fused_window), None, None
    if isinstance(attn, ShiftWindowAttention):
        return shift_window_attention(attn, x), None, None
    if isinstance(attn, LocalAttention):
        return window_attention(attn, x, None), None, None
    if isinstance(attn, NeighborhoodAttention):
        out = tiled_neighborhood_attention(attn, x) if static_size else attn.attend_channels_last(x)
        return out, None, None
    raise TypeError(f"no channels-last forward for {type(attn).__name__}")


def mlp(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if isinstance(block, TransformerMLP):
        return linear(activation(block.chunk.act, linear_bias_apart(x, block.chunk.linear1)), block.chunk.linear2)
    if isinstance(block, ConvFFN):
        # the residual depthwise conv runs on the 4x-wide hidden map: channels-first for the whole
        # MLP costs two transposes of C channels instead of two of 4C
        hidden = block.linear1(to_channels_first(x))
        hidden = activation(block.act, hidden + block.dwc(hidden))
        return to_channels_last(block.linear2(hidden))
    raise TypeError(f"no channels-last forward for {type(block).__name__}")


def stage(block_stage: nn.Module, x: torch.Tensor, positions: list, references: list, static_size: bool) -> torch.Tensor:
    for d in range(block_stage.depths):
        if block_stage.use_lpu:
            x = x + to_channels_last(block_stage.local_perception_units[d](to_channels_first(x)))
        y, pos, ref = attention(block_stage.attns[d], block_stage.layer_norms[2 * d].norm(x), static_size)
        x = x + y
        x = x + mlp(block_stage.mlps[d], block_stage.layer_norms[2 * d + 1].norm(x))
        if pos is not None:
            positions.append(pos)
            references.append(ref)
    return x


class ChannelsLastDAT(nn.Module):
    """Wraps a DAT for export: same inputs, outputs and parameters, channels-last inside.

    `static_size`: the input's H and W are fixed at export, so neighborhood attention can use
    index tables built for them (dense attention over tiles); dynamic-size exports keep the gather.
    """

    def __init__(self, model: nn.Module, static_size: bool = True):
        super().__init__()
        self.model = model
        self.static_size = static_size

    def forward(self, x: torch.Tensor, return_positions: bool = False, stage_maps: list | None = None):
        """As DAT.forward; `stage_maps`, when given, receives the four stage maps (channels-first)."""
        model = self.model
        positions: list[torch.Tensor] = []
        references: list[torch.Tensor] = []
        x = sequential(model.patch_proj, x, channels_last=False)
        features = []
        for i in range(4):
            x = stage(model.stages[i], x, positions, references, self.static_size)
            features.append(to_channels_first(x))
            if i < 3:
                x = sequential(model.down_projs[i], x, channels_last=True)
        if stage_maps is not None:
            stage_maps.extend(features)
        if model.features_only:
            out = features
        else:
            out = model.cls_head(model.cls_norm.norm(x).mean(dim=(1, 2)))
        return (out, positions, references) if return_positions else out
