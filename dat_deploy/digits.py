"""scikit-learn's digits as images for the small trained models (`dat_digits`, `dat_pp_digits`).

The 1,797 8x8 digits (values 0..16) are rendered as 8-bit RGB images, white ink on black
(`round(v * 255 / 16)` in all three channels), and from there take the same path as any image a
deployed model sees: `dat_deploy.preprocess.preprocess` with the variant's resize, crop, mean and std.
Training, export checks, fp16/int8 accuracy and int8 calibration therefore all see one distribution.

The split is fixed: per class, a seeded permutation puts the first `round(n * HELD_OUT_FRACTION)`
images in the held-out set (stratified, numpy's PCG64, so it does not depend on the scikit-learn
version). Calibrate on `split_images("train")`, never on the held-out images you measure on.

    images, labels = split_images("held_out")          # list of (8, 8, 3) uint8 arrays, int64 labels
    batch = preprocess_for("dat_digits", images[:32])  # (32, 3, 224, 224) float32
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dat_deploy.errors import UserError

SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.2
NUM_CLASSES = 10
DIGIT_VARIANTS = ("dat_digits", "dat_pp_digits")
# The trained weights and their manifest (sha256, accuracy, recipe), written by scripts/train_digits.py.
TRAINED_DIR = Path(__file__).resolve().parent.parent / "tests" / "data" / "trained"
MANIFEST_NAME = "manifest.json"


@functools.lru_cache(maxsize=None)
def _digits() -> tuple[np.ndarray, np.ndarray]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise UserError(
            "the digits data set comes from scikit-learn, which is not installed. "
            "Run `pip install scikit-learn` (or `pip install dat-deploy[test]`)."
        ) from None
    data = load_digits()
    grey = np.round(data.images * (255.0 / 16.0)).astype(np.uint8)  # (N, 8, 8), 0..16 -> 0..255
    rgb = np.repeat(grey[..., None], 3, axis=-1)
    rgb.setflags(write=False)
    labels = data.target.astype(np.int64)
    labels.setflags(write=False)
    return rgb, labels


def split_indices(seed: int = SPLIT_SEED, held_out_fraction: float = HELD_OUT_FRACTION) -> dict[str, np.ndarray]:
    """Sorted image indices of the stratified "train" and "held_out" sets."""
    _, labels = _digits()
    rng = np.random.default_rng(seed)
    held = []
    for cls in range(NUM_CLASSES):
        members = np.flatnonzero(labels == cls)
        held.append(rng.permutation(members)[: int(round(len(members) * held_out_fraction))])
    held_out = np.sort(np.concatenate(held))
    train = np.setdiff1d(np.arange(len(labels)), held_out)
    return {"train": train, "held_out": held_out}


def split_fingerprint(seed: int = SPLIT_SEED) -> str:
    """sha256 of the held-out indices (int64, little-endian): the manifest records it, tests compare."""
    import hashlib

    return hashlib.sha256(split_indices(seed)["held_out"].astype("<i8").tobytes()).hexdigest()


def split_images(part: str, seed: int = SPLIT_SEED) -> tuple[list[np.ndarray], np.ndarray]:
    """The (8, 8, 3) uint8 RGB images and labels of one part ("train" or "held_out") of the split."""
    indices = split_indices(seed)
    if part not in indices:
        raise UserError(f"unknown digits split part {part!r}; choose 'train' or 'held_out'.")
    images, labels = _digits()
    chosen = indices[part]
    return [images[i] for i in chosen], labels[chosen].copy()


def calibration_images(count: int = 128, seed: int = SPLIT_SEED) -> list[np.ndarray]:
    """`count` training-split images (none held out), a seeded choice balanced over the classes."""
    images, labels = split_images("train", seed)
    if not 1 <= count <= len(images):
        raise UserError(f"calibration image count must be 1..{len(images)}, got {count}.")
    order = np.random.default_rng(seed + 1).permutation(len(images))
    # round-robin over classes in the permuted order, so a small count still covers every digit
    by_class = [[i for i in order if labels[i] == cls] for cls in range(NUM_CLASSES)]
    picked = [row[j] for j in range(max(map(len, by_class))) for row in by_class if j < len(row)]
    return [images[i] for i in picked[:count]]


def preprocess_for(variant: str, images: Sequence[np.ndarray]) -> np.ndarray:
    """Images -> (N, 3, S, S) float32 through the run-time preprocessing with `variant`'s recipe."""
    from dat_deploy.model import get_variant
    from dat_deploy.preprocess import preprocess

    spec = get_variant(variant)
    return preprocess(images, spec.input_size, spec.resize_size, spec.mean, spec.std)


def accuracy(predict: Callable[[np.ndarray], np.ndarray], variant: str, images: Sequence[np.ndarray],
             labels: np.ndarray, batch: int = 32) -> tuple[float, np.ndarray]:
    """Top-1 accuracy in percent of `predict` (a preprocessed batch -> logits), and the predicted classes."""
    predicted = []
    for start in range(0, len(images), batch):
        logits = np.asarray(predict(preprocess_for(variant, images[start:start + batch])))
        predicted.append(logits.argmax(axis=1))
    classes = np.concatenate(predicted)
    return float((classes == labels).mean() * 100.0), classes


def read_manifest(folder: Path = TRAINED_DIR) -> dict:
    path = folder / MANIFEST_NAME
    if not path.is_file():
        raise UserError(f"{path} does not exist: train the digits models with `python scripts/train_digits.py`.")
    return json.loads(path.read_text(encoding="utf-8"))


def trained_weights(variant: str, folder: Path = TRAINED_DIR) -> Path:
    """The committed weights file of a digits variant (its sha256 is in the manifest)."""
    entry = read_manifest(folder).get(variant)
    if entry is None:
        raise UserError(f"no trained weights for {variant!r} in {folder / MANIFEST_NAME}; "
                        f"choose one of {', '.join(DIGIT_VARIANTS)}.")
    return folder / entry["file"]
