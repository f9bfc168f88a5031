"""fp16 graph conversion: which nodes are fp16, which stay fp32, where the Casts are, and that the
result still computes the model (onnxruntime CPU against the fp32 graph and against PyTorch).

A hand-built DAT-shaped graph keeps the structural tests fast; one slow test converts a real dat_t
export and compares onnxruntime's fp16 logits with PyTorch's.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from dat_deploy.errors import UserError
from dat_deploy.graph.fp16 import (
    back_and_forth_casts,
    convert_file,
    convert_to_fp16,
    infer_types,
    precision_summary,
)

FLOAT, FLOAT16 = TensorProto.FLOAT, TensorProto.FLOAT16
C, H, W, CLASSES = 4, 6, 6, 5


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(array), name)


def toy_model(plugin: bool = False, opset: int = 18, extra_nodes=(), extra_inits=()) -> onnx.ModelProto:
    """A DAT block in miniature: stem conv, LayerNorm, offset net -> tanh -> + reference grid ->
    sampling, attention with softmax, mean pool and a linear head. `plugin` swaps GridSample for
    the `dat.DATDeformSample` node."""
    rng = np.random.default_rng(0)
    ys = (np.arange(H) + 0.5) / H * 2 - 1
    ref = np.stack(np.meshgrid(ys, ys, indexing="ij"), -1).astype(np.float32)  # (H, W, 2) in (y, x)
    inits = [
        _init("stem_w", rng.normal(0, 0.5, (C, 3, 1, 1)).astype(np.float32)),
        _init("ln_scale", np.ones(C, np.float32)),
        _init("ln_bias", np.zeros(C, np.float32)),
        _init("off_w", rng.normal(0, 0.5, (2, C, 1, 1)).astype(np.float32)),
        _init("off_range", np.array(2.0 / H, np.float32)),
        _init("ref", ref),
        _init("perm_flip", np.array([1, 0], np.int64)),
        _init("seq_shape", np.array([0, C, H * W], np.int64)),
        _init("scale", np.array(C**-0.5, np.float32)),
        _init("head_w", rng.normal(0, 0.5, (C, CLASSES)).astype(np.float32)),
        _init("head_b", rng.normal(0, 0.1, (CLASSES,)).astype(np.float32)),
        _init("pool_axes", np.array([1], np.int64)),
        *extra_inits,
    ]
    nodes = [
        helper.make_node("Conv", ["input", "stem_w"], ["feat"], name="stem"),
        helper.make_node("Transpose", ["feat"], ["feat_nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"),
        helper.make_node("LayerNormalization", ["feat_nhwc", "ln_scale", "ln_bias"], ["normed"], axis=-1, name="norm"),
        helper.make_node("Transpose", ["normed"], ["x"], perm=[0, 3, 1, 2], name="to_nchw"),
        helper.make_node("Conv", ["x", "off_w"], ["offset_raw"], name="offset_conv"),
        helper.make_node("Tanh", ["offset_raw"], ["offset_tanh"], name="offset_tanh"),
        helper.make_node("Mul", ["offset_tanh", "off_range"], ["offset"], name="offset_scale"),
        helper.make_node("Transpose", ["offset"], ["offset_nhwc"], perm=[0, 2, 3, 1], name="offset_nhwc"),
        helper.make_node("Add", ["offset_nhwc", "ref"], ["pos"], name="pos_add"),
    ]
    if plugin:
        nodes.append(
            helper.make_node(
                "DATDeformSample", ["x", "pos"], ["sampled"], domain="dat", name="deform_sample", groups=1,
                plugin_version="1", plugin_namespace="",
            )
        )
    else:
        nodes += [
            helper.make_node("Gather", ["pos", "perm_flip"], ["grid"], axis=3, name="yx_to_xy"),
            helper.make_node(
                "GridSample", ["x", "grid"], ["sampled"], name="grid_sample", align_corners=1,
                mode="linear" if opset >= 20 else "bilinear", padding_mode="zeros",
            ),
        ]
    nodes += [
        helper.make_node("Reshape", ["x", "seq_shape"], ["q"], name="q_seq"),
        helper.make_node("Reshape", ["sampled", "seq_shape"], ["k"], name="k_seq"),
        helper.make_node("Transpose", ["q"], ["q_t"], perm=[0, 2, 1], name="q_t"),
        helper.make_node("MatMul", ["q_t", "k"], ["logits_raw"], name="qk"),
        helper.make_node("Mul", ["logits_raw", "scale"], ["attn_logits"], name="qk_scale"),
        helper.make_node("Softmax", ["attn_logits"], ["attn"], axis=-1, name="softmax"),
        helper.make_node("Transpose", ["k"], ["k_t"], perm=[0, 2, 1], name="k_t"),
        helper.make_node("MatMul", ["attn", "k_t"], ["attended"], name="attn_v"),
        helper.make_node("ReduceMean", ["attended", "pool_axes"], ["pooled"], keepdims=0, name="pool"),
        helper.make_node("MatMul", ["pooled", "head_w"], ["head_mm"], name="head"),
        helper.make_node("Add", ["head_mm", "head_b"], ["logits"], name="head_bias"),
        *extra_nodes,
    ]
    graph = helper.make_graph(
        nodes,
        "toy_dat",
        [helper.make_tensor_value_info("input", FLOAT, ["batch", 3, H, W])],
        [helper.make_tensor_value_info("logits", FLOAT, ["batch", CLASSES])],
        initializer=inits,
    )
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("dat", 1)] if plugin else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 9
    return model


def _node(model: onnx.ModelProto, name: str) -> onnx.NodeProto:
    return next(n for n in model.graph.node if n.name == name)


def _compute_type(model: onnx.ModelProto, types: dict[str, int], name: str) -> int:
    """The element type a node computes in: that of its first output."""
    return types[_node(model, name).output[0]]


def _run(model: onnx.ModelProto, batch: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": batch})[0]


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


@pytest.fixture(scope="module")
def toy_fp16():
    return convert_to_fp16(toy_model())


def test_heavy_ops_compute_in_fp16_and_islands_stay_fp32(toy_fp16):
    types = infer_types(toy_fp16)
    for name in ("stem", "offset_conv", "qk", "qk_scale", "attn_v", "pool", "q_seq", "k_seq"):
        assert _compute_type(toy_fp16, types, name) == FLOAT16, name
    # LayerNorm, softmax, the coordinate path after the offset conv, the sampling op, the head.
    for name in ("norm", "softmax", "offset_tanh", "offset_scale", "offset_nhwc", "pos_add", "yx_to_xy",
                 "grid_sample", "head", "head_bias"):
        assert _compute_type(toy_fp16, types, name) == FLOAT, name
    grid_sample = _node(toy_fp16, "grid_sample")
    assert types[grid_sample.input[0]] == types[grid_sample.input[1]] == FLOAT  # TensorRT wants one type


def test_inputs_outputs_and_initializers(toy_fp16):
    assert toy_fp16.graph.input[0].type.tensor_type.elem_type == FLOAT
    assert toy_fp16.graph.output[0].type.tensor_type.elem_type == FLOAT
    inits = {i.name: i.data_type for i in toy_fp16.graph.initializer}
    assert inits["stem_w"] == inits["off_w"] == FLOAT16
    # Feeding fp32 islands: the reference grid, the offset range, the norm's affine, the head.
    for name in ("ref", "off_range", "ln_scale", "ln_bias", "head_w", "head_b"):
        assert inits[name] == FLOAT, name
    assert {p.key: p.value for p in toy_fp16.metadata_props}["precision"] == "fp16"


def test_casts_only_at_island_boundaries(toy_fp16):
    summary = precision_summary(toy_fp16)
    assert summary.back_and_forth_casts == []
    # Boundaries: input->stem, LN in/out, offset conv->tanh, x->GridSample, GridSample->k,
    # softmax in/out, pooled->head. One Cast each, nothing else.
    assert (summary.casts_to_fp16, summary.casts_to_fp32) == (4, 5)
    casts = [n for n in toy_fp16.graph.node if n.op_type == "Cast"]
    assert len({n.input[0] for n in casts}) == len(casts)  # one Cast per tensor and direction
    assert summary.fp32_nodes["LayerNormalization"] == 1 and "LayerNormalization" not in summary.fp16_nodes
    assert summary.grid_sample_grids == {"grid_sample": "float32"}


def test_result_is_a_valid_model(toy_fp16):
    onnx.checker.check_model(toy_fp16, full_check=True)
    onnx.shape_inference.infer_shapes(toy_fp16, strict_mode=True)


def test_onnxruntime_runs_it_within_fp16_tolerance(toy_fp16):
    batch = np.random.default_rng(1).normal(size=(3, 3, H, W)).astype(np.float32)
    reference = _run(toy_model(), batch)
    converted = _run(toy_fp16, batch)
    assert converted.dtype == np.float32
    assert np.abs(converted - reference).max() < 2e-2
    assert _cosine(converted, reference) > 0.9999


def test_plugin_node_gets_fp16_data_and_fp32_positions():
    model = convert_to_fp16(toy_model(plugin=True))
    types = infer_types(model)
    node = _node(model, "deform_sample")
    assert types[node.input[0]] == FLOAT16  # x
    assert types[node.input[1]] == FLOAT  # pos: the coordinates stay fp32
    assert types[node.output[0]] == FLOAT16
    assert _compute_type(model, types, "pos_add") == FLOAT
    summary = precision_summary(model)
    assert summary.dat_position_inputs == {"deform_sample": "float32"}
    assert summary.fp16_nodes.get("dat.DATDeformSample") == 1
    assert summary.back_and_forth_casts == []


def test_plugin_graph_runs_in_onnxruntime_with_the_custom_op_library(tmp_path):
    from dat_deploy.native import ort_library_path
    from dat_deploy.runtime.onnxruntime_backend import OrtBackend

    try:
        library = ort_library_path(build=True)
    except UserError as exc:
        pytest.skip(f"the onnxruntime custom-op library is not available: {exc}")
    fp32_path, fp16_path = tmp_path / "toy.onnx", tmp_path / "toy_fp16.onnx"
    onnx.save(toy_model(plugin=True), str(fp32_path))
    convert_file(fp32_path, fp16_path)
    batch = np.random.default_rng(2).normal(size=(2, 3, H, W)).astype(np.float32)
    reference = OrtBackend(fp32_path, plugin_library=library).run(batch)["logits"]
    converted = OrtBackend(fp16_path, plugin_library=library).run(batch)["logits"]
    # The same graph with GridSample in onnxruntime: the plugin computes the same sampling.
    assert np.abs(reference - _run(toy_model(), batch)).max() < 1e-5
    assert np.abs(converted - reference).max() < 2e-2 and _cosine(converted, reference) > 0.9999


def test_feature_map_output_after_layernorm_does_not_round_trip_through_fp16():
    # input -> Conv -> LayerNorm -> Transpose -> output: the Transpose stays fp32 with its LayerNorm.
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["input", "w"], ["c"], name="conv"),
            helper.make_node("Transpose", ["c"], ["c_nhwc"], perm=[0, 2, 3, 1], name="to_nhwc"),
            helper.make_node("LayerNormalization", ["c_nhwc", "s", "b"], ["n"], axis=-1, name="norm"),
            helper.make_node("Transpose", ["n"], ["features"], perm=[0, 3, 1, 2], name="to_nchw"),
        ],
        "features",
        [helper.make_tensor_value_info("input", FLOAT, ["batch", 3, H, W])],
        [helper.make_tensor_value_info("features", FLOAT, ["batch", C, H, W])],
        initializer=[_init("w", np.ones((C, 3, 1, 1), np.float32)), _init("s", np.ones(C, np.float32)),
                     _init("b", np.zeros(C, np.float32))],
    )
    converted = convert_to_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]))
    types = infer_types(converted)
    assert _compute_type(converted, types, "conv") == FLOAT16
    assert _compute_type(converted, types, "to_nchw") == FLOAT
    summary = precision_summary(converted)
    assert (summary.casts_to_fp16, summary.casts_to_fp32) == (1, 1)  # into the conv, into the norm


def test_existing_casts_do_not_become_back_and_forth_pairs():
    # The exporter sometimes emits Cast(to=FLOAT) on float tensors; inside an fp16 region it must
    # disappear rather than become a fp16 -> fp32 -> fp16 round trip.
    model = toy_model()
    for node in model.graph.node:
        if node.name == "qk_scale":
            node.input[0] = "logits_raw_cast"
    model.graph.node.insert(
        [n.name for n in model.graph.node].index("qk_scale"),
        helper.make_node("Cast", ["logits_raw"], ["logits_raw_cast"], to=FLOAT, name="exporter_cast"),
    )
    converted = convert_to_fp16(model)
    assert back_and_forth_casts(converted) == []
    assert "exporter_cast" not in {n.name for n in converted.graph.node}


def test_back_and_forth_detector_finds_a_round_trip():
    graph = helper.make_graph(
        [
            helper.make_node("Cast", ["x"], ["x16"], to=FLOAT16, name="down"),
            helper.make_node("Cast", ["x16"], ["x32"], to=FLOAT, name="up"),
            helper.make_node("Relu", ["x32"], ["y"], name="relu"),
        ],
        "pair",
        [helper.make_tensor_value_info("x", FLOAT, [2])],
        [helper.make_tensor_value_info("y", FLOAT, [2])],
    )
    assert back_and_forth_casts(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])) == ["up"]


def test_shared_initializer_gets_an_fp16_copy_not_a_runtime_cast():
    # off_range feeds the fp32 coordinate path; reuse it in the fp16 attention as well.
    model = toy_model()
    _node(model, "qk_scale").input[1] = "off_range"
    converted = convert_to_fp16(model)
    types = infer_types(converted)
    assert types[_node(converted, "qk_scale").input[1]] == FLOAT16
    assert types[_node(converted, "offset_scale").input[1]] == FLOAT
    assert not any(n.op_type == "Cast" and n.input[0] == "off_range" for n in converted.graph.node)


def test_out_of_range_constants_saturate_instead_of_overflowing():
    model = toy_model(extra_inits=[_init("mask", np.full((1, H * W, H * W), -1e9, np.float32))])
    _node(model, "qk_scale").output[0] = "scaled"
    model.graph.node.insert(
        [n.name for n in model.graph.node].index("softmax"),
        helper.make_node("Add", ["scaled", "mask"], ["attn_logits"], name="mask_add"),
    )
    converted = convert_to_fp16(model)
    mask = numpy_helper.to_array(next(i for i in converted.graph.initializer if i.name == "mask"))
    assert mask.dtype == np.float16 and np.isfinite(mask).all() and mask.min() == np.float16(-65504)


def test_convert_file_writes_atomically_and_refuses_to_overwrite(tmp_path):
    source, target = tmp_path / "toy.onnx", tmp_path / "toy_fp16.onnx"
    onnx.save(toy_model(), str(source))
    summary = convert_file(source, target)
    assert target.is_file() and summary.outputs == {"logits": "float32"}
    assert not list(tmp_path.glob("*.partial"))
    with pytest.raises(UserError, match="already exists"):
        convert_file(source, target)
    with pytest.raises(UserError, match="does not exist"):
        convert_file(tmp_path / "missing.onnx", tmp_path / "out.onnx")


def test_convert_fp16_command(tmp_path):
    source, target = tmp_path / "toy.onnx", tmp_path / "out.onnx"
    onnx.save(toy_model(), str(source))
    done = subprocess.run(
        [sys.executable, "-m", "dat_deploy.cli", "convert-fp16", str(source), "-o", str(target)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert "LayerNormalization" in done.stdout and target.is_file()


# ---- a real DAT graph ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def dat_t_fp32(dat_t_onnx) -> onnx.ModelProto:
    """The session's shared dat_t export (tests/conftest.py)."""
    return onnx.load(str(dat_t_onnx))


