"""The attention modules of DAT and DAT++, channels-first in and out.

Every module returns `(y, pos, ref)`; `pos`/`ref` are the deformable sampling positions and
reference points (B, groups, Hk, Wk, 2) in (y, x) order for deformable blocks, else None.
Attribute names equal the official ones so that official checkpoints load with strict=True.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dat_deploy.model import sampling
from dat_deploy.model.layers import LayerNormProxy


def _swin_relative_index(window: int) -> torch.Tensor:
    """(w*w, w*w) index into a ((2w-1)^2, heads) table, Swin's layout: (dy + w-1) * (2w-1) + (dx + w-1)."""
    coords = torch.stack(torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")).flatten(1)
    relative = coords[:, :, None] - coords[:, None, :] + (window - 1)
    return relative[0] * (2 * window - 1) + relative[1]


def shift_window_mask(fmap_size: int, window: int, shift: int) -> torch.Tensor:
    """(nW, w*w, w*w) additive mask, -100 between tokens that come from different regions after the roll."""
    region = torch.zeros(fmap_size, fmap_size)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for rows in bounds:
        for cols in bounds:
            region[rows, cols] = label
            label += 1
    n = fmap_size // window
    windows = region.reshape(n, window, n, window).permute(0, 2, 1, 3).reshape(n * n, window * window)
    differs = (windows[:, None, :] - windows[:, :, None]) != 0
    return torch.zeros(differs.shape).masked_fill(differs, -100.0)


class LocalAttention(nn.Module):
    """Swin window attention (DAT spec `L`); needs H and W divisible by the window."""

    def __init__(self, dim: int, heads: int, window_size: int):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.window_size = window_size
        self.proj_qkv = nn.Linear(dim, 3 * dim)
        self.proj_out = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.01)
        self.register_buffer("relative_position_index", _swin_relative_index(window_size))

    def _attend(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        batch, channels, height, width = x.shape
        w = self.window_size
        rows, cols = height // w, width // w
        tokens = w * w
        windows = x.reshape(batch, channels, rows, w, cols, w).permute(0, 2, 4, 3, 5, 1).reshape(-1, tokens, channels)
        q, k, v = self.proj_qkv(windows).chunk(3, dim=2)
        q = q * self.scale
        q, k, v = (t.reshape(-1, tokens, self.heads, channels // self.heads).transpose(1, 2) for t in (q, k, v))
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        attn = attn + bias.reshape(tokens, tokens, self.heads).permute(2, 0, 1)[None]
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.reshape(-1, num_windows, self.heads, tokens, tokens) + mask.reshape(1, num_windows, 1, tokens, tokens)
            attn = attn.reshape(-1, self.heads, tokens, tokens)
        out = (attn.softmax(dim=-1) @ v).transpose(1, 2).reshape(-1, tokens, channels)
        out = self.proj_out(out)
        return out.reshape(batch, rows, cols, w, w, channels).permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, height, width)

    def forward(self, x: torch.Tensor):
        return self._attend(x, None), None, None


class ShiftWindowAttention(LocalAttention):
    """Shifted-window attention (DAT spec `S`); shift = ceil(window / 2), mask built for one map size."""

    def __init__(self, dim: int, heads: int, window_size: int, fmap_size: int):
        super().__init__(dim, heads, window_size)
        self.shift_size = math.ceil(window_size / 2)
        self.register_buffer("attn_mask", shift_window_mask(fmap_size, window_size, self.shift_size))

    def forward(self, x: torch.Tensor):
        s = self.shift_size
        shifted = torch.roll(x, shifts=(-s, -s), dims=(2, 3))
        return torch.roll(self._attend(shifted, self.attn_mask), shifts=(s, s), dims=(2, 3)), None, None


def reference_points(key_h: int, key_w: int, family: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(Hk, Wk, 2) reference points in (y, x), built out of place.

    DAT: ((i + 0.5) / Hk) * 2 - 1.  DAT++: ((i + 0.5) / (Hk - 1)) * 2 - 1, which is asymmetric
    (Hk = 7 gives -0.833 .. +1.167) - that is what the released DAT++ weights were trained with.
    """
    ys = torch.arange(key_h, dtype=dtype, device=device) + 0.5
    xs = torch.arange(key_w, dtype=dtype, device=device) + 0.5
    if family == "dat":
        ys, xs = ys / key_h, xs / key_w
    else:
        ys, xs = ys / (key_h - 1.0), xs / (key_w - 1.0)
    grid_y, grid_x = torch.meshgrid(ys * 2.0 - 1.0, xs * 2.0 - 1.0, indexing="ij")
    return torch.stack((grid_y, grid_x), dim=-1)


class DeformableAttention(nn.Module):
    """Deformable multi-head attention (spec `D`, `DAttentionBaseline` in the official code).

    Keys and values are sampled from the input at learned positions; the relative-position bias
    table is sampled at the query-to-key displacements. Both samplings go through
    `dat_deploy.model.sampling`, the replaceable op contract.
    """

    def __init__(self, family: str, fmap_size: int, dim: int, heads: int, groups: int,
                 stride: int, ksize: int, offset_range_factor: float):
        super().__init__()
        self.family = family
        self.heads = heads
        self.head_channels = dim // heads
        self.scale = self.head_channels ** -0.5
        self.groups = groups
        self.group_channels = dim // groups
        self.offset_range_factor = offset_range_factor
        padding = ksize // 2 if (family == "dat" or ksize != stride) else 0
        cg = self.group_channels
        self.conv_offset = nn.Sequential(
            nn.Conv2d(cg, cg, ksize, stride, padding, groups=cg),
            LayerNormProxy(cg),
            nn.GELU(),
            nn.Conv2d(cg, 2, 1, 1, 0, bias=False),
        )
        self.proj_q = nn.Conv2d(dim, dim, 1)
        self.proj_k = nn.Conv2d(dim, dim, 1)
        self.proj_v = nn.Conv2d(dim, dim, 1)
        self.proj_out = nn.Conv2d(dim, dim, 1)
        self.rpe_table = nn.Parameter(torch.zeros(heads, 2 * fmap_size - 1, 2 * fmap_size - 1))
        nn.init.trunc_normal_(self.rpe_table, std=0.01)
        self.convention = sampling.CONVENTION_DAT if family == "dat" else sampling.CONVENTION_DAT_PP

    def _positions(self, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Sampling positions and reference points, each (B*g, Hk, Wk, 2) in (y, x)."""
        batch, _, height, width = q.shape
        offset = self.conv_offset(q.reshape(batch * self.groups, self.group_channels, height, width))
        return self.positions_from_offset(offset.permute(0, 2, 3, 1))

    def positions_from_offset(self, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The raw offset network output (B*g, Hk, Wk, 2), channels last, to positions and references."""
        key_h, key_w = offset.shape[1], offset.shape[2]
        if self.offset_range_factor >= 0:
            # DAT: tanh-bounded offsets, at most `factor` key cells away from the reference.
            norm_h, norm_w = (key_h, key_w) if self.family == "dat" else (key_h - 1.0, key_w - 1.0)
            offset_range = torch.tensor([1.0 / norm_h, 1.0 / norm_w], dtype=offset.dtype, device=offset.device)
            offset = offset.tanh() * offset_range * self.offset_range_factor
        reference = reference_points(key_h, key_w, self.family, offset.dtype, offset.device)
        pos = offset + reference
        if self.offset_range_factor < 0:
            pos = pos.clamp(-1.0, 1.0) if self.family == "dat_pp" else pos.tanh()
        return pos, reference.expand_as(pos)

    def forward(self, x: torch.Tensor):
        batch, channels, height, width = x.shape
        q = self.proj_q(x)
        pos, reference = self._positions(q)
        key_h, key_w = pos.shape[1], pos.shape[2]
        num_keys = key_h * key_w

        sampled = sampling.deform_sample(x, pos, self.groups).reshape(batch, channels, 1, num_keys)
        q = q.reshape(batch * self.heads, self.head_channels, height * width)
        k = self.proj_k(sampled).reshape(batch * self.heads, self.head_channels, num_keys)
        v = self.proj_v(sampled).reshape(batch * self.heads, self.head_channels, num_keys)

        attn = torch.einsum("bcm,bcn->bmn", q, k) * self.scale
        attn = attn + sampling.rel_pos_bias(self.rpe_table, pos, x, self.groups, self.convention)
        attn = attn.softmax(dim=2)
        out = torch.einsum("bmn,bcn->bcm", attn, v).reshape(batch, channels, height, width)
        y = self.proj_out(out)
        shape = (batch, self.groups, key_h, key_w, 2)
        return y, pos.reshape(shape), reference.reshape(shape)


class NeighborhoodAttention(nn.Module):
    """2-D neighborhood attention (DAT++ spec `N`) in pure PyTorch, following NATTEN 0.14's rules.

    Each query attends to the k x k window starting at clamp(i - k//2, 0, L - k) on each axis
    (shifted inward at the borders, never truncated), with bias rpb[head, dy + k-1, dx + k-1].
    Maps smaller than k are zero-padded right/bottom before `qkv`, as NATTEN's module does.
    Written as one gather of the k*k neighbours so that it exports to ONNX and runs everywhere.
    """

    def __init__(self, dim: int, kernel_size: int, heads: int):
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.scale = self.head_dim ** -0.5
        self.kernel_size = kernel_size
        self.qkv = nn.Linear(dim, dim * 3)
        self.rpb = nn.Parameter(torch.zeros(heads, 2 * kernel_size - 1, 2 * kernel_size - 1))
        nn.init.trunc_normal_(self.rpb, std=0.02, mean=0.0, a=-2.0, b=2.0)
        self.proj = nn.Linear(dim, dim)

    def _window(self, length: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """Key indices (L, k) of each query's window along one axis, and their bias-table rows."""
        k = self.kernel_size
        queries = torch.arange(length, device=device)
        start = (queries - k // 2).clamp(0, length - k)
        keys = start[:, None] + torch.arange(k, device=device)[None, :]
        return keys, keys - queries[:, None] + (k - 1)

    def forward(self, x: torch.Tensor):
        return self.attend_channels_last(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2), None, None

    def attend_channels_last(self, x: torch.Tensor) -> torch.Tensor:
        """(B, H, W, C) in and out."""
        batch, height0, width0, channels = x.shape
        k = self.kernel_size
        pad_h, pad_w = max(0, k - height0), max(0, k - width0)
        if pad_h or pad_w:
            x = F.pad(x, (0, 0, 0, pad_w, 0, pad_h))
        height, width = height0 + pad_h, width0 + pad_w

        qkv = self.qkv(x).reshape(batch, height * width, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, keys, values = qkv[0] * self.scale, qkv[1], qkv[2]  # (B, heads, HW, hd)

        rows, bias_rows = self._window(height, x.device)
        cols, bias_cols = self._window(width, x.device)
        # neighbour n = (ky * k + kx) of query (i, j) is key pixel rows[i, ky] * W + cols[j, kx]
        neighbours = (rows[:, None, :, None] * width + cols[None, :, None, :]).reshape(height * width, k * k)
        bias = self.rpb[:, bias_rows[:, None, :, None], bias_cols[None, :, None, :]].reshape(self.heads, height * width, k * k)

        gathered_k = keys[:, :, neighbours]  # (B, heads, HW, k*k, hd)
        gathered_v = values[:, :, neighbours]
        attn = torch.einsum("bhnd,bhnkd->bhnk", q, gathered_k) + bias[None]
        out = torch.einsum("bhnk,bhnkd->bhnd", attn.softmax(dim=-1), gathered_v)
        out = out.permute(0, 2, 1, 3).reshape(batch, height, width, channels)
        if pad_h or pad_w:
            out = out[:, :height0, :width0, :]
        return self.proj(out)
