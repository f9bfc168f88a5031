"""Decompression limits, the same through the CLI and the Python API, and large images decoded reduced."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

import dat_deploy.cli  # noqa: F401  (registers the commands)
from dat_deploy import preprocess
from dat_deploy.api import Classifier
from dat_deploy.commands._app import app
from dat_deploy.errors import UserError
from small_classifier import RANDOM_META, small_classifier_onnx


def png_header_claiming(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height, with a few bytes of data: a decompression bomb as seen by open()."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
            + chunk(b"IEND", b""))


BOMBS = {"100000x100000 header": (100_000, 100_000), "20000x20000": (20_000, 20_000)}


@pytest.fixture(scope="module")
def small_onnx(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("small") / "small.onnx"
    small_classifier_onnx(path, RANDOM_META)
    return path


@pytest.mark.parametrize("size", BOMBS.values(), ids=BOMBS)
def test_files_and_bytes_over_the_limit_are_refused(tmp_path, size):
    data = png_header_claiming(*size)
    path = tmp_path / "huge.png"
    path.write_bytes(data)
    for load, source in ((lambda: preprocess.load_image(path), str(path)),
                         (lambda: preprocess.decode_image(data), "image bytes")):
        with pytest.raises(UserError) as caught:
            load()
        message = str(caught.value)
        assert source in message and "megapixels" in message and "179" in message  # says the limit


@pytest.mark.parametrize("size", BOMBS.values(), ids=BOMBS)
def test_the_api_refuses_them_with_a_user_error(small_onnx, size):
    """A service maps UserError to 400; Pillow's DecompressionBombError would have been a 500."""
    classifier = Classifier.from_artifact(small_onnx)
    with pytest.raises(UserError, match="megapixels"):
        classifier.predict([png_header_claiming(*size)])


def test_our_limit_decides_below_pillows(tmp_path, monkeypatch):
    image = Image.fromarray(np.zeros((30, 40, 3), np.uint8))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(UserError, match="40x30"):
        preprocess.decode_image(buffer.getvalue())
    # Between Pillow's warning and error sizes an accepted image decodes without Pillow's raw warning.
    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 10_000)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert preprocess.decode_image(buffer.getvalue()).size == (40, 30)
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]


def test_cli_predict_and_visualize_refuse_them(tmp_path, small_onnx):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_claiming(20_000, 20_000))
    result = CliRunner().invoke(app, ["predict", str(path), "--model", str(small_onnx)])
    assert isinstance(result.exception, UserError) and "megapixels" in str(result.exception)
    result = CliRunner().invoke(app, ["visualize", str(path), "-o", str(tmp_path / "v.png")])
    assert isinstance(result.exception, UserError) and "megapixels" in str(result.exception)
    assert not (tmp_path / "v.png").exists()


def test_cli_exit_path_is_one_line_and_code_2(tmp_path, small_onnx):
    path = tmp_path / "huge.png"
    path.write_bytes(png_header_claiming(100_000, 100_000))
    done = subprocess.run([sys.executable, "-m", "dat_deploy.cli", "predict", str(path), "--model", str(small_onnx)],
                          capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"})
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "megapixels" in errors[0] and "Traceback" not in done.stderr


def _smooth_image(width: int, height: int) -> Image.Image:
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    rgb = np.stack([127 + 100 * np.sin(x / 97), 127 + 100 * np.cos(y / 83), 127 + 90 * np.sin((x + y) / 151)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


@pytest.mark.parametrize("fmt, reduced_size", [("JPEG", (400, 300)), ("PNG", (267, 300))])
def test_large_images_are_decoded_reduced_and_classify_the_same(monkeypatch, fmt, reduced_size):
    """JPEG: draft mode decodes at 1/4 (the largest DCT scale keeping both sides >= the minimum); other
    formats: reduced per axis right after loading. The model input matches the full-size decode."""
    buffer = io.BytesIO()
    _smooth_image(1600, 1200).save(buffer, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    data = buffer.getvalue()
    full = preprocess.decode_image(data)
    monkeypatch.setattr(preprocess, "DECODE_MIN_SIDE", 256)
    reduced = preprocess.decode_image(data)
    assert full.size == (1600, 1200) and reduced.size == reduced_size
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    expected = preprocess.preprocess([full], 56, 64, mean, std)
    got = preprocess.preprocess([reduced], 56, 64, mean, std)
    assert np.abs(got - expected).max() < 0.05  # normalised units: about 3 of 255 grey levels
