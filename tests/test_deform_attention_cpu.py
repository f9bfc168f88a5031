"""DATDeformAttention's CPU kernel (through onnxruntime and libdat_ort_ops) against the PyTorch reference.

Each case runs one `dat` node in a tiny ONNX graph; the oracle is
dat_deploy.model.deformable.deformable_attention_reference (softmax(q k^T * scale + rel-pos bias) v, the bias
being DATRelPosBias's: the table sampled at the query-to-key displacements).
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from dat_deploy.model.deformable import deformable_attention_reference
from dat_deploy.native import ort_library_path

FP32_TOL = 1e-5
FP16_TOL = 2e-3
ONNX_TYPES = {np.float32: TensorProto.FLOAT, np.float16: TensorProto.FLOAT16}
CONVENTIONS = {"dat": 0, "dat_pp": 1}
NAMES = ["q", "k", "v", "table", "pos"]


@pytest.fixture(scope="module")
def library() -> str:
    return str(ort_library_path(build=True))


def make_model(dtypes: dict[str, type], **attributes) -> bytes:
    node = helper.make_node("DATDeformAttention", NAMES, ["y"], domain="dat", **attributes)
    graph = helper.make_graph(
        [node], "one_node",
        [helper.make_tensor_value_info(name, ONNX_TYPES[dtypes[name]], None) for name in NAMES],
        [helper.make_tensor_value_info("y", ONNX_TYPES[dtypes["q"]], None)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("dat", 1)])
    model.ir_version = 10
    return model.SerializeToString()


def run_node(library: str, feeds: dict[str, np.ndarray], heads: int, groups: int, convention: int,
             scale: float) -> np.ndarray:
    model = make_model({name: array.dtype.type for name, array in feeds.items()}, heads=heads, groups=groups,
                       convention=convention, scale=float(scale))
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
    return session.run(None, feeds)[0]


def make_inputs(batch, height, width, heads, head_dim, groups, key_h, key_w, table_h, table_w, seed, spread=1.3):
    """Random q, k, v, table and pos; pos uniform in [-spread, spread] (outside [-1, 1] for spread > 1)."""
    g = torch.Generator().manual_seed(seed)
    channels = heads * head_dim
    keys = key_h * key_w
    return {
        "q": torch.randn(batch, height, width, channels, generator=g),
        "k": torch.randn(batch, keys, channels, generator=g),
        "v": torch.randn(batch, keys, channels, generator=g),
        "table": torch.randn(heads, table_h, table_w, generator=g),
        "pos": (torch.rand(batch * groups, key_h, key_w, 2, generator=g) * 2 - 1) * spread,
    }


def check(library, batch, height, width, heads, head_dim, groups, key_h, key_w, table_h, table_w, convention, seed,
          tol=FP32_TOL):
    inputs = make_inputs(batch, height, width, heads, head_dim, groups, key_h, key_w, table_h, table_w, seed)
    scale = head_dim ** -0.5
    got = run_node(library, {n: t.numpy() for n, t in inputs.items()}, heads, groups, CONVENTIONS[convention], scale)
    want = deformable_attention_reference(*(inputs[n] for n in NAMES), heads, groups, convention, scale).numpy()
    assert got.shape == want.shape == (batch, height, width, heads * head_dim)
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    return float(np.abs(got - want).max())


# batch, H, W, heads, head_dim, groups, Hk, Wk, Th, Tw, convention
CASES = [
    (1, 7, 7, 1, 32, 1, 7, 7, 13, 13, "dat"),
    (2, 9, 5, 4, 32, 2, 3, 5, 17, 9, "dat_pp"),     # H != W, Hk != Wk, odd sizes
    (3, 6, 11, 6, 12, 3, 4, 7, 11, 21, "dat"),      # odd head dim, Th != Tw
    (5, 4, 4, 8, 8, 8, 2, 3, 7, 7, "dat_pp"),       # 8 groups of one head, batch 5
    (1, 13, 3, 4, 20, 1, 5, 5, 25, 5, "dat"),       # one group of four heads, head dim 20
    (2, 5, 6, 8, 8, 2, 2, 3, 9, 11, "dat"),         # two groups of four heads, fewer keys than a vector
    (2, 5, 8, 2, 64, 2, 4, 4, 9, 15, "dat_pp"),     # head dim > 32, Nk = 16 (one 16-lane vector)
    (1, 3, 3, 3, 3, 1, 8, 8, 5, 5, "dat"),          # Nk = 64 (exactly four vectors), tiny head dim
    (4, 2, 3, 4, 16, 4, 1, 1, 3, 3, "dat_pp"),      # one key
    (1, 1, 1, 2, 4, 2, 3, 2, 2, 2, "dat"),          # one query
    (2, 1, 7, 2, 32, 1, 6, 9, 1, 1, "dat"),         # one query row, 1x1 table
    (1, 33, 17, 2, 32, 1, 7, 7, 65, 33, "dat_pp"),  # more queries than one block, uneven last block
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "x".join(map(str, c)))
def test_matches_reference(library, case):
    check(library, *case, seed=sum(c for c in case if isinstance(c, int)))


# (name, size, channels, heads, groups, keys, table, convention): DAT-T stages 3-4, DAT++-T stages 1-4 at 224.
STAGES = [
    ("DAT-T s3", 14, 384, 12, 3, 14, 27, "dat"),
    ("DAT-T s4", 7, 768, 24, 6, 7, 13, "dat"),
    ("DAT++-T s1", 56, 64, 2, 1, 7, 111, "dat_pp"),
    ("DAT++-T s2", 28, 128, 4, 2, 7, 55, "dat_pp"),
    ("DAT++-T s3", 14, 256, 8, 4, 7, 27, "dat_pp"),
    ("DAT++-T s4", 7, 512, 16, 8, 7, 13, "dat_pp"),
]


@pytest.mark.parametrize("stage", STAGES, ids=lambda s: s[0].replace(" ", "_"))
def test_model_stage_shapes(library, stage):
    _, size, channels, heads, groups, keys, table, convention = stage
    check(library, 1, size, size, heads, channels // heads, groups, keys, keys, table, table, convention,
          seed=size + heads)


@settings(max_examples=30, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    batch=st.integers(1, 5), height=st.integers(1, 12), width=st.integers(1, 12), groups=st.integers(1, 8),
    heads_per_group=st.integers(1, 4), head_dim=st.sampled_from([1, 4, 8, 12, 16, 20, 32, 33]),
    key_h=st.integers(1, 9), key_w=st.integers(1, 9), table_h=st.integers(1, 30), table_w=st.integers(1, 30),
    convention=st.sampled_from(["dat", "dat_pp"]), seed=st.integers(0, 2**16),
)
# The 30 derandomized draws never reach 4 heads per group (the AVX2 group-bias path): two fixed examples do,
# with whole 8-key vectors plus a tail, and with a tail only.
@example(batch=2, height=5, width=7, groups=2, heads_per_group=4, head_dim=12, key_h=3, key_w=5, table_h=9,
         table_w=11, convention="dat", seed=7)
@example(batch=1, height=6, width=6, groups=1, heads_per_group=4, head_dim=8, key_h=1, key_w=7, table_h=11,
         table_w=11, convention="dat_pp", seed=11)
def test_property(library, batch, height, width, groups, heads_per_group, head_dim, key_h, key_w, table_h, table_w,
                  convention, seed):
    if convention == "dat_pp" and (height == 1 or width == 1):  # DAT++'s grid divides by (size - 1)
        height, width = max(height, 2), max(width, 2)
    check(library, batch, height, width, groups * heads_per_group, head_dim, groups, key_h, key_w, table_h, table_w,
          convention, seed)


def test_positions_far_outside(library):
    """Keys far outside the map (bias taps all outside the table: zero bias) and NaN-free clamping."""
    inputs = make_inputs(2, 6, 5, 4, 16, 2, 3, 4, 9, 9, seed=3, spread=40.0)
    got = run_node(library, {n: t.numpy() for n, t in inputs.items()}, 4, 2, 0, 0.25)
    want = deformable_attention_reference(*(inputs[n] for n in NAMES), 4, 2, "dat", 0.25).numpy()
    np.testing.assert_allclose(got, want, rtol=0, atol=FP32_TOL)


def test_large_logits(library):
    """Peaked softmax (large scale, large bias; logits spread over hundreds, so many terms fall below the kernel's
    exp(-64) cutoff): as close to a float64 reference as PyTorch's fp32 reference is (logits ~300 carry fp32
    rounding errors of ~3e-5, so the fixed 1e-5 bound does not apply)."""
    inputs = make_inputs(1, 7, 7, 2, 32, 1, 7, 7, 13, 13, seed=9)
    inputs["table"] = inputs["table"] * 50
    got = run_node(library, {n: t.numpy() for n, t in inputs.items()}, 2, 1, 1, 3.0)
    want64 = deformable_attention_reference(*(inputs[n].double() for n in NAMES), 2, 1, "dat_pp", 3.0).numpy()
    want32 = deformable_attention_reference(*(inputs[n] for n in NAMES), 2, 1, "dat_pp", 3.0).numpy()
    torch_error = float(np.abs(want32 - want64).max())
    assert float(np.abs(got - want64).max()) <= max(FP32_TOL, 1.5 * torch_error)


@pytest.mark.parametrize("table_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("pos_dtype", [np.float32, np.float16])
@pytest.mark.parametrize("data_dtype", [np.float32, np.float16])
def test_dtypes(library, data_dtype, table_dtype, pos_dtype):
    """Every (data, table, pos) dtype triple; fp32 inside, so the error is that of the fp16 rounding of the output
    (fp16 data) or none (fp32 data, the reference fed the same fp16-rounded table / pos)."""
    inputs = make_inputs(2, 9, 5, 4, 32, 2, 3, 5, 17, 9, seed=11)
    types = {"q": data_dtype, "k": data_dtype, "v": data_dtype, "table": table_dtype, "pos": pos_dtype}
    feeds = {n: t.numpy().astype(types[n]) for n, t in inputs.items()}
    got = run_node(library, feeds, 4, 2, 1, 32 ** -0.5)
    assert got.dtype == data_dtype
    want = deformable_attention_reference(*(torch.from_numpy(feeds[n]).float() for n in NAMES), 4, 2, "dat_pp",
                                          32 ** -0.5).numpy()
    tol = FP16_TOL if data_dtype == np.float16 else FP32_TOL
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=tol)


def test_fp16_odd_head_dim(library):
    inputs = make_inputs(1, 6, 11, 6, 12, 3, 4, 7, 11, 21, seed=4)
    feeds = {n: t.numpy().astype(np.float16) for n, t in inputs.items()}
    got = run_node(library, feeds, 6, 3, 0, 0.3)
    want = deformable_attention_reference(*(torch.from_numpy(feeds[n]).float() for n in NAMES), 6, 3, "dat",
                                          0.3).numpy()
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=0, atol=FP16_TOL)


# q, k, v, table, pos shapes; heads, groups, convention; expected message
BAD = [
    ((1, 49, 64), (1, 49, 64), (1, 49, 64), (2, 13, 13), (1, 7, 7, 2), 2, 1, 0,
     r"q must be \(B, H, W, C\) \(rank 4\); got \(1, 49, 64\)"),
    ((1, 7, 7, 64), (1, 49, 64), (1, 49, 64), (3, 13, 13), (1, 7, 7, 2), 3, 1, 0,
     r"C = 64 .*not divisible by heads = 3"),
    ((1, 7, 7, 64), (1, 49, 64), (1, 49, 64), (2, 13, 13), (1, 7, 7, 2), 2, 2, 0,
     r"pos must be \(B\*groups, Hk, Wk, 2\) = \(2, Hk, Wk, 2\).*got \(1, 7, 7, 2\)"),
    ((1, 7, 7, 64), (1, 49, 64), (1, 49, 64), (2, 13, 13), (1, 7, 7, 3), 2, 1, 0,
     r"pos must be .*got \(1, 7, 7, 3\)"),
    ((1, 7, 7, 64), (1, 48, 64), (1, 49, 64), (2, 13, 13), (1, 7, 7, 2), 2, 1, 0,
     r"k must be \(B, Nk, C\) = \(1, 49, 64\).*got \(1, 48, 64\)"),
    ((2, 7, 7, 64), (2, 49, 64), (1, 49, 64), (2, 13, 13), (2, 7, 7, 2), 2, 1, 0,
     r"v must be \(B, Nk, C\) = \(2, 49, 64\).*got \(1, 49, 64\)"),
    ((1, 7, 7, 64), (1, 49, 64), (1, 49, 32), (2, 13, 13), (1, 7, 7, 2), 2, 1, 0,
     r"v must be .*got \(1, 49, 32\)"),
    ((1, 7, 7, 64), (1, 49, 64), (1, 49, 64), (4, 13, 13), (1, 7, 7, 2), 2, 1, 0,
     r"table must be \(heads, Th, Tw\) = \(2, Th, Tw\).*got \(4, 13, 13\)"),
    ((1, 7, 7, 64), (1, 49, 64), (1, 49, 64), (2, 169), (1, 7, 7, 2), 2, 1, 0,
     r"table must be .*got \(2, 169\)"),
    ((1, 7, 7, 64), (1, 49, 64), (1, 49, 64), (4, 13, 13), (3, 7, 7, 2), 4, 3, 0,
     r"groups = 3 must divide heads = 4"),
    ((1, 7, 7, 64), (1, 49, 64), (1, 49, 64), (2, 13, 13), (1, 7, 7, 2), 2, 1, 2,
     r"convention must be 0 \(DAT\) or 1 \(DAT\+\+\), got 2"),
    ((1, 7, 7, 64), (1, 49, 64), (1, 49, 64), (2, 13, 13), (0, 7, 7, 2), 2, 0, 0,
     r"heads and groups must be >= 1, got heads = 2, groups = 0"),
]


@pytest.mark.parametrize("q, k, v, table, pos, heads, groups, convention, message", BAD,
                         ids=[str(i) for i in range(len(BAD))])
def test_bad_shape_is_reported(library, q, k, v, table, pos, heads, groups, convention, message):
    feeds = {n: np.zeros(s, np.float32) for n, s in zip(NAMES, (q, k, v, table, pos))}
    with pytest.raises(Exception, match="DATDeformAttention") as error:
        run_node(library, feeds, heads, groups, convention, 1.0)
    assert error.match(message)


@pytest.mark.parametrize("missing", ["heads", "groups", "convention", "scale"])
def test_missing_attribute_is_reported(library, missing):
    attributes = {"heads": 2, "groups": 1, "convention": 0, "scale": 0.5}
    del attributes[missing]
    model = make_model({n: np.float32 for n in NAMES}, **attributes)
    options = ort.SessionOptions()
    options.register_custom_ops_library(library)
    kind = "float" if missing == "scale" else "int"
    feeds = {n: np.zeros(s, np.float32) for n, s in
             zip(NAMES, ((1, 7, 7, 64), (1, 49, 64), (1, 49, 64), (2, 13, 13), (1, 7, 7, 2)))}
    with pytest.raises(Exception, match=f"DATDeformAttention: missing {kind} attribute '{missing}'"):
        session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        session.run(None, feeds)


def test_runs_on_the_sessions_threads_and_starts_none_of_its_own(library, tmp_path):
    """Inside onnxruntime the kernels use the session's intra-op pool: a one-thread session starts no thread
    of ours, even with DAT_NUM_THREADS=4 (our own pool would start three)."""
    inputs = make_inputs(2, 14, 14, 12, 32, 3, 7, 7, 27, 27, seed=3)
    np.savez(tmp_path / "feeds.npz", **{n: t.numpy() for n, t in inputs.items()})
    (tmp_path / "model.onnx").write_bytes(
        make_model({n: np.float32 for n in NAMES}, heads=12, groups=3, convention=0, scale=32 ** -0.5))
    script = f"""
import os, numpy as np, onnxruntime as ort
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.register_custom_ops_library({library!r})
session = ort.InferenceSession({str(tmp_path / "model.onnx")!r}, options, providers=["CPUExecutionProvider"])
feeds = dict(np.load({str(tmp_path / "feeds.npz")!r}))
before = len(os.listdir("/proc/self/task"))
session.run(None, feeds)
print(len(os.listdir("/proc/self/task")) - before)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "DAT_NUM_THREADS": "4"})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"
