"""Images in, model batches out: the official DAT evaluation transform, and the checks around it.

The transform is torchvision's `Resize((r, r), BICUBIC)` + `CenterCrop(S)` + `ToTensor()` +
`Normalize(mean, std)` on a PIL image, re-done with PIL and numpy so that a CPU service does not
need torchvision: PIL's bicubic resize of the uint8 image (what torchvision calls for PIL inputs),
the crop offsets torchvision computes (`int(round((r - S) / 2.0))`, Python's round), then
`x / 255`, `(x - mean) / std` in float32. DAT-B++ 384 resizes straight to 384 (`r == S`, no crop).

Image modes, decided here once so that every entry point (CLI, API, visualize) agrees:
* L, 1, I;16*, I  -> grey replicated to RGB; 16-bit values scaled to 8 bits by `round(v / 257)`
  (the inverse of the standard 8->16 expansion `v * 257`, so 65535 -> 255 and 8-bit data
  stored as 16-bit round-trips exactly).
* RGBA, LA, La, RGBa, P with transparency -> alpha-composited on white. The colour under a
  transparent pixel is undefined (often black or left-over pixels), white is what viewers show;
  fully opaque images are unchanged, so they match torchvision's `convert("RGB")` exactly.
* CMYK, YCbCr, P (palette) -> Pillow's conversion to RGB.
* EXIF orientation is applied (a phone photo is classified the way it is shown).
* F (float) images are refused: their value range is not defined.

Size limits, the same for files, bytes and every entry point:
* images of more than MAX_IMAGE_PIXELS (about 179 megapixels, e.g. 13000 x 13000; Pillow's own
  decompression-bomb limit) are refused with a UserError before their pixels are decoded;
* an image with a side longer than twice DECODE_MIN_SIDE is decoded reduced by a whole factor that
  keeps both sides >= DECODE_MIN_SIDE: JPEG in draft mode (the decoder scales by 1/2, 1/4 or 1/8, so
  the full-size pixels are never held), other formats with `Image.reduce` right after loading
  (before any mode conversion copies them). The evaluation resize goes to at most 384 pixels, so
  the result differs from a full-size decode by far less than JPEG noise; smaller images are
  decoded exactly.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Iterable, Sequence, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from dat_deploy.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm")

ImageLike = Union[str, os.PathLike, bytes, Image.Image, np.ndarray]

MAX_IMAGE_PIXELS = 2 * 89_478_485  # Pillow's default DecompressionBombError threshold
DECODE_MIN_SIDE = 2048
_REDUCIBLE_MODES = ("L", "LA", "RGB", "RGBA", "CMYK", "YCbCr", "I", "F")  # Image.reduce averages these correctly

_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_ALPHA_MODES = ("RGBA", "LA", "La", "RGBa", "PA")


def load_image(path: str | os.PathLike) -> Image.Image:
    """Read an image file as an RGB PIL image; a `UserError` names the file if it cannot be used."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"image {path} does not exist. Check the path.")
    if path.is_dir():
        raise UserError(f"{path} is a folder, not an image. Pass image files (folders are expanded by the CLI).")
    return _decode(path, str(path))


def decode_image(data: bytes, source: str = "image bytes") -> Image.Image:
    """Encoded image bytes (an upload, a message payload) as an RGB PIL image."""
    return _decode(io.BytesIO(data), source)


def _too_large(source: str, width: int, height: int) -> UserError:
    return UserError(
        f"{source} is {width}x{height} ({width * height / 1e6:.0f} megapixels); images above "
        f"{MAX_IMAGE_PIXELS / 1e6:.0f} megapixels are refused (decompression-bomb limit). Downscale it first."
    )


