"""TensorRT int8 from the graph: `dat-deploy quantize --target tensorrt` on DAT-T's plugin flavour, built strongly
typed by `build-trt`, against PyTorch fp32 on held-out photos (mean per-image logit cosine >= 0.99)."""

from __future__ import annotations

import numpy as np
import pytest

try:
    import tensorrt  # noqa: F401
    import torch

    _reason = None if torch.cuda.is_available() else "no CUDA GPU visible to torch"
except (ImportError, OSError) as exc:
    _reason = f"TensorRT is not importable here ({type(exc).__name__})"
if _reason is not None:
    pytest.skip(_reason, allow_module_level=True)


def test_int8_engine_matches_pytorch_fp32(engines, tmp_path):
    from dat_deploy.model import create_model, get_variant
    from dat_deploy.quantize.pipeline import quantize_folder
    from dat_deploy.quantize.images import held_out_images
    from dat_deploy.runtime import TorchBackend
    from dat_deploy.runtime.tensorrt_backend import TensorRTBackend
    from dat_deploy.trt.build import BuildOptions, build_trt

    source = engines.export("dat_t", "plugin").parent.parent
    quantized = quantize_folder(source, output=tmp_path / "dat_t_int8_trt", images=64, target="tensorrt")
    result = build_trt(BuildOptions(onnx=quantized.onnx_path, int8=True, plugin_lib=engines.plugin_library(),
                                    output=tmp_path, name="dat_t_int8", show_progress=False), log=print)
    assert result.sidecar["precision"] == "int8"
    spec = get_variant("dat_t")
    prep = {"input_size": spec.input_size, "resize_size": spec.resize_size, "mean": spec.mean, "std": spec.std}
    batch = held_out_images(8, prep, seed=3)
    ref = TorchBackend(create_model("dat_t", seed=0)).run(batch)["logits"].astype(np.float64)
    got = np.asarray(TensorRTBackend(result.folder.plan).run(batch)["logits"], dtype=np.float64)
    cosines = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert cosines.mean() >= 0.99, cosines
