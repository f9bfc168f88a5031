"""The int8 gates on the full-size tiny variants (seeded random weights): DAT-T and DAT-T++ plugin flavour, int8 for
onnxruntime, mean logit cosine against PyTorch fp32 at least 0.99 on photos the calibration did not use."""

from __future__ import annotations

import numpy as np
import pytest

from dat_deploy.model import create_model, get_variant
from dat_deploy.quantize.pipeline import quantize_folder
from dat_deploy.quantize.images import held_out_images
from dat_deploy.runtime import OrtBackend, TorchBackend


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["dat_t", "dat_pp_t"])
def test_int8_plugin_flavour_keeps_logits_of_pytorch_fp32(export_once, tmp_path, variant):
    exported = export_once(variant, flavor="plugin")
    result = quantize_folder(exported.folder, output=tmp_path / f"{variant}_int8", images=64)
    assert result.written and result.report.passed
    spec = get_variant(variant)
    prep = {"input_size": spec.input_size, "resize_size": spec.resize_size, "mean": spec.mean, "std": spec.std}
    batch = held_out_images(12, prep, seed=7)  # the sample photos and views of them; the calibration never saw them
    ref = TorchBackend(create_model(variant, seed=0)).run(batch)["logits"].astype(np.float64)
    got = OrtBackend(result.onnx_path).run(batch)["logits"].astype(np.float64)
    cosines = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    print(f"{variant} int8 logit cosine vs PyTorch fp32: mean {cosines.mean():.5f}, min {cosines.min():.5f}")
    assert cosines.mean() >= 0.99, cosines
