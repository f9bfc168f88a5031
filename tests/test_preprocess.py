"""The evaluation transform and the image-mode rules, checked against independent computations."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dat_deploy.errors import UserError
from dat_deploy.preprocess import (
    crop_box,
    decode_image,
    list_image_files,
    load_image,
    preprocess,
    resize_and_crop,
    sample_images,
    to_rgb,
    validate_batch,
)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _coordinate_image(size: int) -> Image.Image:
    """Every pixel encodes its own (row, col): R = row, G = col (mod 256), B = row // 256 * 16 + col // 256."""
    rows, cols = np.mgrid[0:size, 0:size]
    rgb = np.stack([rows % 256, cols % 256, (rows // 256) * 16 + cols // 256], axis=-1).astype(np.uint8)
    return Image.fromarray(rgb)


# torchvision: crop_top = int(round((h - ch) / 2.0)), Python's round (ties to even)
@pytest.mark.parametrize(
    "resize_size, input_size, offset",
    [(256, 224, 16), (438, 384, 27), (257, 224, 16), (259, 224, 18), (224, 224, 0), (9, 4, 2)],
)
def test_center_crop_geometry_is_torchvision_s(resize_size, input_size, offset):
    assert crop_box(resize_size, input_size) == (offset, offset, offset + input_size, offset + input_size)
    # an image already resize_size square is not resampled, so the crop can be read off exactly
    source = _coordinate_image(resize_size)
    out = np.asarray(resize_and_crop(source, input_size, resize_size))
    expected = np.asarray(source)[offset:offset + input_size, offset:offset + input_size]
    np.testing.assert_array_equal(out, expected)


def test_resize_is_square_bicubic_not_shorter_side():
    # a wide image: the official eval squashes it to a square (aspect not kept), then crops
    rng = np.random.default_rng(0)
    smooth = rng.integers(0, 256, size=(6, 12, 3)).astype(np.float32)
    wide = F.interpolate(torch.from_numpy(smooth).permute(2, 0, 1)[None], size=(60, 120), mode="bilinear",
                         align_corners=False)[0].permute(1, 2, 0).round().clamp(0, 255).byte().numpy()
    out = np.asarray(resize_and_crop(Image.fromarray(wide), 32, 40)).astype(np.float32)
    assert out.shape == (32, 32, 3)
    # torch's antialiased bicubic differs from PIL's in its kernel constant, not in its geometry
    ref = F.interpolate(torch.from_numpy(wide).permute(2, 0, 1)[None].float(), size=(40, 40), mode="bicubic",
                        antialias=True, align_corners=False)[0].permute(1, 2, 0).numpy()[4:36, 4:36]
    assert np.abs(out - ref).mean() < 1.0  # an off-by-one crop gives ~20
    # a shorter-side resize (40 x 80, crop the middle) would be far off
    shorter_side = F.interpolate(torch.from_numpy(wide).permute(2, 0, 1)[None].float(), size=(40, 80),
                                 mode="bicubic", antialias=True)[0].permute(1, 2, 0).numpy()[4:36, 24:56]
    assert np.abs(out - shorter_side).mean() > 5 * np.abs(out - ref).mean()


def test_preprocess_matches_pil_resize_and_torch_normalize():
    rng = np.random.default_rng(1)
    image = Image.fromarray(rng.integers(0, 256, size=(37, 53, 3), dtype=np.uint8))
    batch = preprocess([image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)], 24, 27, MEAN, STD)
    assert batch.dtype == np.float32 and batch.shape == (2, 3, 24, 24)

    # torchvision's recipe step by step: PIL bicubic resize, crop at round((27-24)/2)=2, ToTensor, Normalize
    resized = np.asarray(image.resize((27, 27), Image.Resampling.BICUBIC))[2:26, 2:26]
    tensor = torch.from_numpy(resized.copy()).permute(2, 0, 1).float().div(255)
    expected = (tensor - torch.tensor(MEAN).view(3, 1, 1)) / torch.tensor(STD).view(3, 1, 1)
    np.testing.assert_array_equal(batch[0], expected.numpy())
    assert not np.array_equal(batch[0], batch[1])


def test_no_crop_when_resize_equals_input():
    image = _coordinate_image(50)
    batch = preprocess([image], 20, 20, (0, 0, 0), (1, 1, 1))
    direct = np.asarray(image.resize((20, 20), Image.Resampling.BICUBIC)).transpose(2, 0, 1) / np.float32(255)
    np.testing.assert_array_equal(batch[0], direct.astype(np.float32))


def test_grayscale_is_replicated():
    grey = Image.fromarray(np.arange(100, dtype=np.uint8).reshape(10, 10), mode="L")
    rgb = np.asarray(to_rgb(grey))
    assert rgb.shape == (10, 10, 3)
    for c in range(3):
        np.testing.assert_array_equal(rgb[..., c], np.asarray(grey))


def test_rgba_is_composited_on_white():
    pixels = np.array([[[255, 0, 0, 255], [0, 0, 255, 0], [0, 0, 0, 128]]], dtype=np.uint8)
    rgb = np.asarray(to_rgb(Image.fromarray(pixels, mode="RGBA"))).astype(int)
    assert rgb[0, 0].tolist() == [255, 0, 0]  # opaque: unchanged
    assert rgb[0, 1].tolist() == [255, 255, 255]  # transparent: white, whatever colour it stored
    # half-transparent black over white: 255 * (1 - 128/255) = 127
    assert all(abs(v - 127) <= 1 for v in rgb[0, 2])

    la = Image.fromarray(np.array([[[10, 0], [10, 255]]], dtype=np.uint8), mode="LA")
    assert np.asarray(to_rgb(la)).tolist() == [[[255, 255, 255], [10, 10, 10]]]


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([0, 0, 0, 200, 10, 10] + [0] * 762)
    img.putdata([0, 1])
    img.info["transparency"] = 0
    path = tmp_path / "p.png"
    img.save(path, transparency=0)
    assert np.asarray(load_image(path)).tolist() == [[[255, 255, 255], [200, 10, 10]]]


def test_sixteen_bit_scaled_to_eight_bits(tmp_path):
    values = np.array([[0, 128, 129, 257 * 7, 257 * 200 + 128, 65535]], dtype=np.uint16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")
    rgb = np.asarray(load_image(path))
    # independent: the 8-bit value v is stored as v * 257 in 16 bits
    assert rgb[..., 0].tolist() == [[0, 0, 1, 7, 200, 255]]
    assert (rgb[..., 0] == rgb[..., 2]).all()


def test_32bit_integer_out_of_range_is_refused():
    img = Image.fromarray(np.array([[0, 70000]], dtype=np.int32), mode="I")
    with pytest.raises(UserError, match="outside 0..65535"):
        to_rgb(img, source="big.tif")


def test_cmyk_converted(tmp_path):
    path = tmp_path / "cmyk.jpg"
    Image.new("CMYK", (8, 8), (0, 0, 0, 0)).save(path, quality=100)
    rgb = np.asarray(load_image(path)).astype(int)
    assert rgb.shape == (8, 8, 3) and (rgb > 250).all()  # no ink = white


def test_corrupt_and_truncated_files_name_the_file(tmp_path):
    garbage = tmp_path / "garbage.jpg"
    garbage.write_bytes(b"this is not a jpeg")
    with pytest.raises(UserError, match="garbage.jpg"):
        load_image(garbage)

    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(UserError, match="truncated.png"):
        load_image(truncated)

    with pytest.raises(UserError, match="missing.png"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(UserError, match="corrupt or truncated"):
        decode_image(truncated.read_bytes())
    assert decode_image(buffer.getvalue()).size == (64, 64)


def test_folders_expand_and_empty_folder_is_an_error(tmp_path):
    (tmp_path / "imgs" / "sub").mkdir(parents=True)
    for name in ("b.png", "a.jpg", "sub/c.PNG"):
        Image.new("RGB", (4, 4)).save(tmp_path / "imgs" / name)
    (tmp_path / "imgs" / "notes.txt").write_text("x")
    files = list_image_files([tmp_path / "imgs"])
    assert [f.relative_to(tmp_path / "imgs").as_posix() for f in files] == ["a.jpg", "b.png", "sub/c.PNG"]

    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="contains no image files"):
        list_image_files([tmp_path / "empty"])
    with pytest.raises(UserError, match="does not exist"):
        list_image_files([tmp_path / "nope"])


@pytest.mark.parametrize(
    "array, message",
    [
        (np.zeros((1, 3, 8, 8), np.float64), "dtype float64"),
        (np.zeros((3, 8, 8), np.float32), r"shape \(3, 8, 8\)"),
        (np.zeros((1, 8, 8, 3), np.float32), r"shape \(1, 8, 8, 3\)"),
        (np.zeros((1, 3, 9, 9), np.float32), r"\(N, 3, 8, 8\)"),
        (np.zeros((0, 3, 8, 8), np.float32), r"\(N, 3, 8, 8\)"),
        ([[1.0]], "numpy array"),
    ],
)
def test_wrong_arrays_are_refused_with_the_expected_shape(array, message):
    with pytest.raises(UserError, match=message):
        validate_batch(array, input_size=8)


def test_valid_array_passes_through():
    x = np.zeros((2, 3, 8, 8), np.float32)
    assert validate_batch(x, 8) is x


def test_sample_images():
    samples = sample_images()
    assert [name for name, _ in samples] == ["astronaut", "chelsea", "coffee"]
    batch = preprocess([img for _, img in samples], 32, 36, MEAN, STD)
    assert batch.shape == (3, 3, 32, 32) and np.isfinite(batch).all()