def _load_reduced(img: Image.Image) -> Image.Image:
    """Decode `img`, reduced by whole factors while both sides stay >= DECODE_MIN_SIDE (module docstring)."""
    width, height = img.size
    if max(width, height) >= 2 * DECODE_MIN_SIDE and img.format == "JPEG":
        img.draft(img.mode, (DECODE_MIN_SIDE, DECODE_MIN_SIDE))  # DCT scaling: both sides stay >= the request
    img.load()  # decode now: truncated files fail here, not later inside the batch
    factors = (max(1, img.size[0] // DECODE_MIN_SIDE), max(1, img.size[1] // DECODE_MIN_SIDE))
    if factors != (1, 1) and img.mode in _REDUCIBLE_MODES:
        reduced = img.reduce(factors)
        img.close()  # frees the full-size pixels now, not when the caller's `with` ends
        return reduced
    return img


def _decode(file: Path | io.BytesIO, source: str) -> Image.Image:
    try:
        # Pillow warns between its two limits; our own limit decides, so its warning would only be noise.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(file) as img:
                if img.size[0] * img.size[1] > MAX_IMAGE_PIXELS:
                    raise _too_large(source, *img.size)
                img = _load_reduced(img)
                img = ImageOps.exif_transpose(img)
                return to_rgb(img, source=source)
    except UserError:
        raise
    except Image.DecompressionBombError:  # raised by Image.open itself above twice Pillow's MAX_IMAGE_PIXELS
        raise UserError(f"{source} is larger than {MAX_IMAGE_PIXELS / 1e6:.0f} megapixels (decompression-bomb "
                        "limit) and was not decoded. Downscale it first.") from None
    except UnidentifiedImageError:
        raise UserError(f"{source} is not an image Pillow can read (corrupt, or an unsupported format).") from None
    except PermissionError:
        raise UserError(f"cannot read {source}: permission denied.") from None
    except (OSError, SyntaxError, ValueError) as exc:  # truncated / corrupt data
        raise UserError(f"{source} is corrupt or truncated ({exc}). Re-export or re-download the image.") from None


def to_rgb(img: Image.Image, source: str = "image") -> Image.Image:
    """Convert any PIL mode to 8-bit RGB with the rules in this module's docstring."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _SIXTEEN_BIT_MODES or mode == "I":
        return _sixteen_bit_to_rgb(img, source)
    if mode == "F":
        raise UserError(
            f"{source} is a floating-point image (mode F) with no defined value range. "
            "Convert it to 8-bit RGB first."
        )
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in _ALPHA_MODES:
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise UserError(f"{source} has image mode {mode!r} that cannot be converted to RGB ({exc}).") from None


def _sixteen_bit_to_rgb(img: Image.Image, source: str) -> Image.Image:
    values = np.asarray(img).astype(np.int64)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise UserError(
            f"{source} is a 32-bit integer image with values outside 0..65535 "
            f"({values.min()}..{values.max()}). Convert it to 8-bit RGB first."
        )
    grey = np.round(values / 257.0).astype(np.uint8)
    return Image.fromarray(grey, mode="L").convert("RGB")


def as_rgb_image(item: ImageLike) -> Image.Image:
    """A path, encoded bytes, PIL image or HxWx3 / HxW uint8 array as an RGB PIL image."""
    if isinstance(item, (bytes, bytearray, memoryview)):
        return decode_image(bytes(item))
    if isinstance(item, Image.Image):
        return to_rgb(item)
    if isinstance(item, np.ndarray):
        if item.dtype != np.uint8 or item.ndim not in (2, 3) or (item.ndim == 3 and item.shape[2] not in (3, 4)):
            raise UserError(
                f"an image array must be uint8 with shape (H, W), (H, W, 3) or (H, W, 4); "
                f"got {item.dtype} {item.shape}. For a ready model batch use predict_batch."
            )
        return to_rgb(Image.fromarray(item))
    if isinstance(item, (str, os.PathLike)):
        return load_image(item)
    raise UserError(
        f"cannot use {type(item).__name__} as an image: pass a file path, encoded bytes, a PIL image or a uint8 array."
    )


def crop_box(resize_size: int, input_size: int) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of torchvision's CenterCrop(input_size) on a resize_size square."""
    if resize_size < input_size:
        raise UserError(f"resize_size {resize_size} is smaller than input_size {input_size}; the crop would need padding.")
    offset = int(round((resize_size - input_size) / 2.0))
    return offset, offset, offset + input_size, offset + input_size


def resize_and_crop(img: Image.Image, input_size: int, resize_size: int) -> Image.Image:
    """Square bicubic resize to resize_size, then the centre crop to input_size (uint8 RGB in and out)."""
    resized = img.resize((resize_size, resize_size), Image.Resampling.BICUBIC)
    if resize_size == input_size:
        return resized
    return resized.crop(crop_box(resize_size, input_size))


def normalize(rgb: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """HxWx3 uint8 -> 3xHxW float32, `(x / 255 - mean) / std`, in float32 like torchvision."""
    x = rgb.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(mean, dtype=np.float32)) / np.asarray(std, dtype=np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def preprocess(
    images: Iterable[ImageLike],
    input_size: int,
    resize_size: int,
    mean: Sequence[float],
    std: Sequence[float],
) -> np.ndarray:
    """The evaluation transform for a list of images -> (N, 3, S, S) float32."""
    rows = [
        normalize(np.asarray(resize_and_crop(as_rgb_image(item), input_size, resize_size)), mean, std)
        for item in images
    ]
    if not rows:
        raise UserError("no images to preprocess.")
    return np.stack(rows)


def validate_batch(batch: object, input_size: int | None = None) -> np.ndarray:
    """Check an array given to the API: (N, 3, S, S) float32. Returns it C-contiguous."""
    expected = f"(N, 3, {input_size}, {input_size})" if input_size else "(N, 3, S, S)"
    if not isinstance(batch, np.ndarray):
        raise UserError(f"expected a numpy array of shape {expected} float32, got {type(batch).__name__}.")
    if batch.dtype != np.float32:
        raise UserError(
            f"expected a float32 array of shape {expected}, got dtype {batch.dtype}. "
            "Use batch.astype(np.float32) (inputs are normalised images, see dat_deploy.preprocess)."
        )
    square = batch.ndim == 4 and batch.shape[2] == batch.shape[3]
    if batch.ndim != 4 or batch.shape[0] < 1 or batch.shape[1] != 3 or not square or (
        input_size is not None and batch.shape[2] != input_size
    ):
        raise UserError(f"expected an array of shape {expected} float32 (NCHW), got shape {tuple(batch.shape)}.")
    return np.ascontiguousarray(batch)


def list_image_files(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Files as given, folders expanded (recursively, sorted) to the image files inside them."""
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise UserError(f"{path} does not exist. Check the image or folder path.")
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*")
                if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
            )
            if not found:
                raise UserError(
                    f"folder {path} contains no image files ({', '.join(IMAGE_SUFFIXES)}). "
                    "Point at a folder with images, or pass the files themselves."
                )
            files.extend(found)
        else:
            files.append(path)
    return files


def sample_images() -> list[tuple[str, Image.Image]]:
    """The embedded sample photos (scikit-image's astronaut, chelsea the cat, coffee)."""
    try:
        from skimage import data
    except ImportError:
        raise UserError(
            "the sample images come from scikit-image, which is not installed. "
            "Run `pip install scikit-image` (or `pip install dat-deploy[images]`), or pass image paths."
        ) from None
    return [(name, Image.fromarray(getattr(data, name)()).convert("RGB")) for name in ("astronaut", "chelsea", "coffee")]
