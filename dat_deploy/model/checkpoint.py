"""Reading checkpoints in the official layouts and fitting them to a model, with errors a user can act on.

Accepted: the official `.pth` files (`{'model': state_dict, ...}`, possibly with a pickled yacs
config), `{'state_dict': ...}`, a bare state dict, `module.`-prefixed keys (DDP), and safetensors.

Security choice: `.pth` files are always read with `torch.load(weights_only=True)`. Official
training checkpoints pickle a yacs `CfgNode`; instead of falling back to full unpickling (which can
run arbitrary code), we allow exactly that class name and rebuild it as an inert OrderedDict.
"""

from __future__ import annotations

import collections
import math
import pickle
import zipfile
from pathlib import Path
from typing import Mapping

import torch
import torch.nn.functional as F

from dat_deploy.errors import UserError


# torch's weights-only unpickler can fill an OrderedDict (items and attribute state) but runs no
# constructor of ours, so the config comes back as plain nested data.
_PICKLED_CONFIG_CLASSES = ["yacs.config.CfgNode"]


def _load_pth(path: Path) -> object:
    safe = [(collections.OrderedDict, name) for name in _PICKLED_CONFIG_CLASSES]
    try:
        with torch.serialization.safe_globals(safe):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UserError(
            f"{path} pickles objects other than tensors and a yacs config, so it was not loaded "
            f"(unpickling them could run code). Re-save just the state dict: "
            f"torch.save(torch.load(f, weights_only=False)['model'], 'clean.pth') on a machine you trust. "
            f"Detail: {str(exc).splitlines()[0]}"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {str(exc).split('. ')[0]}. "
            f"Download it again and compare its size and checksum."
        ) from exc


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}.") from exc


def extract_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """The tensor dict inside a loaded checkpoint, with DDP `module.` prefixes removed."""
    if isinstance(obj, Mapping):
        for container in ("model", "state_dict"):
            if container in obj and isinstance(obj[container], Mapping):
                obj = obj[container]
                break
    if not isinstance(obj, Mapping) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UserError(
            f"{path} holds no state dict: expected tensors under 'model' or 'state_dict', or a bare dict of tensors."
        )
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"weights file {path} does not exist. Check the --weights path.")
    raw = _load_safetensors(path) if path.suffix == ".safetensors" else _load_pth(path)
    return extract_state_dict(raw, path)


def _resize_table(table: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    return F.interpolate(table[None].float(), size, mode="bicubic").squeeze(0).to(table.dtype)


def adapt_to_model(state: dict[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fit a checkpoint made at another resolution, as the official loader does.

    Position tables are bicubic-interpolated; structural buffers (Swin index, shift mask) are the
    model's own. Keys absent from the model (a classifier head in features-only mode) are dropped.
    """
    adapted = {}
    for key, value in state.items():
        target = expected.get(key)
        if target is None:
            if key.startswith(("cls_head.", "cls_norm.")) and not any(k.startswith("cls_head.") for k in expected):
                continue
            adapted[key] = value
            continue
        if target.shape == value.shape:
            adapted[key] = value
        elif key.endswith(("relative_position_index", "attn_mask")):
            adapted[key] = target
        elif key.endswith("rpe_table") and value.dim() == 3 and value.shape[0] == target.shape[0]:
            adapted[key] = _resize_table(value, tuple(target.shape[1:]))
        elif key.endswith("relative_position_bias_table") and value.shape[1] == target.shape[1]:
            old, new = int(math.isqrt(value.shape[0])), int(math.isqrt(target.shape[0]))
            square = value.T.reshape(value.shape[1], old, old)
            adapted[key] = _resize_table(square, (new, new)).reshape(value.shape[1], new * new).T
        else:
            adapted[key] = value  # reported as a shape mismatch
    return adapted


def describe_mismatch(state: Mapping[str, torch.Tensor], expected: Mapping[str, torch.Tensor]) -> tuple[list, list, list]:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mis_shaped = sorted(
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(expected[k].shape)}"
        for k in set(state) & set(expected)
        if state[k].shape != expected[k].shape
    )
    return missing, unexpected, mis_shaped


def _listing(label: str, items: list, limit: int = 5) -> str:
    if not items:
        return ""
    shown = ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")
    return f" {len(items)} {label}: {shown}."
