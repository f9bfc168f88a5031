"""The digits models: committed weights match their manifest, have learned (>= 95% held out), and keep
their accuracy through the ONNX export (plugin flavour in onnxruntime) and the fp16 conversion."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from dat_deploy import digits
from dat_deploy.cli import app
from dat_deploy.errors import UserError
from dat_deploy.hashing import sha256_file
from dat_deploy.model import create_model, get_variant
from dat_deploy.model.variants import zoo_variants

sys.path.insert(0, str(Path(__file__).parent))
from golden_inputs import OFFICIAL  # noqa: E402

MIN_ACCURACY = 95.0


@pytest.fixture(scope="module")
def manifest():
    return digits.read_manifest()


@pytest.fixture(scope="module")
def held_out():
    return digits.split_images("held_out")


def test_split_is_fixed_stratified_and_disjoint(manifest):
    parts = digits.split_indices()
    train, held = parts["train"], parts["held_out"]
    _, labels = digits.split_images("train")
    all_labels = np.concatenate([labels, digits.split_images("held_out")[1]])
    assert len(np.intersect1d(train, held)) == 0 and len(train) + len(held) == 1797
    for cls in range(10):  # every class held out at the same rate (within one image of rounding)
        n = int((all_labels == cls).sum())
        assert abs(int((digits.split_images("held_out")[1] == cls).sum()) - 0.2 * n) <= 1
    for variant in digits.DIGIT_VARIANTS:  # the split the models were measured on is the one we rebuild
        assert manifest[variant]["split"]["held_out_indices_sha256"] == digits.split_fingerprint()
        assert manifest[variant]["held_out_images"] == len(held)


def test_images_are_8bit_rgb_and_calibration_avoids_the_held_out_set():
    images, _ = digits.split_images("held_out")
    assert images[0].shape == (8, 8, 3) and images[0].dtype == np.uint8
    assert max(int(im.max()) for im in images) == 255
    calib = digits.calibration_images(20)
    assert [c.tobytes() for c in calib] == [c.tobytes() for c in digits.calibration_images(20)]
    train_images, train_labels = digits.split_images("train")
    train_bytes = {im.tobytes(): int(label) for im, label in zip(train_images, train_labels)}
    assert all(c.tobytes() in train_bytes for c in calib)
    assert {train_bytes[c.tobytes()] for c in calib} == set(range(10))  # 20 images cover all ten digits
    with pytest.raises(UserError, match="calibration image count"):
        digits.calibration_images(0)


def test_manifest_matches_the_committed_weights(manifest):
    for variant in digits.DIGIT_VARIANTS:
        path = digits.trained_weights(variant)
        assert sha256_file(path) == manifest[variant]["sha256"], path
        assert path.stat().st_size == manifest[variant]["bytes"] < 4 * 2**20
        model = create_model(variant, weights=path)  # strict load
        assert model.provenance["weights_sha256"] == manifest[variant]["sha256"]


def test_digits_variants_are_registered_but_not_listed_in_the_zoo():
    assert set(zoo_variants()) == set(OFFICIAL)
    for variant in digits.DIGIT_VARIANTS:
        assert get_variant(variant).hidden and get_variant(variant).num_classes == 10
    result = CliRunner(env={"COLUMNS": "250"}).invoke(app, ["variants"])
    assert result.exit_code == 0, result.output
    assert all(name in result.output for name in OFFICIAL)
    assert "digits" not in result.output


def _torch_predictions(variant: str, held_out) -> tuple[float, np.ndarray]:
    model = create_model(variant, weights=digits.trained_weights(variant))
    images, labels = held_out
    with torch.inference_mode():
        return digits.accuracy(lambda x: model(torch.from_numpy(x)).numpy(), variant, images, labels)


@pytest.fixture(scope="module")
def torch_results(held_out):
    """variant -> (accuracy, predicted classes) of the PyTorch fp32 model, computed once per variant."""
    cache: dict[str, tuple[float, np.ndarray]] = {}

    def get(variant: str) -> tuple[float, np.ndarray]:
        if variant not in cache:
            cache[variant] = _torch_predictions(variant, held_out)
        return cache[variant]

    return get


@pytest.mark.parametrize("variant", digits.DIGIT_VARIANTS)
def test_pytorch_fp32_has_learned_the_digits(variant, torch_results, manifest):
    accuracy, _ = torch_results(variant)
    assert accuracy >= MIN_ACCURACY
    # what the training script measured on the saved file (another thread count may flip a borderline image)
    assert abs(accuracy - manifest[variant]["held_out_accuracy"]) <= 0.6


@pytest.mark.slow
@pytest.mark.parametrize("variant", digits.DIGIT_VARIANTS)
def test_export_and_fp16_keep_the_accuracy(variant, torch_results, held_out, tmp_path):
    from dat_deploy.export import export_onnx
    from dat_deploy.graph.fp16 import convert_file
    from dat_deploy.native import ort_library_path
    from dat_deploy.runtime.onnxruntime_backend import OrtBackend

    try:
        library = ort_library_path(build=True)
    except UserError as exc:
        pytest.skip(f"the onnxruntime custom-op library is not available: {exc}")
    result = export_onnx(variant, output_dir=tmp_path, weights=digits.trained_weights(variant), flavor="plugin")
    fp16_path = tmp_path / "model_fp16.onnx"
    convert_file(result.onnx_path, fp16_path)
    images, labels = held_out
    torch_accuracy, torch_classes = torch_results(variant)
    for path, max_loss in ((result.onnx_path, 0.2), (fp16_path, 1.0)):
        backend = OrtBackend(path, plugin_library=library)
        assert backend.plugin_library is not None
        accuracy, classes = digits.accuracy(lambda x: backend.run(x)["logits"], variant, images, labels)
        assert abs(accuracy - torch_accuracy) <= max_loss, (path.name, accuracy, torch_accuracy)
        assert (classes == torch_classes).mean() >= 1.0 - max_loss / 100.0, path.name
