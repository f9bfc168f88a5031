"""DATBiasGelu, DATAddLayerNorm and DATGemm: the onnxruntime-only ops the CPU backend puts in place of
Add(bias) + GELU, residual Add + LayerNorm and small-weight Gemms in plugin graphs
(dat_deploy.graph.cpu_fusions).

The kernels against PyTorch (GELU in fp64, F.layer_norm) and numpy (x W^T + b in fp64); the graph rewrites
against the graphs they rewrite, in onnxruntime; and the backend's use of them on a whole DAT-T.
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
from dat_deploy.graph import cpu_fusions as ort_cpu_fusions
from dat_deploy.runtime import OrtBackend
from dat_deploy.graph.cpu_fusions import (fuse_add_layer_norm, fuse_bias_gelu, fuse_gemm_gelu, fuse_small_gemms,
                                          small_gemms_pay)

# Measured worst case over z in [-12, 12]: 1.18e-6 (2.6 ulp, where |GELU| > 1) and 1.0e-6 in the negative tail,
# where 1 + erf cancels; see plugins/cpu/geluMath.h.
GELU_ATOL = 1.5e-6
DAT_T_MLP_BLOCKS = 12
DAT_T_RESIDUALS_INTO_LAYER_NORM = 21  # every residual Add but the three before a downsampling conv
# Every Gemm but stage 4's qkv, fc1, fc2 and (768, 768) projections (7), the head and the 4 offset projections (N 2)
DAT_T_SMALL_GEMMS = 46
DAT_T_GEMM_GELUS = 10  # the MLPs' first Gemms in stages 1-3 (stage 4's stays a Gemm, so its DATBiasGelu stays)


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
    folded = DAT_T_GEMM_GELUS if small_gemms_pay() else 0
    assert fused.fusions == {"DATBiasGelu": DAT_T_MLP_BLOCKS - folded,
                             "DATAddLayerNorm": DAT_T_RESIDUALS_INTO_LAYER_NORM,
                             "DATGemm": DAT_T_SMALL_GEMMS if small_gemms_pay() else 0, "DATGemm+GELU": folded}
    assert plain.fusions == {}
    assert op_histogram(onnx.load(str(path)))["Erf"] == DAT_T_MLP_BLOCKS + 4  # the file on disk is untouched
    x = random_case(2, 224, 224, seed=5).batch
    a, b = fused.run(x)["logits"], plain.run(x)["logits"]
    assert np.abs(a - b).max() <= 1e-5


def _gemm_node_model(x_shape: list[int], weight: np.ndarray, bias: np.ndarray, weight_as_input: bool = False,
                     **attributes):
    """One DATGemm; the weight an initializer (the op's contract) or, to test the error, a graph input."""
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape)]
    initializers = [numpy_helper.from_array(bias, "bias")]
    if weight_as_input:
        inputs.append(helper.make_tensor_value_info("w", TensorProto.FLOAT, list(weight.shape)))
    else:
        initializers.append(numpy_helper.from_array(weight, "w"))
    graph = helper.make_graph([helper.make_node("DATGemm", ["x", "w", "bias"], ["y"], domain="dat", **attributes)],
                              "gemm", inputs,
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializers)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dat", 1)])


# Rows not a multiple of the 6-row tile, columns not of the 16/32-wide panel, K over one (300, 513: two and three)
# 256-deep block, and a 3-D x.
@pytest.mark.parametrize("x_shape, n", [([1, 32], 32), ([7, 40], 33), ([13, 300], 48), ([50, 513], 70),
                                        ([2, 5, 96], 96), ([61, 96], 288)])
