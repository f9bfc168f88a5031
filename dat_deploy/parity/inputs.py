"""The inputs parity runs on: seeded random batches and the embedded sample photos."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class InputCase:
    name: str
    batch: np.ndarray  # float32 (N, 3, H, W)


def random_case(batch: int, height: int, width: int, seed: int = 0) -> InputCase:
    rng = np.random.default_rng(seed + batch)
    return InputCase(f"random b{batch}", rng.standard_normal((batch, 3, height, width), dtype=np.float32))


def image_case(batch: int, input_size: int, resize_size: int, mean, std) -> InputCase:
    """The sample photos preprocessed as the official evaluation does, cycled to `batch` images."""
    from dat_deploy.preprocess import preprocess, sample_images

    photos = [img for _, img in sample_images()]
    tensors = preprocess(photos, input_size, resize_size, mean, std)
    return InputCase(f"images b{batch}", tensors[np.arange(batch) % len(tensors)])


def held_out_case(count: int, input_size: int, resize_size: int, mean, std) -> InputCase:
    """The sample photos and seeded random views of them (never in a default int8 calibration set)."""
    from dat_deploy.quantize.images import held_out_images

    prep = {"input_size": input_size, "resize_size": resize_size, "mean": mean, "std": std}
    return InputCase(f"held-out photos b{count}", held_out_images(count, prep))


def int8_cases(input_size: int, resize_size: int, mean, std, images: int = 16) -> list[InputCase]:
    """int8 is judged on photos only (its activation ranges were calibrated on images, not on noise), in one batch
    of `images`: top-1 agreement over one or four images would be a coin toss on nearly tied logits."""
    return [held_out_case(images, input_size, resize_size, mean, std)]


def default_cases(batches: list[int], input_size: int, resize_size: int, mean, std, images: bool = True,
                  seed: int = 0, hw: tuple[int, int] | None = None) -> list[InputCase]:
    height, width = hw or (input_size, input_size)
    cases = [random_case(b, height, width, seed) for b in batches]
    if images and hw is None:
        cases += [image_case(b, input_size, resize_size, mean, std) for b in batches]
    return cases
