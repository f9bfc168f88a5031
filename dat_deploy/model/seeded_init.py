"""Deterministic random weights, keyed by state_dict name.

Each tensor is drawn from its own generator seeded by (crc32 of its key, seed), so the same key
gets the same values in any model that has it - ours and the official code alike. This is both the
embedded default model (no checkpoint can be downloaded here) and the shared weights of the
golden-logit parity tests. Scales keep activations O(1) through the depth and make the deformable
offsets move visibly (some sampling points leave [-1, 1]), so parity tests exercise every path.
"""

from __future__ import annotations

import math
import zlib
from typing import Mapping

import torch

DEFAULT_SEED = 0


def _generator(key: str, seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(zlib.crc32(key.encode("utf-8")) + 1_000_003 * seed)


def _scale_and_shift(key: str, shape: torch.Size) -> tuple[float, float]:
    if key.endswith("norm.weight"):
        return 0.1, 1.0
    if key.endswith(".bias"):
        return 0.02, 0.0
    if key.endswith(("rpe_table", "relative_position_bias_table", ".rpb")):
        return 0.2, 0.0
    if key.endswith("conv_offset.3.weight"):
        return 0.05, 0.0
    fan_in = math.prod(shape[1:]) if len(shape) > 1 else 1
    return 1.0 / math.sqrt(fan_in), 0.0


def seeded_state_dict(reference: Mapping[str, torch.Tensor], seed: int = DEFAULT_SEED) -> dict[str, torch.Tensor]:
    """A state dict with `reference`'s keys and shapes; float parameters drawn per key.

    Non-float tensors (index buffers) and the shift-window masks are structural, so they are copied.
    """
    out: dict[str, torch.Tensor] = {}
    for key, tensor in reference.items():
        if not tensor.is_floating_point() or key.endswith("attn_mask"):
            out[key] = tensor.detach().clone()
            continue
        scale, shift = _scale_and_shift(key, tensor.shape)
        values = torch.randn(tensor.shape, generator=_generator(key, seed), dtype=torch.float32)
        out[key] = (values * scale + shift).to(tensor.dtype)
    return out
