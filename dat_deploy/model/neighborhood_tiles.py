"""Neighborhood attention as dense attention over tiles, for exported graphs of fixed size.

The reference `NeighborhoodAttention` gathers the k*k neighbours of every query: in ONNX that
is a GatherND and a Transpose of k*k (49) copies of the keys and values, about two thirds of
DAT-T++'s onnxruntime time. Here the queries are cut into k x k tiles; every neighbour of a
tile's queries lies in one (k + k-1)^2 region of keys (13 x 13 for k = 7), so each tile runs one
small dense attention over its region with a constant additive term: the bias-table entry where
the key is in the query's window and -inf where it is not. That materialises (13/7)^2 = 3.4 key
copies instead of 49 and runs as batched MatMul; exp(-inf) = 0, so the softmax is NATTEN's.

Index tables depend on H and W, so this path needs a map size known at export time.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from dat_deploy.model.attention import NeighborhoodAttention
from dat_deploy.model.token_linear import linear, linear_chunks


def _axis_tables(length: int, kernel: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`_axis_arrays` as tensors, made anew per call: a tensor cached while torch.export traces is a fake
    one, which later eager calls would get back (and fail on)."""
    return tuple(torch.tensor(a) for a in _axis_arrays(length, kernel))  # copies: the cached arrays stay intact


@functools.lru_cache(maxsize=None)
def _axis_arrays(length: int, kernel: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Along one axis of `length` (>= kernel), with tiles of `kernel` queries:

    keys (tiles, R): the key indices of each tile's region;
    inside (tiles, kernel, R): whether a region key is in the query's window (NATTEN's clamped rule);
    table_row (tiles, kernel, R): the bias-table row of that (query, key) pair, 0 where outside.

    Built with numpy: the exporter sees three constants instead of a few dozen index ops per block
    to trace and fold.
    """
    tile = kernel
    tiles = math.ceil(length / tile)
    region = min(tile + kernel - 1, length)
    first = np.arange(tiles) * tile
    keys = np.clip(first - kernel // 2, 0, length - region)[:, None] + np.arange(region)
    queries = first[:, None] + np.arange(tile)  # past `length` in a padded last tile: computed, then dropped
    window_start = np.clip(queries - kernel // 2, 0, length - kernel)
    offset = keys[:, None, :] - window_start[:, :, None]
    inside = (offset >= 0) & (offset < kernel)
    table_row = np.where(inside, keys[:, None, :] - queries[:, :, None] + kernel - 1, 0)
    return keys, inside, table_row


def _to_tiles(t: torch.Tensor, tiles_h: int, tiles_w: int, size_h: int, size_w: int) -> torch.Tensor:
    """(B, tiles_h*size_h, tiles_w*size_w, heads, hd) -> (B, tiles_h, tiles_w, heads, size_h*size_w, hd)."""
    batch, heads, hd = t.shape[0], t.shape[3], t.shape[4]
    t = t.reshape(batch, tiles_h, size_h, tiles_w, size_w, heads, hd).permute(0, 1, 3, 5, 2, 4, 6)
    return t.reshape(batch, tiles_h, tiles_w, heads, size_h * size_w, hd)


def tiled_neighborhood_attention(attn: NeighborhoodAttention, x: torch.Tensor) -> torch.Tensor:
    """Same result as `attn.attend_channels_last(x)`: (B, H, W, C) in and out, static H and W."""
    batch, height0, width0, channels = x.shape
    k, heads, hd = attn.kernel_size, attn.heads, attn.head_dim
    pad_h, pad_w = max(0, k - height0), max(0, k - width0)
    if pad_h or pad_w:  # NATTEN's module pads small maps before qkv: padded keys take part
        x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
    height, width = height0 + pad_h, width0 + pad_w

    keys_y, inside_y, row_y = _axis_tables(height, k)
    keys_x, inside_x, row_x = _axis_tables(width, k)
    tiles_h, region_h = keys_y.shape
    tiles_w, region_w = keys_x.shape

    q, key, value = (t.reshape(batch, height, width, heads, hd) for t in linear_chunks(x, attn.qkv, 3))

    def regions(t: torch.Tensor) -> torch.Tensor:
        t = t.index_select(1, keys_y.reshape(-1)).index_select(2, keys_x.reshape(-1))
        return _to_tiles(t, tiles_h, tiles_w, region_h, region_w)

    q = F.pad(q * attn.scale, (0, 0, 0, 0, 0, tiles_w * k - width, 0, tiles_h * k - height))
    logits = _to_tiles(q, tiles_h, tiles_w, k, k) @ regions(key).transpose(-2, -1)

    # (tiles_h, tiles_w, heads, k*k, R*R): the bias where the key is in the window, -inf elsewhere
    bias = attn.rpb[:, row_y[:, None, :, None, :, None], row_x[None, :, None, :, None, :]]
    inside = inside_y[:, None, :, None, :, None] & inside_x[None, :, None, :, None, :]
    bias = bias.masked_fill(~inside[None], float("-inf")).permute(1, 2, 0, 3, 4, 5, 6)
    logits = logits + bias.reshape(tiles_h, tiles_w, heads, k * k, region_h * region_w)

    out = logits.softmax(dim=-1) @ regions(value)  # (B, tiles_h, tiles_w, heads, k*k, hd)
    out = out.reshape(batch, tiles_h, tiles_w, heads, k, k, hd).permute(0, 1, 4, 2, 5, 3, 6)
    out = out.reshape(batch, tiles_h * k, tiles_w * k, channels)[:, :height0, :width0]
    return linear(out, attn.proj)
