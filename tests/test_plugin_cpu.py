"""The CPU kernels (through onnxruntime and libdat_ort_ops) against F.grid_sample and the reference bias.

Each case runs one `dat` node in a tiny ONNX graph; the oracle is dat_deploy.model.sampling's reference
implementation, i.e. F.grid_sample(align_corners=True, padding_mode='zeros').
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from dat_deploy.model import sampling
from dat_deploy.native import ort_library_path

FP32_TOL = 1e-5
CONVENTION_CODES = {"dat": 0, "dat_pp": 1}
ONNX_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


@pytest.fixture(scope="module")
def library() -> str:
    return str(ort_library_path(build=True))


def run_node(library: str, op_type: str, inputs: dict[str, np.ndarray], **attributes) -> np.ndarray:
    """Run one dat node; input names are the node's inputs in order."""
    node = helper.make_node(op_type, list(inputs), ["y"], domain="dat", **attributes)
    graph = helper.make_graph(
        [node], "one_node",
        [helper.make_tensor_value_info(name, ONNX_TYPES[value.dtype.type], None) for name, value in inputs.items()],
        [helper.make_tensor_value_info("y", ONNX_TYPES[next(iter(inputs.values())).dtype.type], None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dat", 1)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, inputs)[0]


def random_pos(generator: torch.Generator, n: int, key_h: int, key_w: int, spread: float = 1.4) -> torch.Tensor:
    """Points in [-spread, spread], so some fall outside [-1, 1]; a few land exactly on the borders."""
    pos = (torch.rand(n, key_h, key_w, 2, generator=generator) * 2 - 1) * spread
    flat = pos.view(-1)
    borders = torch.tensor([-1.0, 1.0, -1.0, 1.0, 0.0])
    flat[: min(len(flat), len(borders))] = borders[: min(len(flat), len(borders))]
    return pos


def check_deform_sample(library, batch, channels_per_group, height, width, groups, key_h, key_w, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, channels_per_group * groups, height, width, generator=g)
    pos = random_pos(g, batch * groups, key_h, key_w)
    got = run_node(library, "DATDeformSample", {"x": x.numpy(), "pos": pos.numpy()}, groups=groups)
    want = sampling.deform_sample_reference(x, pos, groups).numpy()
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=0, atol=FP32_TOL)


def check_rel_pos_bias(library, batch, heads_per_group, table_h, table_w, groups, key_h, key_w, query_h, query_w,
                       convention, seed):
    g = torch.Generator().manual_seed(seed)
    table = torch.randn(heads_per_group * groups, table_h, table_w, generator=g)
    pos = random_pos(g, batch * groups, key_h, key_w)
    x = torch.zeros(batch, 3, query_h, query_w)  # only its shape matters
    got = run_node(library, "DATRelPosBias", {"table": table.numpy(), "pos": pos.numpy(), "x": x.numpy()},
                   groups=groups, convention=CONVENTION_CODES[convention])
    want = sampling.rel_pos_bias_reference(table, pos, x, groups, convention).numpy()
    assert got.shape == want.shape == (batch * heads_per_group * groups, query_h * query_w, key_h * key_w)
    np.testing.assert_allclose(got, want, rtol=0, atol=FP32_TOL)


# batch, channels/group, H, W, groups, Hk, Wk: odd sizes, Hk != Wk, groups 1..8, batch 1..5,
# channel counts on both sides of the kernel's 64-channel block.
DEFORM_CASES = [
    (1, 4, 7, 7, 1, 7, 7),
    (2, 3, 5, 9, 2, 3, 6),
    (3, 16, 14, 14, 3, 14, 14),
    (5, 8, 11, 6, 4, 4, 9),
    (4, 2, 3, 13, 5, 5, 2),
    (2, 70, 7, 5, 6, 3, 3),
    (1, 1, 1, 1, 7, 2, 3),
    (3, 5, 8, 8, 8, 1, 5),
    (2, 8, 21, 24, 2, 3, 4),  # few points on a large map: the direct-gather path (DAT++ stage 1 style)
]


@pytest.mark.parametrize("case", DEFORM_CASES, ids=lambda c: "x".join(map(str, c)))
def test_deform_sample_matches_grid_sample(library, case):
    check_deform_sample(library, *case, seed=sum(case))


# batch, heads/group, Th, Tw, groups, Hk, Wk, H, W
BIAS_CASES = [
    (1, 2, 13, 13, 1, 7, 7, 14, 14),
    (2, 4, 27, 27, 3, 7, 7, 14, 14),
    (3, 1, 9, 11, 2, 3, 5, 5, 6),
    (5, 3, 13, 7, 4, 4, 2, 7, 3),
    (1, 2, 5, 5, 8, 2, 3, 3, 4),
    (4, 1, 111, 111, 1, 7, 7, 9, 13),
]


@pytest.mark.parametrize("convention", ["dat", "dat_pp"])
@pytest.mark.parametrize("case", BIAS_CASES, ids=lambda c: "x".join(map(str, c)))
def test_rel_pos_bias_matches_reference(library, case, convention):
    check_rel_pos_bias(library, *case, convention=convention, seed=sum(case))


@settings(max_examples=30, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.integers(1, 5), channels_per_group=st.integers(1, 9), height=st.integers(1, 12), width=st.integers(1, 12),
    groups=st.integers(1, 8), key_h=st.integers(1, 8), key_w=st.integers(1, 8), seed=st.integers(0, 2**16),
)
def test_deform_sample_property(library, batch, channels_per_group, height, width, groups, key_h, key_w, seed):
    check_deform_sample(library, batch, channels_per_group, height, width, groups, key_h, key_w, seed)


@settings(max_examples=30, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.integers(1, 5), heads_per_group=st.integers(1, 4), table_h=st.integers(2, 15), table_w=st.integers(2, 15),
    groups=st.integers(1, 8), key_h=st.integers(1, 6), key_w=st.integers(1, 6), query_h=st.integers(2, 9),
    query_w=st.integers(2, 9), convention=st.sampled_from(["dat", "dat_pp"]), seed=st.integers(0, 2**16),
)
def test_rel_pos_bias_property(library, batch, heads_per_group, table_h, table_w, groups, key_h, key_w, query_h,
                               query_w, convention, seed):
    check_rel_pos_bias(library, batch, heads_per_group, table_h, table_w, groups, key_h, key_w, query_h, query_w,
                       convention, seed)


def test_points_outside_give_zero(library):
    """Far outside [-1, 1] (and one corner out) every tap is padding: exactly zero."""
    x = torch.randn(1, 2, 4, 5)
    pos = torch.tensor([[[[5.0, 0.0], [0.0, -7.0], [-1.0001 - 2 / 3, 0.0], [1e30, -1e30]]]])
    got = run_node(library, "DATDeformSample", {"x": x.numpy(), "pos": pos.numpy()}, groups=1)
    assert np.array_equal(got, np.zeros((1, 2, 1, 4), dtype=np.float32))


@pytest.mark.parametrize("pos_dtype", [torch.float32, torch.float16])
def test_fp16_data(library, pos_dtype):
    """fp16 tensors, fp32 coordinates inside: error within fp16 rounding of the output."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 12, 9, 7, generator=g).half()
    table = torch.randn(6, 13, 13, generator=g).half()
    pos = random_pos(g, 2 * 3, 4, 5).to(pos_dtype)
    got = run_node(library, "DATDeformSample", {"x": x.numpy(), "pos": pos.numpy()}, groups=3)
    assert got.dtype == np.float16
    want = sampling.deform_sample_reference(x.float(), pos.float(), 3).numpy()
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=4e-3)
    got = run_node(library, "DATRelPosBias", {"table": table.numpy(), "pos": pos.numpy(), "x": x.numpy()},
                   groups=3, convention=1)
    assert got.dtype == np.float16
    want = sampling.rel_pos_bias_reference(table.float(), pos.float(), x.float(), 3, "dat_pp").numpy()
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=4e-3)


def test_bad_pos_shape_is_reported(library):
    x = np.zeros((2, 4, 5, 5), np.float32)
    pos = np.zeros((3, 2, 2, 2), np.float32)  # should be (B * groups = 4, ...)
    with pytest.raises(Exception, match=r"pos must be \(B\*groups, Hk, Wk, 2\)"):
        run_node(library, "DATDeformSample", {"x": x, "pos": pos}, groups=2)


def test_missing_attribute_is_reported(library):
    with pytest.raises(Exception, match="convention"):
        run_node(library, "DATRelPosBias", {"table": np.zeros((2, 3, 3), np.float32),
                                            "pos": np.zeros((1, 2, 2, 2), np.float32),
                                            "x": np.zeros((1, 1, 2, 2), np.float32)}, groups=1)


def test_unregistered_library_fails_cleanly():
    """Without the library, onnxruntime refuses the graph (the runtime registers it automatically)."""
    node = helper.make_node("DATDeformSample", ["x", "pos"], ["y"], domain="dat", groups=1)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
                                            helper.make_tensor_value_info("pos", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dat", 1)])
    model.ir_version = 10
    with pytest.raises(Exception, match="DATDeformSample"):
        ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
