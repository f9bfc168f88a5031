"""The two deformable sampling ops of a DAT block, as one replaceable contract.

Every deformable block calls exactly these two functions (see plugins/README.md for the written
contract that the C++/CUDA kernels follow):

* `deform_sample(x, pos, groups)`: bilinear sampling of the feature map at the deformed points.
  x (B, C, H, W); pos (B*g, Hk, Wk, 2) in (y, x) order, normalised to [-1, 1] with
  align_corners=True; points outside give zero padding. Returns (B, C, Hk, Wk).
* `rel_pos_bias(table, pos, x, groups, convention)`: the relative-position bias, the table
  (heads, Th, Tw) sampled at (q_grid - pos) * 0.5 for every query pixel of x's (H, W) and every key.
  Returns (B*heads, H*W, Hk*Wk). Only x's shape is read.

The reference implementation below is plain `F.grid_sample`; the plugin export flavour swaps in
torch custom ops (same math) that translate to the `dat` ONNX domain, via `use_impl`.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

# Query-grid conventions: DAT puts queries on pixel centres, DAT++ on align_corners pixel positions.
CONVENTION_DAT = "dat"  # ((i + 0.5) / H) * 2 - 1
CONVENTION_DAT_PP = "dat_pp"  # i / (H - 1) * 2 - 1
CONVENTIONS = (CONVENTION_DAT, CONVENTION_DAT_PP)


def query_grid(height: int, width: int, convention: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(H, W, 2) query coordinates in (y, x) order, built out of place (export-safe)."""
    ys = torch.arange(height, dtype=dtype, device=device)
    xs = torch.arange(width, dtype=dtype, device=device)
    if convention == CONVENTION_DAT:
        ys = (ys + 0.5) / height * 2.0 - 1.0
        xs = (xs + 0.5) / width * 2.0 - 1.0
    elif convention == CONVENTION_DAT_PP:
        ys = ys / (height - 1.0) * 2.0 - 1.0
        xs = xs / (width - 1.0) * 2.0 - 1.0
    else:
        raise ValueError(f"unknown query-grid convention {convention!r}; expected one of {CONVENTIONS}")
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack((grid_y, grid_x), dim=-1)


def _yx_to_xy(points: torch.Tensor) -> torch.Tensor:
    return points.flip(-1)


def deform_sample_reference(x: torch.Tensor, pos: torch.Tensor, groups: int) -> torch.Tensor:
    batch, channels, height, width = x.shape
    key_h, key_w = pos.shape[1], pos.shape[2]
    sampled = F.grid_sample(
        x.reshape(batch * groups, channels // groups, height, width),
        _yx_to_xy(pos),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return sampled.reshape(batch, channels, key_h, key_w)


def rel_pos_bias_reference(
    table: torch.Tensor, pos: torch.Tensor, x: torch.Tensor, groups: int, convention: str
) -> torch.Tensor:
    batch, _, height, width = x.shape
    heads, table_h, table_w = table.shape
    heads_per_group = heads // groups
    num_keys = pos.shape[1] * pos.shape[2]
    queries = query_grid(height, width, convention, pos.dtype, pos.device)
    displacement = (queries.reshape(1, height * width, 1, 2) - pos.reshape(batch * groups, 1, num_keys, 2)) * 0.5
    # Head h belongs to group h // heads_per_group; the table is shared by every image of the batch.
    grouped_table = table.reshape(1, groups, heads_per_group, table_h, table_w).expand(batch, -1, -1, -1, -1)
    bias = F.grid_sample(
        grouped_table.reshape(batch * groups, heads_per_group, table_h, table_w),
        _yx_to_xy(displacement),
        mode="bilinear",
        padding_mode="zeros",
        align_corners=True,
    )
    return bias.reshape(batch * heads, height * width, num_keys)


_impl: dict[str, Callable[..., torch.Tensor]] = {
    "deform_sample": deform_sample_reference,
    "rel_pos_bias": rel_pos_bias_reference,
}


def deform_sample(x: torch.Tensor, pos: torch.Tensor, groups: int) -> torch.Tensor:
    return _impl["deform_sample"](x, pos, groups)


def rel_pos_bias(table: torch.Tensor, pos: torch.Tensor, x: torch.Tensor, groups: int, convention: str) -> torch.Tensor:
    return _impl["rel_pos_bias"](table, pos, x, groups, convention)


@contextlib.contextmanager
def use_impl(deform_sample_fn: Callable[..., torch.Tensor], rel_pos_bias_fn: Callable[..., torch.Tensor]) -> Iterator[None]:
    """Temporarily route both sampling ops through other implementations (e.g. the plugin custom ops)."""
    saved = dict(_impl)
    _impl["deform_sample"] = deform_sample_fn
    _impl["rel_pos_bias"] = rel_pos_bias_fn
    try:
        yield
    finally:
        _impl.update(saved)
