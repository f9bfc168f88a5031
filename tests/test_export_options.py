"""export's options are checked before the half-minute trace, and the trace shows its progress."""

from __future__ import annotations

import io
import os
import subprocess
import sys

import pytest

from dat_deploy.commands import common
from dat_deploy.errors import UserError
from dat_deploy.export import export_onnx
from dat_deploy.export.onnx_export import DEFAULT_OPSET, MIN_OPSET, _ExporterSteps, check_opset, max_opset


@pytest.mark.parametrize("opset", [5, 16, max_opset() + 1, 30])
def test_an_opset_the_exporter_cannot_write_is_refused_before_any_work(tmp_path, no_model_building, opset):
    """torch's exporter silently writes opset 18 for these; the sidecar would have recorded the request."""
    with pytest.raises(UserError, match=f"--opset {opset} cannot be exported"):
        export_onnx("dat_t", output_dir=tmp_path / "models", opset=opset)
    assert not (tmp_path / "models").exists()


def test_the_opsets_it_can_write_are_accepted():
    assert [check_opset(o) for o in (MIN_OPSET, DEFAULT_OPSET, max_opset())] == [MIN_OPSET, DEFAULT_OPSET, max_opset()]


def test_the_exporters_own_stages_become_steps():
    steps: list[str] = []
    out = _ExporterSteps(steps.append)
    out.write("[torch.onnx] Obtain model graph for `ChannelsLastDAT([...]` with `torch.export.export(..., strict=False)`...\n")
    out.write("[torch.onnx] Obtain model graph for `ChannelsLastDAT([...]` with `torch.export.export(..., strict=False)`... \u2705\n")
    out.write("[torch.onnx] Run decomp")  # written in pieces
    out.write("ositions...\nsome other chatter\n")
    assert steps == ["torch.onnx: obtain model graph", "torch.onnx: run decompositions"]


def test_step_lines_carry_no_source_location():
    buffer = io.StringIO()
    original = common.console.file
    common.console.file = buffer  # the CLI's own console, with its own settings
    try:
        with common.steps("exporting dat_t") as on_step:
            on_step("tracing with torch.onnx")
    finally:
        common.console.file = original
    text = buffer.getvalue()
    assert "tracing with torch.onnx" in text and "common.py" not in text and ".py:" not in text


def test_a_warning_is_one_line_without_a_source_path(tmp_path):
    """Opset 20 warns (TensorRT's GridSample), then the bad --name stops the export before any tracing."""
    done = subprocess.run(
        [sys.executable, "-m", "dat_deploy.cli", "export", "--opset", "20", "--name", "a/b", "-o", str(tmp_path / "m")],
        capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"},
    )
    assert done.returncode == 2, done.stderr
    assert "warning: opset 20: TensorRT's ONNX parser" in done.stderr
    assert "UserWarning" not in done.stderr and ".py:" not in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "m").exists()
