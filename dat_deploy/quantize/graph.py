"""What an int8 graph is, read from its Q/DQ nodes: used by `build-trt` (int8 from the graph) and by the tests."""

from __future__ import annotations

import numpy as np

QDQ = ("QuantizeLinear", "DequantizeLinear")


def qdq_nodes(model) -> list:
    from dat_deploy.graph.dat_graph import is_onnx_node

    return [n for n in model.graph.node if n.op_type in QDQ and is_onnx_node(n)]


def zero_points(model) -> list[np.ndarray]:
    """The zero-point initializers of every Q/DQ node (an absent zero point is 0)."""
    from onnx import numpy_helper

    initializers = {i.name: i for i in model.graph.initializer}
    points = []
    for node in qdq_nodes(model):
        if len(node.input) > 2 and node.input[2]:
            points.append(numpy_helper.to_array(initializers[node.input[2]]))
        else:
            points.append(np.zeros(1, np.uint8))
    return points


def int8_flavour(model) -> str | None:
    """None (no Q/DQ), "tensorrt" (every zero point 0 and int8: symmetric) or "onnxruntime" (uint8 / zero points)."""
    points = zero_points(model)
    if not points:
        return None
    symmetric = all(p.dtype == np.int8 and not np.any(p) for p in points)
    return "tensorrt" if symmetric else "onnxruntime"