def test_gemm_kernel_matches_numpy(library, x_shape, n):
    rng = np.random.default_rng(n + x_shape[-1])
    k = x_shape[-1]
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = (rng.standard_normal((n, k)) / math.sqrt(k)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    got = _session(_gemm_node_model(x_shape, weight, bias), library).run(None, {"x": x})[0]
    want = x.astype(np.float64) @ weight.T.astype(np.float64) + bias
    assert got.shape == (*x_shape[:-1], n)
    assert np.abs(got - want).max() <= 1e-5


@pytest.mark.parametrize("x_shape, n", [([7, 40], 33), ([50, 513], 70), ([2, 5, 96], 384)])
def test_gemm_kernel_with_gelu_matches_gelu_of_the_product(library, x_shape, n):
    rng = np.random.default_rng(n)
    k = x_shape[-1]
    x = rng.standard_normal(x_shape).astype(np.float32)
    weight = (rng.standard_normal((n, k)) * 3 / math.sqrt(k)).astype(np.float32)  # z well into both GELU tails
    bias = rng.standard_normal(n).astype(np.float32)
    got = _session(_gemm_node_model(x_shape, weight, bias, gelu=1), library).run(None, {"x": x})[0]
    z = torch.from_numpy(x.astype(np.float64) @ weight.T.astype(np.float64) + bias)
    want = torch.nn.functional.gelu(z).numpy()
    assert np.abs(z.numpy()).max() > 5  # the tails are exercised
    assert np.abs(got - want).max() <= GELU_ATOL + 1e-5 * max(1.0, float(np.abs(want).max()))


def test_gemm_kernel_rejects_a_gelu_attribute_other_than_0_or_1(library):
    model = _gemm_node_model([4, 32], np.ones((32, 32), np.float32), np.zeros(32, np.float32), gelu=2)
    with pytest.raises(Exception, match="DATGemm: attribute gelu must be 0 or 1, got 2"):
        _session(model, library)


def test_gemm_kernel_rejects_x_of_the_wrong_width(library):
    session = _session(_gemm_node_model([None, None], np.ones((32, 16), np.float32), np.zeros(32, np.float32)), library)
    with pytest.raises(Exception, match=r"DATGemm: x's last axis must be the weight's K = 16; got x \(3, 8\)"):
        session.run(None, {"x": np.zeros((3, 8), np.float32)})


def test_gemm_needs_a_constant_weight(library):
    # DATGemm packs its weight when the session is made; a weight fed at run time cannot be packed then
    model = _gemm_node_model([4, 16], np.ones((32, 16), np.float32), np.zeros(32, np.float32), weight_as_input=True)
    with pytest.raises(Exception, match="DATGemm: the weight \\(input 1\\) must be a constant initializer"):
        _session(model, library)


def _gemms_model(rng) -> onnx.ModelProto:
    """Gemms the rewrite takes (with a bias; without one) and ones it leaves: a weight over GEMM_MAX_WEIGHTS
    (patched small), one not transposed, one fed at run time, one too narrow, one with a broadcast bias, and an
    initializer that is also a graph input (a feed may override it)."""
    def weight(n, k):
        return (rng.standard_normal((n, k)) / math.sqrt(k)).astype(np.float32)

    initializers = {"w1": weight(48, 40), "b1": rng.standard_normal(48).astype(np.float32), "w2": weight(40, 48),
                    "w_big": weight(64, 40), "w_plain": weight(48, 40).T.copy(), "w_narrow": weight(8, 40),
                    "b_row": rng.standard_normal((1, 48)).astype(np.float32), "w_default": weight(48, 40)}
    nodes = [
        helper.make_node("Gemm", ["x", "w1", "b1"], ["h1"], transB=1),  # fused
        helper.make_node("Gemm", ["h1", "w2"], ["h2"], transB=1),  # fused, with a zero bias
        helper.make_node("Gemm", ["h2", "w_big"], ["y_big"], transB=1),
        helper.make_node("Gemm", ["h2", "w_plain"], ["y_plain"]),
        helper.make_node("Gemm", ["h2", "w_fed"], ["y_fed"], transB=1),
        helper.make_node("Gemm", ["h2", "w_narrow"], ["y_narrow"], transB=1),
        helper.make_node("Gemm", ["h2", "w1", "b_row"], ["y_row"], transB=1),
        helper.make_node("Gemm", ["h2", "w_default"], ["y_default"], transB=1),
    ]
    graph = helper.make_graph(
        nodes, "gemms",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["rows", 40]),
         helper.make_tensor_value_info("w_fed", TensorProto.FLOAT, [48, 40]),
         helper.make_tensor_value_info("w_default", TensorProto.FLOAT, [48, 40])],
        [helper.make_tensor_value_info(name, TensorProto.FLOAT, ["rows", width])
         for name, width in (("y_big", 64), ("y_plain", 48), ("y_fed", 48), ("y_narrow", 8), ("y_row", 48),
                             ("y_default", 48))],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    return onnx.shape_inference.infer_shapes(model)


