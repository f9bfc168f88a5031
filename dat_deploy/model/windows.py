"""Swin window attention of DAT's `L` / `S` blocks as one replaceable op (contract: plugins/README.md).

`window_attention(qkv, bias, heads, window, shift, scale)` takes the qkv projection of channels-last
tokens (B, H, W, 3C) and returns the attention output (B, H, W, C) before the output projection: the
roll by -shift, window partition, q . k * scale + bias, softmax, P v, reverse partition and the roll
back. `bias` (Nb, heads, T, T) is the relative-position bias, plus the shift mask when Nb is the number
of windows per image. The reference below is plain PyTorch; the plugin export flavour swaps in the
`dat::window_attention` custom op (DATWindowAttention in ONNX) via `fused_ops.use_fused`.
"""

from __future__ import annotations

import torch


def window_attention_reference(
    qkv: torch.Tensor, bias: torch.Tensor, heads: int, window: int, shift: int, scale: float
) -> torch.Tensor:
    batch, height, width, three_c = qkv.shape
    channels = three_c // 3
    rows, cols, tokens = height // window, width // window, window * window
    if shift:
        qkv = torch.roll(qkv, shifts=(-shift, -shift), dims=(1, 2))
    windows = qkv.reshape(batch, rows, window, cols, window, 3, heads, channels // heads)
    # (3, batch * windows, heads, tokens, head_dim)
    q, k, v = windows.permute(5, 0, 1, 3, 6, 2, 4, 7).reshape(3, -1, heads, tokens, channels // heads).unbind(0)
    logits = (q * scale) @ k.transpose(-2, -1)
    logits = logits.reshape(batch, -1, heads, tokens, tokens) + bias
    out = logits.reshape(-1, heads, tokens, tokens).softmax(dim=-1) @ v
    out = out.reshape(batch, rows, cols, heads, window, window, channels // heads)
    out = out.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, height, width, channels)
    if shift:
        out = torch.roll(out, shifts=(shift, shift), dims=(1, 2))
    return out


def window_bias(relative_table: torch.Tensor, relative_index: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(Nb, heads, T, T) bias input: the gathered relative-position table, plus the shift mask if any."""
    tokens = relative_index.shape[0]
    bias = relative_table[relative_index.reshape(-1)].reshape(tokens, tokens, -1).permute(2, 0, 1)[None]
    return bias if mask is None else bias + mask[:, None]
