"""Whole models in the plugin flavour (fast layout): every deformable block becomes a DATDeformSample
and a DATDeformAttention node (the bias grid_sample fused into its softmax), every window (L / S)
block one DATWindowAttention node, and onnxruntime with our custom-op library computes what PyTorch
computes."""

from __future__ import annotations

import numpy as np
import onnx
import torch

from dat_deploy.export.graph_checks import op_histogram
from dat_deploy.model import create_model
from dat_deploy.parity.inputs import random_case
from dat_deploy.runtime import OrtBackend

DEFORMABLE_BLOCKS = {"dat_t": 4, "dat_pp_t": 14}
WINDOW_BLOCKS = {"dat_t": 8, "dat_pp_t": 0}  # DAT-T: L, S in stages 1-2, L in 3 of 6 / 1 of 2 blocks after


def _check_plugin_model(export_once, variant: str, batches=(1, 5), fixed_batch: int | None = None) -> None:
    result = export_once(variant, flavor="plugin", **({"batch": fixed_batch} if fixed_batch else {}))
    ops = op_histogram(onnx.load(str(result.onnx_path)))
    assert "GridSample" not in ops
    assert ops["dat::DATDeformSample"] == ops["dat::DATDeformAttention"] == DEFORMABLE_BLOCKS[variant]
    assert "dat::DATRelPosBias" not in ops
    if variant == "dat_t":
        assert "Softmax" not in ops  # every attention softmax is inside a fused op (DAT++'s tiles keep theirs)
    assert ops.get("dat::DATWindowAttention", 0) == WINDOW_BLOCKS[variant]
    backend = OrtBackend(result.onnx_path)
    assert backend.plugin_library is not None and backend.name.startswith("ort-plugin")
    model = create_model(variant)
    for batch in batches:
        x = random_case(batch, 224, 224, seed=11).batch
        with torch.no_grad():
            expected = model(torch.from_numpy(x)).numpy()
        got = backend.run(x)["logits"]
        assert np.abs(got - expected).max() <= 1e-4
        assert (got.argmax(1) == expected.argmax(1)).all()


def test_plugin_flavour_matches_pytorch_dat_t(export_once):
    _check_plugin_model(export_once, "dat_t")  # the graph CI's fp16 and Triton tests reuse: dynamic batch


def test_plugin_flavour_matches_pytorch_dat_pp_t(export_once):
    """DAT-T++ at a fixed batch of 2: the dynamic batch of the same custom ops is proven on DAT-T above, and a
    symbolic batch roughly doubles torch.export's trace (DAT-S: 142 s against 80 s on one core)."""
    _check_plugin_model(export_once, "dat_pp_t", batches=(2,), fixed_batch=2)

# The other six variants: `python benchmarks/bench_export.py --flavor plugin` exports each one and
# refuses to write a graph whose logits differ from PyTorch's; at one to four minutes per export
# they do not fit CI's budget next to the rest of the suite.
