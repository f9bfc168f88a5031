"""The plugin export flavour on a deformable block's attention core: one `dat.DATDeformAttention` node.

Checks: the channels-last forward with the fused core equals the official module (channels-first,
einsum, `DATRelPosBias` reference) in eager mode, for both query-grid conventions; export with a
dynamic batch emits one DATDeformAttention node (and no separate bias, Softmax or attention MatMul)
with the contract's attributes; onnx's checker and strict shape inference pass; onnxruntime with
libdat_ort_ops matches the official module at other batch sizes.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from torch import nn

from dat_deploy.export import plugin_ops
from dat_deploy.export.graph_checks import op_histogram
from dat_deploy.model import channels_last, fused_ops
from dat_deploy.model.attention import DeformableAttention
from plugin_graphs import checked_output_shapes, export_plugin_flavour, plugin_session

DIM, HEADS, GROUPS, FMAP = 24, 4, 2, 6


class DeformableBlock(nn.Module):
    def __init__(self, family: str):
        super().__init__()
        # stride 2, kernel 3: a 3 x 3 key grid, so Nk != H*W; offsets reach past [-1, 1]
        self.attn = DeformableAttention(family, FMAP, DIM, HEADS, GROUPS, stride=2, ksize=3, offset_range_factor=3.0)
        with torch.no_grad():
            self.attn.rpe_table.normal_(0, 1)

    def official(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = channels_last.attention(self.attn, channels_last.to_channels_last(x), True)[0]
        return channels_last.to_channels_first(out)


@pytest.fixture(scope="module", params=["dat", "dat_pp"])
def block(request) -> DeformableBlock:
    torch.manual_seed(0)
    return DeformableBlock(request.param).eval()


@pytest.fixture(scope="module")
def exported(block) -> onnx.ModelProto:
    return export_plugin_flavour(block, torch.randn(2, DIM, FMAP, FMAP))


def test_eager_fused_core_equals_official_block(block):
    x = torch.randn(3, DIM, FMAP, FMAP, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = block.official(x)
        with plugin_ops.plugin_flavour():
            assert fused_ops.fused(fused_ops.DEFORMABLE_ATTENTION) is plugin_ops.deformable_attention
            fused = block(x)
    assert fused_ops.fused(fused_ops.DEFORMABLE_ATTENTION) is None  # restored on exit
    torch.testing.assert_close(fused, want, rtol=0, atol=1e-5)


def test_graph_has_one_fused_core(block, exported):
    ops = op_histogram(exported)
    assert ops["dat::DATDeformAttention"] == 1 and ops["dat::DATDeformSample"] == 1
    assert "dat::DATRelPosBias" not in ops and "Softmax" not in ops and "MatMul" not in ops
    node = next(n for n in exported.graph.node if n.op_type == "DATDeformAttention")
    attributes = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert (attributes["heads"], attributes["groups"]) == (HEADS, GROUPS)
    assert attributes["convention"] == plugin_ops.CONVENTION_CODES[block.attn.convention]
    assert attributes["scale"] == pytest.approx((DIM // HEADS) ** -0.5)
    assert attributes["plugin_version"] == b"1" and attributes["plugin_namespace"] == b"dat"


def test_checker_and_shape_inference_pass(exported):
    shapes = checked_output_shapes(exported, "DATDeformAttention")
    assert len(shapes) == 1
    for shape in shapes:
        assert shape.dim[0].dim_param  # batch stays symbolic
        assert [d.dim_value for d in shape.dim[1:]] == [FMAP, FMAP, DIM]


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_official_block(block, exported, batch):
    session = plugin_session(exported)
    x = torch.randn(batch, DIM, FMAP, FMAP, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        want = block.official(x).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], want, rtol=0, atol=1e-5)
