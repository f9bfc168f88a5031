"""DATBiasGelu: the onnxruntime-only op the CPU backend puts in place of Add(bias) + GELU in plugin graphs.

The kernel against PyTorch's exact GELU in fp64; the graph rewrite against the graph it rewrites, in
onnxruntime; and the backend's use of it on a whole DAT-T.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from dat_deploy.export.graph_checks import op_histogram
from dat_deploy.native import ort_library_path
from dat_deploy.parity.inputs import random_case
from dat_deploy.runtime import OrtBackend
from dat_deploy.runtime.ort_cpu_fusions import fuse_bias_gelu

# Measured worst case over z in [-12, 12]: 9.3e-7 (negative tail, where 1 + erf cancels) and ~1 ulp where
# |GELU| > 1; see plugins/cpu/biasGeluCpu.cpp.
GELU_ATOL = 1.5e-6
DAT_T_MLP_BLOCKS = 12


@pytest.fixture(scope="module")
def library() -> str:
    return str(ort_library_path(build=True))


def _session(model: onnx.ModelProto, library: str | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if library:
        options.register_custom_ops_library(library)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _bias_gelu_node_model(shape: tuple[int, ...], bias_size: int) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node("DATBiasGelu", ["x", "bias"], ["y"], domain="dat")], "bias_gelu",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape)),
         helper.make_tensor_value_info("bias", TensorProto.FLOAT, [bias_size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dat", 1)])


@pytest.mark.parametrize("shape", [(1, 8), (3, 13), (37, 389), (2, 5, 96), (4, 1536)])
def test_kernel_matches_exact_gelu(library, shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.uniform(-10, 10, size=shape).astype(np.float32)
    flat = x.reshape(-1)
    flat[: 9] = [0.0, -0.0, 1e-30, -5.5, -5.6, -7.5, 3.92, 30.0, -30.0][: flat.size]  # zero, clamps, far tails
    bias = rng.uniform(-2, 2, size=shape[-1]).astype(np.float32)
    got = _session(_bias_gelu_node_model(shape, shape[-1]), library).run(None, {"x": x, "bias": bias})[0]
    z = torch.from_numpy(x + bias).double()  # the kernel adds in fp32 too
    want = torch.nn.functional.gelu(z).numpy()
    assert got.shape == x.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= GELU_ATOL


def test_kernel_propagates_nan(library):
    x = np.array([[np.nan, 1.0, -6.0, np.nan] * 4], dtype=np.float32)
    got = _session(_bias_gelu_node_model(x.shape, 16), library).run(None, {"x": x, "bias": np.zeros(16, np.float32)})[0]
    assert np.isnan(got[0, ::4]).all() and np.isnan(got[0, 3::4]).all()
    assert np.isfinite(got[0, 1::4]).all()


def test_kernel_rejects_a_bias_of_the_wrong_size(library):
    session = _session(_bias_gelu_node_model((2, 8), 5), library)
    with pytest.raises(Exception, match=r"DATBiasGelu: bias must be 1-D with the size of x's last axis; got x \(2, 8\)"):
        session.run(None, {"x": np.zeros((2, 8), np.float32), "bias": np.zeros(5, np.float32)})


def _exported_gelu(prefix: str, x: str, out: str) -> list[onnx.NodeProto]:
    """GELU as torch's exporter writes it: x * (erf(x / sqrt 2) + 1) * 0.5."""
    return [
        helper.make_node("Div", [x, "sqrt2"], [f"{prefix}_div"]),
        helper.make_node("Erf", [f"{prefix}_div"], [f"{prefix}_erf"]),
        helper.make_node("Add", [f"{prefix}_erf", "one"], [f"{prefix}_plus1"]),
        helper.make_node("Mul", [x, f"{prefix}_plus1"], [f"{prefix}_mul"]),
        helper.make_node("Mul", [f"{prefix}_mul", "half"], [out]),
    ]


def _mlp_like_model(rng) -> onnx.ModelProto:
    """Three GELUs: after a Gemm-style bias (fused), after a bias whose sum is also a graph output (kept),
    and without a bias (kept: not DATBiasGelu's pattern)."""
    weight = rng.standard_normal((24, 40)).astype(np.float32) * 0.3
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Add", ["h", "b"], ["h_b"]),
        *_exported_gelu("g1", "h_b", "y1"),
        helper.make_node("Add", ["b", "h"], ["h_b2"]),
        *_exported_gelu("g2", "h_b2", "y2"),
        *_exported_gelu("g3", "h", "y3"),
    ]
    initializers = [
        numpy_helper.from_array(weight, "w"),
        numpy_helper.from_array(rng.standard_normal(40).astype(np.float32), "b"),
        numpy_helper.from_array(np.array(math.sqrt(2.0), np.float32), "sqrt2"),
        numpy_helper.from_array(np.array(1.0, np.float32), "one"),
        numpy_helper.from_array(np.array(0.5, np.float32), "half"),
    ]
    outputs = [helper.make_tensor_value_info(name, TensorProto.FLOAT, [None, 40]) for name in ("y1", "y2", "h_b2", "y3")]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 24])],
                              outputs, initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_rewrite_fuses_only_what_the_kernel_computes(library):
    rng = np.random.default_rng(3)
    original = _mlp_like_model(rng)
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(original)
    assert fuse_bias_gelu(rewritten) == 1
    onnx.checker.check_model(rewritten)
    ops = op_histogram(rewritten)
    assert ops["dat::DATBiasGelu"] == 1 and ops["Erf"] == 2  # g2 feeds a graph output, g3 has no bias

    x = rng.standard_normal((6, 24)).astype(np.float32) * 3
    want = _session(original, None).run(None, {"x": x})
    got = _session(rewritten, library).run(None, {"x": x})
    for a, b in zip(got, want):
        assert np.abs(a - b).max() <= GELU_ATOL * max(1.0, float(np.abs(b).max()))
    assert fuse_bias_gelu(rewritten) == 0  # nothing left to fuse


def test_backend_fuses_dat_t_mlps_and_keeps_its_logits(export_once):
    path = export_once("dat_t", flavor="plugin").onnx_path
    fused = OrtBackend(path)
    plain = OrtBackend(path, cpu_fusions=False)
    assert fused.fusions == {"DATBiasGelu": DAT_T_MLP_BLOCKS} and plain.fusions == {}
    assert op_histogram(onnx.load(str(path)))["Erf"] == DAT_T_MLP_BLOCKS + 4  # the file on disk is untouched
    x = random_case(2, 224, 224, seed=5).batch
    a, b = fused.run(x)["logits"], plain.run(x)["logits"]
    assert np.abs(a - b).max() <= 1e-5
