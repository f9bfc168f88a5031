"""The images int8 calibration and its validation run on, through the artifact's own preprocessing.

Calibration: a user folder (any file Pillow reads; unreadable files are named and skipped), or the default
set, seeded random crops and flips of the photos scikit-image ships. The default set never uses the three
sample photos (`dat_deploy.preprocess.sample_images`), so that validation on those (and on crops of them,
`held_out_images`) measures images the calibration did not see.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dat_deploy.errors import UserError
from dat_deploy.preprocess import IMAGE_SUFFIXES, normalize, resize_and_crop, sample_images, to_rgb

# scikit-image's bundled photos (skimage/data, no download), minus the sample photos kept for validation.
CALIBRATION_PHOTOS = (
    "rocket", "hubble_deep_field", "retina", "immunohistochemistry", "colorwheel", "coins", "camera", "moon",
    "clock", "cell", "brick", "grass", "gravel", "page", "text", "logo",
)
DEFAULT_SEED = 0
OWN_IMAGES_REMINDER = ("the default calibration set is generic photos; a deployment should calibrate on its own "
                       "images (--calibration DIR, a few hundred that look like production's).")


@dataclass
class CalibrationSet:
    """Preprocessed images (N, 3, S, S) float32 and where they came from (recorded in the sidecar)."""

    batch: np.ndarray
    source: dict
    skipped: list[str] = field(default_factory=list)


def _photo(name: str) -> Image.Image:
    try:
        from skimage import data
    except ImportError:
        raise UserError("the default calibration set comes from scikit-image, which is not installed: "
                        "`pip install scikit-image`, or pass --calibration DIR.") from None
    return to_rgb(Image.fromarray(getattr(data, name)()), source=f"skimage.data.{name}")


def random_views(photos: list[Image.Image], count: int, seed: int) -> list[Image.Image]:
    """`count` seeded random crops (8-100% of the area, aspect 3/4-4/3) with random horizontal flips, round-robin."""
    rng = np.random.default_rng(seed)
    views = []
    for i in range(count):
        img = photos[i % len(photos)]
        width, height = img.size
        area = width * height * rng.uniform(0.08, 1.0)
        aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
        w = int(min(width, max(8, round(np.sqrt(area * aspect)))))
        h = int(min(height, max(8, round(np.sqrt(area / aspect)))))
        left, top = int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1))
        view = img.crop((left, top, left + w, top + h))
        if rng.random() < 0.5:
            view = view.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        views.append(view)
    return views


def _preprocess(images: list[Image.Image], prep: dict) -> np.ndarray:
    return np.stack([normalize(np.asarray(resize_and_crop(img, prep["input_size"], prep["resize_size"])),
                               prep["mean"], prep["std"]) for img in images])


def default_calibration_set(count: int, prep: dict, seed: int = DEFAULT_SEED) -> CalibrationSet:
    photos = [_photo(name) for name in CALIBRATION_PHOTOS]
    batch = _preprocess(random_views(photos, count, seed), prep)
    return CalibrationSet(batch, {"kind": "default", "photos": [f"skimage.data.{n}" for n in CALIBRATION_PHOTOS],
                                  "seed": seed, "images": count, "views": "random crop 8-100% area + flip"})


def folder_calibration_set(folder: Path, count: int, prep: dict) -> CalibrationSet:
    """Up to `count` images of `folder` (sorted, recursive); unreadable files are skipped and named."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"--calibration {folder} is not a folder. Pass a folder of images.")
    files = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
    images, records, skipped = [], [], []
    for path in files:
        if len(images) == count:
            break
        try:
            data = path.read_bytes()
            with Image.open(path) as img:
                img.load()
                rgb = to_rgb(img, source=str(path))
        except Exception as exc:  # noqa: BLE001 - any file Pillow cannot decode is skipped, and named
            skipped.append(f"{path} ({type(exc).__name__})")
            continue
        images.append(rgb)
        records.append({"name": str(path.relative_to(folder)), "sha256": hashlib.sha256(data).hexdigest()})
    if not images:
        raise UserError(f"--calibration {folder} holds no image Pillow can read ({len(files)} files tried; "
                        f"image types: {', '.join(IMAGE_SUFFIXES)}). Point it at a folder of images.")
    return CalibrationSet(_preprocess(images, prep), {"kind": "folder", "folder": str(folder), "images": records},
                          skipped)


def held_out_images(count: int, prep: dict, seed: int = 1) -> np.ndarray:
    """The sample photos themselves, then seeded random views of them, to `count` images: never calibrated on."""
    photos = [img for _, img in sample_images()]
    views = photos[:count] + random_views(photos, max(0, count - len(photos)), seed)
    return _preprocess(views, prep)