def test_small_gemm_rewrite_takes_only_what_the_kernel_computes(library, monkeypatch):
    monkeypatch.setattr(ort_cpu_fusions, "GEMM_MAX_WEIGHTS", 2000)  # w1 and w2 are 1920, w_big 2560
    rng = np.random.default_rng(6)
    feeds = {"x": rng.standard_normal((9, 40)).astype(np.float32), "w_fed": rng.standard_normal((48, 40)).astype(np.float32)}
    rewritten = _rewrite_and_compare(_gemms_model(rng), fuse_small_gemms, 2, feeds, library, 1e-5)
    ops = op_histogram(rewritten)
    assert ops["dat::DATGemm"] == 2 and ops["Gemm"] == 6


def test_small_gemms_pay_only_where_measured(monkeypatch, tmp_path):
    import platform

    cpuinfo = tmp_path / "cpuinfo"
    monkeypatch.setattr(ort_cpu_fusions, "Path", lambda _: cpuinfo)
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    for flags, pays in (("fpu sse2 avx avx2 fma f16c", True), ("avx2 fma avx512f avx512bw", False), ("sse2 avx", False)):
        cpuinfo.write_text(f"processor\t: 0\nflags\t\t: {flags}\n")
        assert ort_cpu_fusions.small_gemms_pay() is pays
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    assert not ort_cpu_fusions.small_gemms_pay()


def test_small_gemms_pay_follows_the_op_librarys_layer_where_the_session_runs():
    from dat_deploy.native.cpu_layer import CpuLayer

    assert ort_cpu_fusions.small_gemms_pay(CpuLayer("avx2", "CPUID", ("portable", "avx2")))
    # forced down to avx2 on an AVX-512 CPU, the portable layer, a refused layer: onnxruntime's own Gemm
    assert not ort_cpu_fusions.small_gemms_pay(CpuLayer("avx2", "forced", ("portable", "avx2", "avx512")))
    assert not ort_cpu_fusions.small_gemms_pay(CpuLayer("avx512", "CPUID", ("portable", "avx2", "avx512")))
    assert not ort_cpu_fusions.small_gemms_pay(CpuLayer("portable", "CPUID", ("portable",)))
    assert not ort_cpu_fusions.small_gemms_pay(CpuLayer("", "refused", ("portable",)))


def test_a_portable_graph_gets_no_cpu_dependent_rewrite(monkeypatch):
    """What ships to other machines (a Triton repository) must not carry DATGemm, even from a CPU where it pays;
    a session made here still gets it."""
    monkeypatch.setattr(ort_cpu_fusions, "GEMM_MAX_WEIGHTS", 2000)
    monkeypatch.setattr(ort_cpu_fusions, "small_gemms_pay", lambda layer=None: True)
    rng = np.random.default_rng(6)
    shipped = _gemms_model(rng)
    assert ort_cpu_fusions.optimize_for_cpu(shipped, portable=True)["DATGemm"] == 0
    assert "dat::DATGemm" not in op_histogram(shipped)
    assert ort_cpu_fusions.optimize_for_cpu(_gemms_model(np.random.default_rng(6)))["DATGemm"] == 2


