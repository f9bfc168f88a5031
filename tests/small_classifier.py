"""A small ONNX classifier with dat-deploy's metadata, for tests that need a real model but not a DAT export.

input (N,3,S,S) -> Conv 3x3 -> Relu -> GlobalAveragePool -> Gemm -> logits (N,1000): milliseconds per batch,
but every image gets its own logits, so a mixed-up result would show.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

SIZE, RESIZE = 32, 36
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)
# what `dat-deploy export` stamps: strings, JSON lists, and the weights' provenance
RANDOM_META = {"variant": "small", "input_size": str(SIZE), "resize_size": str(RESIZE), "mean": json.dumps(MEAN),
               "std": json.dumps(STD), "num_classes": "1000", "random_init_seed": "0"}


def small_classifier_onnx(path: Path, metadata: dict[str, str], size: int = SIZE, random_bias: bool = False) -> None:
    """Write the classifier to `path` with `metadata` as its metadata_props (seeded: the same bytes every time)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w_conv = numpy_helper.from_array(rng.normal(size=(16, 3, 3, 3)).astype(np.float32), "w_conv")
    w_fc = numpy_helper.from_array(rng.normal(size=(1000, 16)).astype(np.float32), "w_fc")
    bias = rng.normal(size=1000).astype(np.float32) if random_bias else np.zeros(1000, np.float32)
    b_fc = numpy_helper.from_array(bias, "b_fc")
    nodes = [
        helper.make_node("Conv", ["input", "w_conv"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("GlobalAveragePool", ["r"], ["p"]),
        helper.make_node("Flatten", ["p"], ["f"]),
        helper.make_node("Gemm", ["f", "w_fc", "b_fc"], ["logits"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "small",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, size, size])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1000])],
        initializer=[w_conv, w_fc, b_fc],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = key, value
    onnx.save(model, str(path))
