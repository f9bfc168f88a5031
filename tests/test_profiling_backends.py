"""dat_deploy.profiling.backends: backend and batch lists, which backend a given ONNX file serves."""

from __future__ import annotations

import onnx
import pytest

from dat_deploy.commands.common import parse_batch_list
from dat_deploy.errors import UserError
from dat_deploy.profiling.backends import parse_backend_list
from profiling_helpers import grid_sample_graph


def test_backend_and_batch_lists_are_checked():
    assert parse_backend_list("torch, ort") == ["torch", "ort"]
    assert parse_batch_list("8,1,8") == [1, 8]
    for bad in ("torch,onnx", "", "ort,ort"):
        with pytest.raises(UserError):
            parse_backend_list(bad)
    for bad in ("1,x", "0", ""):
        with pytest.raises(UserError):
            parse_batch_list(bad)


def test_given_onnx_serves_only_the_backend_of_its_layout(tmp_path):
    """A standard export in the official layout is ort-official's file; timing it as `ort` (the fast
    layout) would report one graph under two names."""
    from dat_deploy.profiling.backends import BackendFactory

    path = grid_sample_graph(tmp_path / "gs.onnx")
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"variant": "dat_t", "flavor": "standard", "layout": "official"})
    onnx.save(model, str(path))
    factory = BackendFactory("dat_t", onnx=path, cache_dir=tmp_path / "cache")
    assert factory.onnx_for("ort-official") == (path, None)
    with pytest.raises(UserError, match="official layout.*backend ort times the fast layout"):
        factory.onnx_for("ort")
