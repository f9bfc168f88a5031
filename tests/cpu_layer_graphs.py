"""One small graph per op of libdat_ort_ops (every exported op and every onnxruntime-only CPU op), with random
inputs, for the tests that run the library's CPU layers against each other and under an emulated CPU."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


def _model(path: Path, op: str, inputs: dict[str, np.ndarray], outputs: list[str], initializers=(), **attributes):
    """A one-node `dat` graph at `path` (outputs typed like the first input), its feeds at
    path.with_suffix('.inputs.npz')."""
    node = helper.make_node(op, [*inputs, *(i.name for i in initializers)], outputs, domain="dat", **attributes)
    graph = helper.make_graph(
        [node], op,
        [helper.make_tensor_value_info(n, _TYPES[a.dtype.type], a.shape) for n, a in inputs.items()],
        [helper.make_tensor_value_info(n, _TYPES[next(iter(inputs.values())).dtype.type], None) for n in outputs],
        initializer=list(initializers))
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dat", 1)])
    model.ir_version = 10  # onnxruntime reads up to IR 10-11; onnx 1.23 stamps 14
    onnx.save(model, path)
    np.savez(path.with_suffix(".inputs.npz"), **inputs)
    return path


def write_graphs(folder: Path, seed: int = 0) -> dict[str, Path]:
    """name -> model path, for every op; shapes are small but cover the vector tails (sizes not multiples of 16)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def normal(*shape, dtype=np.float32):
        return rng.standard_normal(shape).astype(dtype)

    def coords(*shape):
        return rng.uniform(-1.1, 1.1, shape).astype(np.float32)

    graphs = {
        "deform_sample": _model(folder / "deform_sample.onnx", "DATDeformSample",
                                {"x": normal(2, 8, 9, 11), "pos": coords(4, 5, 6, 2)}, ["y"], groups=2),
        "deform_sample_fp16": _model(folder / "deform_sample_fp16.onnx", "DATDeformSample",
                                     {"x": normal(2, 16, 9, 11, dtype=np.float16), "pos": coords(4, 5, 6, 2)}, ["y"],
                                     groups=2),
        "rel_pos_bias": _model(folder / "rel_pos_bias.onnx", "DATRelPosBias",
                               {"table": normal(4, 17, 21), "pos": coords(4, 5, 6, 2), "x": normal(2, 8, 9, 11)},
                               ["bias"], groups=2, convention=0),
        "window_attention": _model(folder / "window_attention.onnx", "DATWindowAttention",
                                   {"qkv": normal(2, 8, 8, 3 * 64), "bias": normal(1, 2, 16, 16)}, ["y"],
                                   heads=2, window=4, shift=2, scale=0.125),
        "deform_attention": _model(folder / "deform_attention.onnx", "DATDeformAttention",
                                   {"q": normal(2, 7, 7, 64), "k": normal(2, 20, 64), "v": normal(2, 20, 64),
                                    "table": normal(4, 13, 13), "pos": coords(4, 4, 5, 2)}, ["y"],
                                   heads=4, groups=2, convention=1, scale=0.25),
        "bias_gelu": _model(folder / "bias_gelu.onnx", "DATBiasGelu",
                            {"x": normal(37, 100), "bias": normal(100)}, ["y"]),
        "add_layer_norm": _model(folder / "add_layer_norm.onnx", "DATAddLayerNorm",
                                 {"a": normal(37, 100), "b": normal(37, 100), "gamma": normal(100),
                                  "beta": normal(100)}, ["sum", "y"], epsilon=1e-5),
        "gemm_gelu": _model(folder / "gemm_gelu.onnx", "DATGemm", {"x": normal(37, 100)}, ["y"],
                            initializers=[numpy_helper.from_array(normal(83, 100) * 0.1, "weight"),
                                          numpy_helper.from_array(normal(83), "bias")], gelu=1),
    }
    return graphs


def load_outputs(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """<stem>.npz files written by run_plugin_graphs.py -> {stem: {output: array}}."""
    return {path.stem: dict(np.load(path)) for path in sorted(folder.glob("*.npz"))}
