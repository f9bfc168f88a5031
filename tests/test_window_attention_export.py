"""The plugin export flavour on DAT's window attention: L and S blocks -> one `dat.DATWindowAttention` node each.

Checks: the channels-last forward with the custom op equals the official blocks (channels-first, roll,
partition, mask) in eager mode; export with a dynamic batch emits one node per block with the attributes
the contract names and no Softmax / roll left in the graph; onnx's checker and strict shape inference
pass; onnxruntime with libdat_ort_ops matches the official blocks at other batch sizes.
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
from dat_deploy.model.attention import LocalAttention, ShiftWindowAttention
from plugin_graphs import checked_output_shapes, export_plugin_flavour, plugin_session

DIM, HEADS, WINDOW, FMAP = 24, 2, 3, 6


class TwoWindowBlocks(nn.Module):
    """A plain and a shifted window-attention block in a row, as DAT's stages 1-2 use them."""

    def __init__(self):
        super().__init__()
        self.plain = LocalAttention(DIM, HEADS, WINDOW)
        self.shifted = ShiftWindowAttention(DIM, HEADS, WINDOW, FMAP)
        with torch.no_grad():  # trained tables are far from zero; make the bias matter
            for attn in (self.plain, self.shifted):
                attn.relative_position_bias_table.normal_(0, 1)

    def official(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-first, through the modules' own (official) forward."""
        x = x + self.plain(x)[0]
        return x + self.shifted(x)[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Channels-last, through channels_last.attention (the fused op under plugin_flavour)."""
        x = channels_last.to_channels_last(x)
        x = x + channels_last.attention(self.plain, x, True)[0]
        x = x + channels_last.attention(self.shifted, x, True)[0]
        return channels_last.to_channels_first(x)


@pytest.fixture(scope="module")
def block() -> TwoWindowBlocks:
    torch.manual_seed(0)
    return TwoWindowBlocks().eval()


@pytest.fixture(scope="module")
def exported(block) -> onnx.ModelProto:
    return export_plugin_flavour(block, torch.randn(2, DIM, FMAP, FMAP))


def test_eager_fused_path_equals_official_blocks(block):
    x = torch.randn(3, DIM, FMAP, FMAP, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = block.official(x)
        unfused = block(x)
        with plugin_ops.plugin_flavour():
            assert fused_ops.fused(fused_ops.WINDOW_ATTENTION) is plugin_ops.window_attention
            fused = block(x)
    assert fused_ops.fused(fused_ops.WINDOW_ATTENTION) is None  # restored on exit
    torch.testing.assert_close(unfused, want, rtol=0, atol=1e-5)
    torch.testing.assert_close(fused, want, rtol=0, atol=1e-5)


def test_graph_has_one_window_node_per_block(exported):
    ops = op_histogram(exported)
    assert ops["dat::DATWindowAttention"] == 2
    assert "Softmax" not in ops and "Slice" not in ops and "Concat" not in ops  # softmax and roll are inside
    nodes = [n for n in exported.graph.node if n.op_type == "DATWindowAttention"]
    attributes = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute} for n in nodes]
    assert sorted(a["shift"] for a in attributes) == [0, WINDOW // 2 + 1]
    for a in attributes:
        assert (a["heads"], a["window"]) == (HEADS, WINDOW)
        assert a["scale"] == pytest.approx((DIM // HEADS) ** -0.5)
        assert a["plugin_version"] == b"1" and a["plugin_namespace"] == b"dat"
    initializers = {i.name: i for i in exported.graph.initializer}
    bias_dims = sorted(tuple(initializers[n.input[1]].dims) for n in nodes if n.input[1] in initializers)
    tokens = WINDOW * WINDOW
    assert bias_dims == [(1, HEADS, tokens, tokens), ((FMAP // WINDOW) ** 2, HEADS, tokens, tokens)]


def test_checker_and_shape_inference_pass(exported):
    shapes = checked_output_shapes(exported, "DATWindowAttention")
    assert len(shapes) == 2
    for shape in shapes:
        assert shape.dim[0].dim_param  # batch stays symbolic
        assert [d.dim_value for d in shape.dim[1:]] == [FMAP, FMAP, DIM]


@pytest.mark.parametrize("batch", [1, 3])
def test_onnxruntime_matches_official_blocks(block, exported, batch):
    session = plugin_session(exported)
    x = torch.randn(batch, DIM, FMAP, FMAP, generator=torch.Generator().manual_seed(batch))
    with torch.no_grad():
        want = block.official(x).numpy()
    np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], want, rtol=0, atol=1e-5)
