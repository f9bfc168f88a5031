"""Which quantized layers lose the most: onnxruntime's qdq_loss_debug, run with our op library registered.

Each quantized activation is compared with itself before its Q/DQ pair (the local quantization noise, as a
signal-to-quantization-noise ratio in dB) and with the fp32 graph's value of the same tensor (the error
accumulated up to there). The local SQNR ranks the layers: the accumulated one grows with depth and would
always point at the last layers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _session_options(library: Path | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if library is not None:
        options.register_custom_ops_library(str(library))
    return options


def activation_drift(float_path: Path, qdq_path: Path, images: np.ndarray, library: Path | None,
                     work: Path) -> dict[str, dict[str, float]]:
    """{activation tensor: {"qdq_err": dB, "xmodel_err": dB}} for every quantized activation (higher is better)."""
    import onnx
    from onnxruntime.quantization import qdq_loss_debug as debug

    from dat_deploy.quantize.calibrate import BatchReader

    input_name = onnx.load(str(float_path), load_external_data=False).graph.input[0].name
    activations = {}
    for label, path in (("float", float_path), ("qdq", qdq_path)):
        augmented = work / f"drift_{label}.onnx"
        debug.modify_model_output_intermediate_tensors(str(path), str(augmented))
        activations[label] = debug.collect_activations(str(augmented), BatchReader(input_name, images),
                                                       session_options=_session_options(library))
    matching = debug.create_activation_matching(activations["qdq"], activations["float"])
    return debug.compute_activation_error(matching)


def worst_nodes(model, drift: dict[str, dict[str, float]], candidates: list[str], count: int) -> list[tuple[str, float]]:
    """The `count` quantized nodes (of `candidates`) whose input activation has the lowest local SQNR."""
    allowed = set(candidates)
    scored: dict[str, float] = {}
    for node in model.graph.node:
        if node.name in allowed and node.input and node.input[0] in drift:
            scored[node.name] = float(drift[node.input[0]]["qdq_err"])
    return sorted(scored.items(), key=lambda item: item[1])[:count]
