"""Class names shipped with the package.

`data/imagenet_classes.txt` lists the 1000 ImageNet-1k classes in the standard index order
(the short WordNet names torchvision and PyTorch Hub use; "crane" and "maillot" appear twice,
as in the dataset itself).
"""

from __future__ import annotations

import functools
from importlib import resources


@functools.lru_cache(maxsize=None)
def imagenet_classes() -> tuple[str, ...]:
    text = resources.files("dat_deploy").joinpath("data", "imagenet_classes.txt").read_text(encoding="utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    assert len(names) == 1000, f"imagenet_classes.txt has {len(names)} names, expected 1000"
    return names


def class_names(num_classes: int) -> tuple[str, ...]:
    """ImageNet-1k names for a 1000-class head, `class_<i>` for any other head."""
    if num_classes == 1000:
        return imagenet_classes()
    return tuple(f"class_{i}" for i in range(num_classes))
