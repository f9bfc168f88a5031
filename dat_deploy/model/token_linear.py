"""Linear layers on the last axis of token tensors, written so that ONNX gets plain Gemm nodes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def linear(x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """A Linear or 1x1 Conv2d applied to the last axis, flattened to 2-D so that ONNX gets one Gemm."""
    weight = layer.weight.flatten(1)  # a 1x1 conv's (out, in, 1, 1) is a Linear's (out, in)
    leading = x.shape[:-1]
    return F.linear(x.reshape(-1, x.shape[-1]), weight, layer.bias).reshape(*leading, weight.shape[0])


def linear_bias_apart(x: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
    """`linear(x, layer)` with the bias added after the reshape, for a linear that feeds an activation.

    onnxruntime then fuses the bias into the activation (Add + Gelu -> BiasGelu, one pass) instead of
    into a Gemm: a Gemm's bias is a broadcast write plus an accumulating read of its whole output. DAT-T's
    stage-1 MLP block at batch 8 (fc1 to 25088 x 384, GELU, fc2, residual Add, LayerNorm) took 53-55 ms
    with fc1's bias in its Gemm and 47-49 ms with it in BiasGelu.
    """
    leading = x.shape[:-1]
    product = F.linear(x.reshape(-1, x.shape[-1]), layer.weight).reshape(*leading, layer.weight.shape[0])
    return product + layer.bias


def linear_chunks(x: torch.Tensor, layer: nn.Linear, chunks: int) -> list[torch.Tensor]:
    """`linear(x, layer).chunk(chunks, -1)` as one Gemm per chunk: splitting one wide Gemm output along
    its last axis is a strided copy that cost onnxruntime 4% of DAT-T (Split nodes)."""
    leading, rows = x.shape[:-1], layer.weight.shape[0] // chunks
    flat = x.reshape(-1, x.shape[-1])
    return [
        F.linear(flat, layer.weight[i * rows:(i + 1) * rows], layer.bias[i * rows:(i + 1) * rows]).reshape(*leading, rows)
        for i in range(chunks)
    ]
