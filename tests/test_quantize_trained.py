"""int8 on models that have learned something: the digits models (scripts/train_digits.py), calibrated on training
images, measured on the held-out split. int8 may lose at most 1 point of accuracy against fp32 and must agree with
fp32's class on at least 98% of the held-out images."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from dat_deploy import digits
from dat_deploy.errors import UserError


@pytest.mark.slow
@pytest.mark.parametrize("variant", digits.DIGIT_VARIANTS)
def test_int8_keeps_the_accuracy_of_a_trained_model(tmp_path, variant):
    from dat_deploy.export import export_onnx
    from dat_deploy.graph.fp16 import convert_file
    from dat_deploy.model import create_model
    from dat_deploy.quantize.pipeline import quantize_folder
    from dat_deploy.runtime import OrtBackend, TorchBackend

    try:
        weights = digits.trained_weights(variant)
    except UserError as exc:
        pytest.skip(str(exc))
    calibration = tmp_path / "calibration"
    calibration.mkdir()
    for i, image in enumerate(digits.calibration_images(128)):  # training split only
        Image.fromarray(image).save(calibration / f"{i:03d}.png")
    exported = export_onnx(variant, output_dir=tmp_path / "models", weights=weights, flavor="plugin")
    # The validation inside quantize runs on photos, far from digits: the accuracy below is the judge here.
    result = quantize_folder(exported.folder, calibration=calibration, images=128, weights=weights, check=False)
    images, labels = digits.split_images("held_out")
    torch_model = TorchBackend(create_model(variant, weights=weights))
    int8 = OrtBackend(result.onnx_path)
    fp16_path = tmp_path / "fp16.onnx"
    convert_file(exported.onnx_path, fp16_path)  # reported beside int8, not judged here
    fp16 = OrtBackend(fp16_path)
    fp32_acc, fp32_classes = digits.accuracy(lambda b: torch_model.run(b)["logits"], variant, images, labels)
    fp16_acc, _ = digits.accuracy(lambda b: fp16.run(b)["logits"], variant, images, labels)
    int8_acc, int8_classes = digits.accuracy(lambda b: int8.run(b)["logits"], variant, images, labels)
    agreement = float(np.mean(fp32_classes == int8_classes) * 100)
    print(f"{variant}: held-out accuracy fp32 {fp32_acc:.2f}%, fp16 {fp16_acc:.2f}%, int8 {int8_acc:.2f}%; "
          f"int8 agrees with fp32 on {agreement:.2f}% of {len(labels)} images")
    assert fp32_acc >= 95.0, "the trained weights are not the ones the manifest describes"
    assert int8_acc >= fp32_acc - 1.0
    assert agreement >= 98.0
