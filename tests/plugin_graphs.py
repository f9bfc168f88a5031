"""Helpers for the plugin-flavour block tests: export a module with the `dat` custom ops, and run the result."""

from __future__ import annotations

import onnx
import onnxruntime as ort
import torch

from dat_deploy.export import plugin_ops
from dat_deploy.native import ort_library_path


def export_plugin_flavour(module: torch.nn.Module, example: torch.Tensor) -> onnx.ModelProto:
    """Export `module` (input "x", output "y") through the dynamo exporter with a dynamic batch."""
    with plugin_ops.plugin_flavour(), torch.no_grad():
        program = torch.onnx.export(
            module, (example,), dynamo=True, opset_version=18, input_names=["x"], output_names=["y"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}},
            custom_translation_table=plugin_ops.custom_translation_table(), external_data=False, optimize=True,
        )
    return program.model_proto


def plugin_session(model: onnx.ModelProto) -> ort.InferenceSession:
    """An onnxruntime CPU session with libdat_ort_ops registered."""
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(ort_library_path(build=True)))
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def checked_output_shapes(model: onnx.ModelProto, op_type: str) -> list[onnx.TensorShapeProto]:
    """Run onnx's full checker and strict shape inference; the inferred output shape of every `op_type` node."""
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    values = {v.name: v.type.tensor_type for v in list(inferred.graph.value_info) + list(inferred.graph.output)}
    return [values[node.output[0]].shape for node in inferred.graph.node if node.op_type == op_type]
