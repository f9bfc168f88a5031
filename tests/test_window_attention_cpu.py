"""DATWindowAttention's CPU kernel (through onnxruntime and libdat_ort_ops) against the PyTorch reference.

Each case runs one `dat` node in a tiny ONNX graph; the oracle is
dat_deploy.model.windows.window_attention_reference (roll, partition, softmax(q k^T * scale + bias) v,
reverse partition, roll back).
"""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from dat_deploy.model.attention import shift_window_mask
from dat_deploy.model.windows import window_attention_reference
from dat_deploy.native import ort_library_path

FP32_TOL = 1e-5
FP16_TOL = 2e-3
MASK = -100.0  # Swin's shift mask value
ONNX_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}


@pytest.fixture(scope="module")
def library() -> str:
    return str(ort_library_path(build=True))


def run_node(library: str, qkv: np.ndarray, bias: np.ndarray, heads: int, window: int, shift: int,
             scale: float, threads: int = 0) -> np.ndarray:
    node = helper.make_node("DATWindowAttention", ["qkv", "bias"], ["y"], domain="dat", heads=heads, window=window,
                            shift=shift, scale=float(scale))
    graph = helper.make_graph(
        [node], "one_node",
        [helper.make_tensor_value_info("qkv", ONNX_TYPES[qkv.dtype.type], None),
         helper.make_tensor_value_info("bias", ONNX_TYPES[bias.dtype.type], None)],
        [helper.make_tensor_value_info("y", ONNX_TYPES[qkv.dtype.type], None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dat", 1)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.register_custom_ops_library(library)
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"qkv": qkv, "bias": bias})[0]


def shift_mask(height: int, width: int, window: int, shift: int) -> torch.Tensor:
    """Swin's (windows, T, T) mask: 0 within a region of the shifted map, -100 across regions."""
    regions = torch.zeros(height, width)
    label = 0
    for rows in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
        for cols in (slice(0, -window), slice(-window, -shift), slice(-shift, None)):
            regions[rows, cols] = label
            label += 1
    tokens = regions.reshape(height // window, window, width // window, window).permute(0, 2, 1, 3)
    tokens = tokens.reshape(-1, window * window)
    return (tokens[:, None, :] != tokens[:, :, None]).float() * MASK


def make_inputs(batch, height, width, heads, head_dim, window, shift, per_window_bias, seed):
    g = torch.Generator().manual_seed(seed)
    channels = heads * head_dim
    tokens = window * window
    windows = (height // window) * (width // window)
    qkv = torch.randn(batch, height, width, 3 * channels, generator=g)
    bias = torch.randn(1, heads, tokens, tokens, generator=g)
    if per_window_bias:
        bias = bias.expand(windows, -1, -1, -1).clone()
        if shift:
            bias = bias + shift_mask(height, width, window, shift)[:, None]
        else:  # no shift: a different random bias per window, plus some masked entries
            bias = bias + torch.randn(windows, heads, tokens, tokens, generator=g)
            bias[torch.rand(bias.shape, generator=g) < 0.2] = MASK
    return qkv, bias


def check(library, batch, height, width, heads, head_dim, window, shift, per_window_bias, seed):
    qkv, bias = make_inputs(batch, height, width, heads, head_dim, window, shift, per_window_bias, seed)
    scale = head_dim ** -0.5
    got = run_node(library, qkv.numpy(), bias.numpy(), heads, window, shift, scale)
    want = window_attention_reference(qkv, bias, heads, window, shift, scale).numpy()
    assert got.shape == want.shape == (batch, height, width, heads * head_dim)
    np.testing.assert_allclose(got, want, rtol=0, atol=FP32_TOL)


# batch, H, W, heads, head_dim, window, shift, per-window bias (Nb = windows; with shift: Swin's mask)
CASES = [
    (1, 7, 7, 1, 32, 7, 0, False),
    (2, 14, 21, 3, 32, 7, 3, True),     # H != W, shifted, masked
    (3, 9, 15, 2, 12, 3, 1, True),      # window 3, odd head dim
    (1, 10, 5, 5, 20, 5, 2, True),      # window 5, head dim 20
    (5, 6, 4, 8, 8, 2, 1, True),        # heads 8, head dim 8
    (4, 15, 10, 4, 16, 5, 0, True),     # no shift, per-window bias with -100 entries
    (2, 8, 8, 6, 16, 4, 0, False),
    (1, 12, 12, 2, 64, 6, 5, True),     # head dim > 32, T = 36
    (1, 8, 16, 1, 3, 8, 7, True),       # T = 64 (exactly four 16-lane vectors), tiny head dim
    (2, 9, 9, 2, 5, 9, 4, False),       # T = 81, shifted with one bias for all windows
    (1, 1, 1, 2, 4, 1, 0, False),       # a 1-token window
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_matches_reference(library, case):
    check(library, *case, seed=sum(case))


# DAT-T at 224: window 7, head dim 32; stage: (H = W, heads). Stages 1-2 have shifted (S) blocks with
# shift ceil(7 / 2) = 4 (ShiftWindowAttention); stages 3-4 only plain (L) ones.
DAT_T = [(56, 3, 4), (56, 3, 0), (28, 6, 4), (28, 6, 0), (14, 12, 0), (7, 24, 0)]


@pytest.mark.parametrize("stage", DAT_T, ids=lambda s: f"{s[0]}x{s[0]}h{s[1]}s{s[2]}")
def test_dat_t_shapes(library, stage):
    size, heads, shift = stage
    if shift:  # the mask here is the model's own
        assert torch.equal(shift_mask(size, size, 7, shift), shift_window_mask(size, 7, shift))
    check(library, 1, size, size, heads, 32, 7, shift, per_window_bias=shift > 0, seed=size + shift)


@settings(max_examples=25, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.integers(1, 5), rows=st.integers(1, 3), cols=st.integers(1, 3), heads=st.integers(1, 8),
    head_dim=st.sampled_from([1, 4, 8, 12, 16, 20, 32, 33]), window=st.integers(1, 8), data=st.data(),
    per_window_bias=st.booleans(), seed=st.integers(0, 2**16),
)
def test_property(library, batch, rows, cols, heads, head_dim, window, data, per_window_bias, seed):
    shift = data.draw(st.integers(0, window - 1), label="shift")
    check(library, batch, rows * window, cols * window, heads, head_dim, window, shift, per_window_bias, seed)


@pytest.mark.parametrize("bias_dtype", [np.float32, np.float16])
def test_fp16(library, bias_dtype):
    """fp16 qkv (and output), bias fp32 or fp16; fp32 inside: error within fp16 rounding of the output."""
    qkv, bias = make_inputs(2, 14, 21, 3, 32, 7, 3, per_window_bias=True, seed=11)
    qkv16, bias16 = qkv.half(), bias.to(torch.float16 if bias_dtype == np.float16 else torch.float32)
    got = run_node(library, qkv16.numpy(), bias16.numpy(), 3, 7, 3, 32 ** -0.5)
    assert got.dtype == np.float16
    want = window_attention_reference(qkv16.float(), bias16.float(), 3, 7, 3, 32 ** -0.5).numpy()
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=FP16_TOL)


def test_fp32_qkv_fp16_bias(library):
    qkv, bias = make_inputs(1, 10, 5, 5, 20, 5, 2, per_window_bias=True, seed=5)
    bias16 = bias.half()
    got = run_node(library, qkv.numpy(), bias16.numpy(), 5, 5, 2, 0.3)
    assert got.dtype == np.float32
    want = window_attention_reference(qkv, bias16.float(), 5, 5, 2, 0.3).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=FP32_TOL)


def test_fully_masked_but_one(library):
    """Rows where all keys but one carry -100: the output is (almost exactly) that key's v."""
    batch, size, heads, head_dim, window = 1, 4, 2, 8, 4
    tokens = window * window
    qkv = torch.randn(batch, size, size, 3 * heads * head_dim)
    bias = torch.full((1, heads, tokens, tokens), MASK)
    bias[..., 5] = 0.0
    got = run_node(library, qkv.numpy(), bias.numpy(), heads, window, 0, 0.1)
    want = window_attention_reference(qkv, bias, heads, window, 0, 0.1).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=FP32_TOL)
    v = qkv[..., 2 * heads * head_dim:].reshape(batch, size * size, heads * head_dim)
    np.testing.assert_allclose(got.reshape(batch, tokens, -1), np.broadcast_to(v[:, 5:6].numpy(), (1, tokens, 16)),
                               rtol=0, atol=1e-5)


BAD_SHAPES = [
    ((1, 7, 7, 95), (1, 1, 49, 49), 1, 7, 0, r"qkv must be \(B, H, W, 3C\).*got \(1, 7, 7, 95\)"),
    ((1, 7, 7, 96), (1, 1, 49, 49), 5, 7, 0, r"C = 32 .*not divisible by heads = 5"),
    ((1, 14, 10, 96), (1, 1, 49, 49), 1, 7, 0, r"H and W must be divisible by window = 7.*\(1, 14, 10, 96\)"),
    ((1, 14, 14, 96), (3, 1, 49, 49), 1, 7, 0, r"bias must be \(Nb, heads, T, T\) = \(1 or 4, 1, 49, 49\).*got \(3, 1, 49, 49\)"),
    ((1, 7, 7, 96), (1, 2, 49, 49), 1, 7, 0, r"bias must be .*got \(1, 2, 49, 49\)"),
    ((1, 7, 7, 96), (1, 1, 49, 49), 1, 7, 7, r"shift must be in \[0, window\) = \[0, 7\), got 7"),
]


@pytest.mark.parametrize("qkv_shape, bias_shape, heads, window, shift, message", BAD_SHAPES)
def test_bad_shape_is_reported(library, qkv_shape, bias_shape, heads, window, shift, message):
    qkv = np.zeros(qkv_shape, np.float32)
    bias = np.zeros(bias_shape, np.float32)
    with pytest.raises(Exception, match="DATWindowAttention") as error:
        run_node(library, qkv, bias, heads, window, shift, 1.0)
    assert error.match(message)


def test_missing_scale_is_reported(library):
    node = helper.make_node("DATWindowAttention", ["qkv", "bias"], ["y"], domain="dat", heads=1, window=7, shift=0)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("qkv", TensorProto.FLOAT, None),
                                            helper.make_tensor_value_info("bias", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dat", 1)])
    model.ir_version = 10
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    with pytest.raises(Exception, match="DATWindowAttention: missing float attribute 'scale'"):
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        session.run(None, {"qkv": np.zeros((1, 7, 7, 96), np.float32), "bias": np.zeros((1, 1, 49, 49), np.float32)})


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_runs_on_the_sessions_thread_pool_with_identical_results(library, threads):
    """Any session thread count, including one and more threads than cores, gives the same bits (the
    kernels split their work over the session's pool; test_deform_attention_cpu checks that they start no
    pool of their own)."""
    g = torch.Generator().manual_seed(5)
    qkv = torch.randn(2, 14, 14, 3 * 48, generator=g)
    bias = torch.randn(4, 3, 49, 49, generator=g) + shift_mask(14, 14, 7, 4)[:, None]
    want = window_attention_reference(qkv, bias, 3, 7, 4, 16 ** -0.5).numpy()
    single = run_node(library, qkv.numpy(), bias.numpy(), 3, 7, 4, 16 ** -0.5, threads=1)
    got = run_node(library, qkv.numpy(), bias.numpy(), 3, 7, 4, 16 ** -0.5, threads=threads)
    np.testing.assert_array_equal(got, single)
    assert np.abs(got - want).max() <= FP32_TOL
