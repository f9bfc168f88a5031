"""DATBiasGelu and DATAddLayerNorm: the onnxruntime-only ops the CPU backend puts in place of Add(bias) + GELU
and residual Add + LayerNorm in plugin graphs (dat_deploy.runtime.ort_cpu_fusions).

The kernels against PyTorch (GELU in fp64, F.layer_norm); the graph rewrites against the graphs they rewrite,
in onnxruntime; and the backend's use of them on a whole DAT-T.
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
from dat_deploy.runtime.ort_cpu_fusions import fuse_add_layer_norm, fuse_bias_gelu

# Measured worst case over z in [-12, 12]: 9.3e-7 (negative tail, where 1 + erf cancels) and ~1 ulp where
# |GELU| > 1; see plugins/cpu/biasGeluCpu.cpp.
GELU_ATOL = 1.5e-6
DAT_T_MLP_BLOCKS = 12
DAT_T_RESIDUALS_INTO_LAYER_NORM = 21  # every residual Add but the three before a downsampling conv


@pytest.fixture(scope="module")
def library() -> str:
    return str(ort_library_path(build=True))


def _session(model: onnx.ModelProto, library: str | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if library:
        options.register_custom_ops_library(library)
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _node_model(op_type: str, inputs: dict[str, list[int]], outputs: list[str], **attributes) -> onnx.ModelProto:
    graph = helper.make_graph(
        [helper.make_node(op_type, list(inputs), outputs, domain="dat", **attributes)], op_type,
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, shape) for name, shape in inputs.items()],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in outputs])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dat", 1)])


def _bias_gelu_node_model(shape: tuple[int, ...], bias_size: int) -> onnx.ModelProto:
    return _node_model("DATBiasGelu", {"x": list(shape), "bias": [bias_size]}, ["y"])


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


def _rewrite_and_compare(original: onnx.ModelProto, fuse, expected: int, feeds: dict, library: str,
                         tolerance: float) -> onnx.ModelProto:
    """Apply `fuse` to a copy of `original`: `expected` rewrites, a valid graph, the same outputs in onnxruntime
    (within `tolerance` times the output's scale), and nothing left to rewrite. Returns the rewritten graph."""
    rewritten = onnx.ModelProto()
    rewritten.CopyFrom(original)
    assert fuse(rewritten) == expected
    onnx.checker.check_model(rewritten)
    got = _session(rewritten, library).run(None, feeds)
    for a, b in zip(got, _session(original, None).run(None, feeds)):
        assert np.abs(a - b).max() <= tolerance * max(1.0, float(np.abs(b).max()))
    assert fuse(rewritten) == 0
    return rewritten


def test_rewrite_fuses_only_what_the_kernel_computes(library):
    rng = np.random.default_rng(3)
    feeds = {"x": rng.standard_normal((6, 24)).astype(np.float32) * 3}
    rewritten = _rewrite_and_compare(_mlp_like_model(rng), fuse_bias_gelu, 1, feeds, library, GELU_ATOL)
    ops = op_histogram(rewritten)
    assert ops["dat::DATBiasGelu"] == 1 and ops["Erf"] == 2  # g2 feeds a graph output, g3 has no bias


@pytest.mark.parametrize("shape", [(1, 8), (3, 13), (2, 7, 96), (5, 768)])
def test_add_layer_norm_kernel_matches_pytorch(library, shape):
    rng = np.random.default_rng(sum(shape))
    a, b = (rng.standard_normal(shape).astype(np.float32) * 3 + 1 for _ in range(2))
    gamma, beta = (rng.standard_normal(shape[-1]).astype(np.float32) for _ in range(2))
    model = _node_model("DATAddLayerNorm", {"a": list(shape), "b": list(shape), "gamma": [shape[-1]],
                                            "beta": [shape[-1]]}, ["sum", "y"], epsilon=1e-5)
    got_sum, got_y = _session(model, library).run(None, {"a": a, "b": b, "gamma": gamma, "beta": beta})
    total = torch.from_numpy(a) + torch.from_numpy(b)
    want_y = torch.nn.functional.layer_norm(total.double(), shape[-1:], torch.from_numpy(gamma).double(),
                                            torch.from_numpy(beta).double(), eps=1e-5).numpy()
    assert np.array_equal(got_sum, total.numpy())
    assert np.abs(got_y - want_y).max() <= 2e-5 * max(1.0, float(np.abs(want_y).max()))


def test_add_layer_norm_kernel_rejects_mismatched_shapes(library):
    model = _node_model("DATAddLayerNorm", {"a": [2, 8], "b": [1, 8], "gamma": [8], "beta": [8]}, ["sum", "y"],
                        epsilon=1e-5)
    feeds = {"a": np.zeros((2, 8), np.float32), "b": np.zeros((1, 8), np.float32), "gamma": np.ones(8, np.float32),
             "beta": np.zeros(8, np.float32)}
    with pytest.raises(Exception, match=r"DATAddLayerNorm: a and b must have one shape of rank >= 1; got a \(2, 8\)"):
        _session(model, library).run(None, feeds)


def _residual_model(rng) -> onnx.ModelProto:
    """Residual Adds into LayerNorms: x + y (fused; its sum also feeds the next Add), a broadcast Add (kept: not
    the kernel's contract), one into two LayerNorms (one fuses) and one into a LayerNorm over axis 0 (kept)."""
    norm = {"gamma": rng.standard_normal(16).astype(np.float32), "beta": rng.standard_normal(16).astype(np.float32),
            "gamma2": rng.standard_normal(6).astype(np.float32), "row": rng.standard_normal(16).astype(np.float32)}
    nodes = [
        helper.make_node("Add", ["x", "y"], ["s1"]),
        helper.make_node("LayerNormalization", ["s1", "gamma", "beta"], ["n1"], axis=-1, epsilon=1e-6),
        helper.make_node("Add", ["s1", "n1"], ["s2"]),
        helper.make_node("Add", ["s2", "row"], ["s3"]),
        helper.make_node("LayerNormalization", ["s3", "gamma", "beta"], ["n3"], axis=-1),
        helper.make_node("Add", ["s2", "n3"], ["s4"]),
        helper.make_node("Add", ["x", "s4"], ["s6"]),  # one sum into two LayerNorms: one of them fuses
        helper.make_node("LayerNormalization", ["s6", "gamma", "beta"], ["n6a"], axis=-1),
        helper.make_node("LayerNormalization", ["s6", "beta", "gamma"], ["n6b"], axis=-1),
        helper.make_node("Transpose", ["s4"], ["t4"], perm=[1, 0]),
        helper.make_node("Add", ["t4", "t4"], ["s5"]),
        helper.make_node("LayerNormalization", ["s5", "gamma2", "gamma2"], ["n5"], axis=0),
    ]
    graph = helper.make_graph(
        nodes, "residuals",
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, [6, 16]) for name in ("x", "y")],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, None) for name in ("n1", "s4", "n5", "n6a", "n6b")],
        [numpy_helper.from_array(value, name) for name, value in norm.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return onnx.shape_inference.infer_shapes(model)  # the rewrite reads shapes from value_info, as exports have


def test_add_layer_norm_rewrite_fuses_only_same_shape_last_axis(library):
    rng = np.random.default_rng(4)
    original = _residual_model(rng)
    feeds = {name: rng.standard_normal((6, 16)).astype(np.float32) for name in ("x", "y")}
    ops = op_histogram(_rewrite_and_compare(original, fuse_add_layer_norm, 2, feeds, library, 1e-5))
    assert ops["dat::DATAddLayerNorm"] == 2 and ops["LayerNormalization"] == 3
    without_shapes = onnx.ModelProto()
    without_shapes.CopyFrom(original)
    del without_shapes.graph.value_info[:]
    assert fuse_add_layer_norm(without_shapes) == 0  # no shapes, no proof the Add does not broadcast


def test_backend_fuses_dat_t_and_keeps_its_logits(export_once):
    path = export_once("dat_t", flavor="plugin").onnx_path
    fused = OrtBackend(path)
    plain = OrtBackend(path, cpu_fusions=False)
    assert fused.fusions == {"DATBiasGelu": DAT_T_MLP_BLOCKS, "DATAddLayerNorm": DAT_T_RESIDUALS_INTO_LAYER_NORM}
    assert plain.fusions == {}
    assert op_histogram(onnx.load(str(path)))["Erf"] == DAT_T_MLP_BLOCKS + 4  # the file on disk is untouched
    x = random_case(2, 224, 224, seed=5).batch
    a, b = fused.run(x)["logits"], plain.run(x)["logits"]
    assert np.abs(a - b).max() <= 1e-5
