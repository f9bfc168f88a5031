"""`dat-deploy profile` (dat_deploy/commands/profile_cmds.py): refusals, every artifact with fake backends, a smoke run."""

from __future__ import annotations

import csv
import json

import onnx
import pytest
from typer.testing import CliRunner

from dat_deploy.commands._app import app
from dat_deploy.errors import UserError
from dat_deploy.profiling.backends import PreparedBackend
from profiling_helpers import REPORT_SCHEMA, FakeBackend, check_schema, grid_sample_graph


def test_cli_refuses_iters_with_duration(tmp_path):
    from dat_deploy.cli import main  # noqa: F401  (registers every command)

    result = CliRunner().invoke(app, ["profile", "--iters", "2", "--duration", "1", "--output", str(tmp_path / "r")])
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError)


def test_cli_trt_without_engine_is_a_user_error(tmp_path):
    from dat_deploy.cli import main  # noqa: F401

    result = CliRunner().invoke(app, ["profile", "--backend", "trt", "--iters", "1", "--output", str(tmp_path / "r")])
    assert isinstance(result.exception, UserError) and "--engine" in str(result.exception)
    assert not (tmp_path / "r").exists()  # nothing written when nothing was measured


def test_cli_onnx_of_another_variant_is_a_user_error(tmp_path):
    from dat_deploy.cli import main  # noqa: F401

    path = grid_sample_graph(tmp_path / "gs.onnx")
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"variant": "dat_s", "flavor": "standard"})
    onnx.save(model, str(path))
    result = CliRunner().invoke(app, ["profile", "--variant", "dat_t", "--backend", "ort", "--onnx", str(path),
                                      "--iters", "1", "--output", str(tmp_path / "r")])
    assert isinstance(result.exception, UserError) and "--variant dat_s" in str(result.exception)


def test_cli_profile_with_fake_backends_writes_every_artifact(tmp_path, monkeypatch):
    """The CLI path (options, progress, report, plots) without the cost of a real model."""
    from dat_deploy.cli import main  # noqa: F401
    from dat_deploy.profiling import backends as backends_mod

    log: list = []

    def fake_prepare(self, name, inputs):
        return PreparedBackend(name, FakeBackend(name, log), f"fake {name}")

    monkeypatch.setattr(backends_mod.BackendFactory, "prepare", fake_prepare)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["profile", "--backend", "torch,ort", "--batch", "1,2", "--warmup", "1",
                                      "--iters", "3", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"profile.json", "profile.csv", "throughput.png", "latency.png"}
    report = json.loads((out / "profile.json").read_text())
    check_schema(report, REPORT_SCHEMA)
    assert [(r["backend"], r["batch"], r["iterations"]) for r in report["results"]] == [
        ("torch", 1, 3), ("torch", 2, 3), ("ort", 1, 3), ("ort", 2, 3)
    ]
    assert len(log) == (1 + 3) * 4
    for png in ("throughput.png", "latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "images/s" in result.output and "vs torch" in result.output
    # a second run into the same folder never overwrites silently
    again = CliRunner().invoke(app, ["profile", "--iters", "1", "--output", str(out)])
    assert again.exit_code != 0 and isinstance(again.exception, UserError)


@pytest.mark.slow
def test_cli_smoke_profile_of_dat_t(tmp_path, monkeypatch, dat_t_onnx):
    """dat_t at batch 1, two iterations, PyTorch and onnxruntime (the session's dat_t export)."""
    from dat_deploy.cli import main  # noqa: F401

    monkeypatch.setenv("DAT_DEPLOY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["profile", "--variant", "dat_t", "--backend", "torch,ort", "--batch", "1",
                                      "--warmup", "1", "--iters", "2", "--ops", "--onnx", str(dat_t_onnx),
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "profile.json").read_text())
    check_schema(report, REPORT_SCHEMA)
    assert [(r["backend"], r["batch"], r["iterations"]) for r in report["results"]] == [("torch", 1, 2), ("ort", 1, 2)]
    assert all(r["latency_ms"]["min"] > 0 for r in report["results"])
    ort_ops = report["ops"]["ort @ batch 1"]
    assert any(op["op_type"] == "GridSample" and op["sampling"] for op in ort_ops["ops"])
    assert 0 < ort_ops["sampling_share"] < 1
    rows = list(csv.DictReader((out / "profile.csv").open()))
    assert len(rows) == 2
    assert (out / "throughput.png").stat().st_size > 0 and (out / "latency.png").stat().st_size > 0
