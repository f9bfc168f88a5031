"""doctor: versions as the packages report them, and a fix for every missing piece."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import platform
import shutil

import pytest
import torch
from typer.testing import CliRunner

from dat_deploy import doctor


def _by_name(checks):
    return {c.name: c for c in checks}


def test_reports_installed_versions():
    checks = _by_name(doctor.run_checks())
    assert platform.python_version() in checks["python"].detail
    assert checks["torch"].status == doctor.OK and torch.__version__ in checks["torch"].detail
    assert metadata.version("onnx") in checks["onnx"].detail
    assert metadata.version("onnxruntime") in checks["onnxruntime"].detail
    gpu = checks["GPU (torch.cuda)"]
    assert (gpu.status == doctor.OK) == torch.cuda.is_available()
    for tool in ("nvcc", "cmake", "g++"):
        assert (checks[tool].status == doctor.OK) == (shutil.which(tool) is not None)
    # every problem comes with something to do
    assert all(c.fix for c in checks.values() if c.status == doctor.MISSING)


def test_tensorrt_missing_says_what_to_do():
    try:
        import tensorrt  # noqa: F401
    except Exception:  # noqa: BLE001
        check = _by_name(doctor.check_tensorrt())["tensorrt"]
        assert check.status == doctor.MISSING and "pip install tensorrt" in check.fix
    else:
        pytest.skip("tensorrt is importable here")


def test_both_onnxruntime_packages_warn(monkeypatch):
    versions = {"onnxruntime": "1.32.0", "onnxruntime-gpu": "1.32.0"}
    monkeypatch.setattr(doctor, "_version", versions.get)
    check = doctor.check_onnxruntime()[0]
    assert check.status == doctor.WARN and "pip uninstall" in check.fix


def test_missing_tools(monkeypatch):
    monkeypatch.setattr(doctor.shutil, "which", lambda name: None)
    checks = _by_name(doctor.check_toolchain())
    assert checks["nvcc"].status == checks["cmake"].status == checks["g++"].status == doctor.MISSING
    assert "CUDA toolkit" in checks["nvcc"].fix


def test_plugin_libraries_from_native(monkeypatch):
    native = pytest.importorskip("dat_deploy.native")
    monkeypatch.setattr(native, "status", lambda: [
        {"name": "libdat_ort_ops.so", "built": True, "detail": "/cache/libdat_ort_ops.so", "fix": ""},
        {"name": "libdat_trt_plugins.so", "built": False, "detail": "not built", "fix": "dat-deploy build-plugins"},
    ])
    checks = _by_name(doctor.check_plugins())
    assert checks["libdat_ort_ops.so"].status == doctor.OK
    assert checks["libdat_trt_plugins.so"].status == doctor.MISSING
    assert checks["libdat_trt_plugins.so"].fix == "dat-deploy build-plugins"


def test_a_failing_check_does_not_stop_the_report(monkeypatch):
    def broken():
        raise RuntimeError("boom")

    monkeypatch.setattr(doctor, "CHECKS", (broken, doctor.check_onnx))
    checks = doctor.run_checks()
    assert [c.name for c in checks] == ["dat-deploy", "broken", "onnx"]
    assert checks[1].status == doctor.WARN and "boom" in checks[1].detail


def test_cli_json_and_table():
    from dat_deploy.cli import app

    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    names = {entry["name"] for entry in json.loads(result.output)}
    assert {"python", "torch", "onnx", "onnxruntime", "tensorrt", "nvcc", "cmake", "g++"} <= names

    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["doctor"])
    assert result.exit_code == 0 and "what to do" in result.output and "onnxruntime" in result.output