def _gemm_gelu_model(rng) -> onnx.ModelProto:
    """nn.Linear + GELU as the exporter writes them for a 3-D x (Reshape, Gemm without bias, Reshape back, Add
    bias, GELU: folded), the same with the Gemm's own bias (kept), and with a Reshape that changes the last axis
    (kept)."""
    def weight(n, k):
        return (rng.standard_normal((n, k)) * 2 / math.sqrt(k)).astype(np.float32)

    initializers = {"w1": weight(48, 40), "w2": weight(48, 40), "w3": weight(48, 40),
                    "gemm_bias": rng.standard_normal(48).astype(np.float32), "b": rng.standard_normal(48).astype(np.float32),
                    "b96": rng.standard_normal(96).astype(np.float32), "flat": np.array([-1, 40], np.int64),
                    "back": np.array([2, -1, 48], np.int64), "halve": np.array([2, -1, 96], np.int64),
                    "sqrt2": np.array(math.sqrt(2.0), np.float32), "one": np.array(1.0, np.float32),
                    "half": np.array(0.5, np.float32)}
    nodes = [helper.make_node("Reshape", ["x", "flat"], ["x2"])]
    for name, w, gemm_bias, shape, bias in (("a", "w1", None, "back", "b"), ("b", "w2", "gemm_bias", "back", "b"),
                                            ("c", "w3", None, "halve", "b96")):
        nodes += [helper.make_node("Gemm", ["x2", w] + ([gemm_bias] if gemm_bias else []), [f"{name}_gemm"], transB=1),
                  helper.make_node("Reshape", [f"{name}_gemm", shape], [f"{name}_3d"]),
                  helper.make_node("Add", [f"{name}_3d", bias], [f"{name}_pre"]),
                  *_exported_gelu(name, f"{name}_pre", f"y_{name}")]
    graph = helper.make_graph(
        nodes, "linear_gelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 6, 40])],
        [helper.make_tensor_value_info(f"y_{name}", TensorProto.FLOAT, [2, None, width])
         for name, width in (("a", 48), ("b", 48), ("c", 96))],
        [numpy_helper.from_array(value, name) for name, value in initializers.items()])
    return onnx.shape_inference.infer_shapes(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))


def test_gemm_gelu_fold_takes_only_a_bias_free_gemm_and_a_last_axis_reshape(library):
    rng = np.random.default_rng(11)
    original = _gemm_gelu_model(rng)
    fused = onnx.ModelProto()
    fused.CopyFrom(original)
    assert fuse_bias_gelu(fused) == 3 and fuse_small_gemms(fused) == 3
    feeds = {"x": rng.standard_normal((2, 6, 40)).astype(np.float32)}
    folded = onnx.ModelProto()
    folded.CopyFrom(fused)
    assert fuse_gemm_gelu(folded) == 1
    onnx.checker.check_model(folded)
    got = dict(zip(("y_a", "y_b", "y_c"), _session(folded, library).run(["y_a", "y_b", "y_c"], feeds)))
    for a, b in zip(got.values(), _session(original, None).run(["y_a", "y_b", "y_c"], feeds)):
        assert np.abs(a - b).max() <= 1e-5 * max(1.0, float(np.abs(b).max()))
    assert fuse_gemm_gelu(folded) == 0
    ops = op_histogram(folded)
    assert ops["dat::DATGemm"] == 3 and ops["dat::DATBiasGelu"] == 2
    (gemm,) = [n for n in folded.graph.node if any(a.name == "gelu" for a in n.attribute)]
    assert list(gemm.input) == ["x2", "w1", "b"]  # the GELU's bias, the zero bias gone
    assert not any(i.name.endswith("_DATGemm_zero_bias") and i.name.startswith("w1") for i in folded.graph.initializer)
    # and against GELU in fp64, not only against the graph it rewrote
    z = feeds["x"].reshape(-1, 40).astype(np.float64) @ numpy_helper.to_array(
        next(i for i in original.graph.initializer if i.name == "w1")).T.astype(np.float64)
    z += numpy_helper.to_array(next(i for i in original.graph.initializer if i.name == "b"))
    want = torch.nn.functional.gelu(torch.from_numpy(z)).numpy().reshape(2, 6, 48)
    assert np.abs(got["y_a"] - want).max() <= GELU_ATOL + 1e-5
