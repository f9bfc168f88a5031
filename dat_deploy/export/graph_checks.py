"""Checks on an exported graph: onnx's checker and shape inference, a truly symbolic batch dimension."""

from __future__ import annotations

import onnx

from dat_deploy.errors import UserError
from dat_deploy.graph.dat_graph import is_onnx_node


def check_and_infer(model: onnx.ModelProto) -> onnx.ModelProto:
    """Run onnx's checker and strict shape inference; returns the model with inferred value_info."""
    onnx.checker.check_model(model, full_check=False)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)


def has_symbolic_batch(model: onnx.ModelProto) -> bool:
    """True when the first input's and every output's dim 0 is a named (symbolic) dimension."""
    tensors = [model.graph.input[0], *model.graph.output]
    return all(t.type.tensor_type.shape.dim[0].dim_param for t in tensors)


def require_symbolic_batch(model: onnx.ModelProto) -> None:
    if not has_symbolic_batch(model):
        raise UserError(
            "the exported graph froze the batch dimension although a dynamic batch was requested "
            "(torch.export specialises it when the example batch is 1); this is a bug in dat-deploy, please report it."
        )


def op_histogram(model: onnx.ModelProto) -> dict[str, int]:
    counts: dict[str, int] = {}
    for node in model.graph.node:
        key = node.op_type if is_onnx_node(node) else f"{node.domain}::{node.op_type}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1]))
