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
            f"Detail: {_first_line(exc)}"
        ) from exc
    # torch's weights-only unpickler meets damaged data with assorted errors (KeyError for an unknown opcode).
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError, TypeError) as exc:
        raise UserError(
            f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {_first_line(exc)}. "
            f"Download it again and compare its size and checksum."
        ) from exc


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().split(". ")[0].splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def _load_safetensors(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise UserError(f"{path} is not a readable safetensors file (truncated or corrupt?): {_first_line(exc)}.") from exc


def sniff_format(path: Path) -> str:
    """What a weights file is, from its first bytes: zip (torch.save), pickle (legacy torch.save),
    safetensors, lfs-pointer, html, json, text, empty, or unknown."""
    with open(path, "rb") as f:
        head = f.read(512)
        size = f.seek(0, 2)
    if not head:
        return "empty"
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return "zip"
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:  # pickle protocol 2-5
        return "pickle"
    if len(head) >= 9:  # safetensors: u64 little-endian header length, then the JSON header
        header_len = int.from_bytes(head[:8], "little")
        if head[8:9] == b"{" and 0 < header_len <= size - 8:
            return "safetensors"
    if b"\x00" in head:
        return "unknown"
    text = head.decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n").lower()
    if text.startswith("version https://git-lfs"):
        return "lfs-pointer"
    if text.startswith(("<!doctype html", "<html", "<head", "<body", "<?xml", "<!--")):
        return "html"
    if text.startswith(("{", "[")):
        return "json"
    printable = sum(ch.isprintable() or ch in "\t\r\n" for ch in head.decode("utf-8", errors="replace"))
    return "text" if printable >= 0.95 * len(head.decode("utf-8", errors="replace")) else "unknown"


_NOT_A_CHECKPOINT = {
    "empty": "is empty (0 bytes): the download or copy did not finish. Download it again",
    "lfs-pointer": "is a Git LFS pointer (a small text file that stands for the real file), not the weights. "
                   "Run `git lfs pull` in its repository, or download the checkpoint itself",
    "html": "is an HTML page, not a checkpoint: the download saved a web page (a sign-in, error or "
            "confirmation page). Download the .pth file itself",
    "json": "is a JSON file, not a checkpoint. Pass the .pth or .safetensors file with the weights",
    "text": "is a text file, not a checkpoint. Pass the .pth or .safetensors file with the weights",
    "unknown": "is not a checkpoint: neither a PyTorch file (zip or pickle) nor safetensors. "
               "Pass the official .pth or a .safetensors file",
}


def _is_torch_zip(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("data.pkl") for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return True  # a damaged torch file: torch.load reports it


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
    kind = sniff_format(path)
    if kind in _NOT_A_CHECKPOINT:
        raise UserError(f"weights file {path} {_NOT_A_CHECKPOINT[kind]}.")
    if kind == "zip" and not _is_torch_zip(path):
        raise UserError(f"weights file {path} is a zip archive but not a PyTorch checkpoint (no data.pkl inside). "
                        "Unpack it, or pass the .pth file itself.")
    raw = _load_safetensors(path) if kind == "safetensors" else _load_pth(path)
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