@pytest.mark.slow
def test_dat_t_fp16_graph_structure_and_parity_with_pytorch(dat_t_fp32):
    import torch

    from dat_deploy.model import create_model

    converted = convert_to_fp16(dat_t_fp32)
    onnx.checker.check_model(converted)
    summary = precision_summary(converted)
    types = infer_types(converted)

    assert summary.inputs == {"input": "float32"} and summary.outputs == {"logits": "float32"}
    assert summary.back_and_forth_casts == []
    for op in ("LayerNormalization", "Softmax", "GridSample"):
        assert op not in summary.fp16_nodes and summary.fp32_nodes[op] > 0, op
    assert set(summary.grid_sample_grids.values()) == {"float32"}
    assert summary.fp16_nodes["MatMul"] > 0 and summary.fp16_nodes["Conv"] > 0
    assert "Conv" not in summary.fp32_nodes  # the offset convs compute in fp16 too
    # The head producing the logits stays fp32; every other matmul is fp16.
    heads = [n for n in converted.graph.node if n.op_type in ("MatMul", "Gemm") and types[n.output[0]] == FLOAT]
    assert len(heads) == 1
    # Casts: in and out of each island, each fp32 island entered once per tensor.
    casts = [n for n in converted.graph.node if n.op_type == "Cast"]
    assert len({(n.input[0], n.attribute[0].i) for n in casts}) == len(casts)

    batch = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        reference = create_model("dat_t")(torch.from_numpy(batch)).numpy()
    logits = _run(converted, batch)
    max_abs = float(np.abs(logits - reference).max())
    print(f"dat_t fp16 graph on onnxruntime CPU vs PyTorch fp32: max abs {max_abs:.2e}, "
          f"cosine {[round(_cosine(logits[i], reference[i]), 7) for i in range(2)]}")
    for i in range(len(batch)):
        assert _cosine(logits[i], reference[i]) >= 0.999
    assert (logits.argmax(1) == reference.argmax(1)).all()
    assert max_abs < 0.05


