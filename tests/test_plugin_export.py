"""The plugin export flavour on a small deformable block: torch custom ops -> `dat` ONNX nodes.

Checks: the eager custom ops equal the references; export with a dynamic batch (example batch 2)
emits exactly the two `dat` nodes with the attributes TensorRT's parser needs; onnx's checker and
strict shape inference pass; onnxruntime with libdat_ort_ops matches PyTorch at other batch sizes.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from dat_deploy.export import plugin_ops
from dat_deploy.graph.dat_graph import is_dat_node
from dat_deploy.model import sampling
from dat_deploy.native import ort_library_path


class TinyDeformableBlock(nn.Module):
    """What a DAT deformable block does with the two ops: offsets from q, sample k/v, sample the bias table."""

    def __init__(self, channels: int = 16, groups: int = 2, heads: int = 4, convention: str = "dat"):
        super().__init__()
        self.groups, self.heads, self.convention = groups, heads, convention
        self.offset = nn.Conv2d(channels // groups, 2, 3, stride=2, padding=1)
        self.table = nn.Parameter(torch.randn(heads, 11, 13))
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        batch, channels, height, width = x.shape
        grouped = x.reshape(batch * self.groups, channels // self.groups, height, width)
        pos = torch.tanh(self.offset(grouped)).permute(0, 2, 3, 1) * 1.2  # some points fall outside [-1, 1]
        sampled = sampling.deform_sample(x, pos, self.groups)
        bias = sampling.rel_pos_bias(self.table, pos, x, self.groups, self.convention)
        return self.proj(sampled), bias.softmax(-1)


@pytest.fixture(scope="module", params=["dat", "dat_pp"])
def exported(request):
    torch.manual_seed(0)
    block = TinyDeformableBlock(convention=request.param).eval()
    example = torch.randn(2, 16, 7, 9)
    with plugin_ops.plugin_flavour(), torch.no_grad():
        program = torch.onnx.export(
            block, (example,), dynamo=True, opset_version=18, input_names=["x"], output_names=["sampled", "bias"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1, max=64)}},
            custom_translation_table=plugin_ops.custom_translation_table(), external_data=False,
        )
    return block, program.model_proto, request.param


def test_eager_custom_ops_equal_references():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 8, 5, 6, generator=g)
    pos = torch.rand(6, 3, 4, 2, generator=g) * 3 - 1.5
    table = torch.randn(4, 7, 7, generator=g)
    assert torch.equal(plugin_ops.deform_sample(x, pos, 2), sampling.deform_sample_reference(x, pos, 2))
    assert torch.equal(plugin_ops.rel_pos_bias(table, pos, x, 2, "dat_pp"),
                       sampling.rel_pos_bias_reference(table, pos, x, 2, "dat_pp"))


def test_plugin_sampling_routes_through_custom_ops():
    x, pos = torch.randn(2, 4, 5, 5), torch.zeros(2, 3, 3, 2)
    with plugin_ops.plugin_flavour():
        graph = torch.export.export(_Calls(), (x, pos)).graph
    targets = {str(node.target) for node in graph.nodes if node.op == "call_function"}
    assert "dat.deform_sample.default" in targets
    assert sampling._impl["deform_sample"] is sampling.deform_sample_reference  # restored on exit


class _Calls(nn.Module):
    def forward(self, x, pos):
        return sampling.deform_sample(x, pos, 1)


def test_graph_has_dat_nodes_with_plugin_attributes(exported):
    _, model, convention = exported
    nodes = [n for n in model.graph.node if is_dat_node(n)]
    assert sorted(n.op_type for n in nodes) == ["DATDeformSample", "DATRelPosBias"]
    assert not any(n.op_type == "GridSample" for n in model.graph.node)
    for node in nodes:
        attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
        assert attributes["groups"] == 2
        assert attributes["plugin_version"] == b"1" and attributes["plugin_namespace"] == b"dat"
        if node.op_type == "DATRelPosBias":
            assert attributes["convention"] == plugin_ops.CONVENTION_CODES[convention]
    assert {o.domain: o.version for o in model.opset_import}["dat"] == 1


def test_checker_and_shape_inference_pass(exported):
    _, model, _ = exported
    onnx.checker.check_model(model, full_check=True)
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True, data_prop=True)
    outputs = {o.name: o.type.tensor_type for o in inferred.graph.output}
    assert outputs["sampled"].shape.dim[0].dim_param  # batch stays symbolic
    assert [d.dim_value for d in outputs["sampled"].shape.dim[1:]] == [16, 4, 5]
    assert [d.dim_value for d in outputs["bias"].shape.dim[1:]] == [7 * 9, 4 * 5]
    inferred_types = {v.name: v.type.tensor_type for v in inferred.graph.value_info}
    dat_outputs = [n.output[0] for n in inferred.graph.node if is_dat_node(n)]
    assert all(name in inferred_types or name in outputs for name in dat_outputs)


@pytest.mark.parametrize("batch", [1, 3, 5])
def test_onnxruntime_matches_pytorch(exported, batch):
    block, model, _ = exported
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(ort_library_path(build=True)))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    x = torch.randn(batch, 16, 7, 9, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        want = block(x)
    got = session.run(None, {"x": x.numpy()})
    for g, w in zip(got, want):
        assert g.shape == tuple(w.shape)
        np.testing.assert_allclose(g, w.numpy(), rtol=0, atol=1e-5)