@pytest.mark.slow
def test_dat_t_plugin_flavour_fp16_keeps_positions_fp32_and_matches_pytorch(export_once):
    """The fused `dat` ops in fp16: window and deformable attention get fp16 data, positions stay fp32."""
    import torch

    from dat_deploy.model import create_model
    from plugin_graphs import plugin_session

    converted = convert_to_fp16(onnx.load(str(export_once("dat_t", flavor="plugin").onnx_path)))
    onnx.checker.check_model(converted)
    summary = precision_summary(converted)
    assert summary.back_and_forth_casts == []
    for op, blocks in (("dat.DATWindowAttention", 8), ("dat.DATDeformAttention", 4)):
        assert summary.fp16_nodes.get(op) == blocks and op not in summary.fp32_nodes, op
    assert set(summary.dat_position_inputs.values()) == {"float32"}

    batch = np.random.default_rng(0).normal(size=(2, 3, 224, 224)).astype(np.float32)
    with torch.no_grad():
        reference = create_model("dat_t")(torch.from_numpy(batch)).numpy()
    logits = plugin_session(converted).run(None, {"input": batch})[0]
    print(f"dat_t plugin fp16 on onnxruntime CPU vs PyTorch fp32: max abs {np.abs(logits - reference).max():.2e}")
    for i in range(len(batch)):
        assert _cosine(logits[i], reference[i]) >= 0.999
    assert (logits.argmax(1) == reference.argmax(1)).all()
