"""The wheel: `pip wheel .` carries the prebuilt op library, and an install of it on a machine without g++, cmake or
nvcc runs the README's main job (export in the plugin flavour, then validate) with that library."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TOOLCHAIN = ("g++", "gcc", "c++", "cc", "cmake", "nvcc")

pytestmark = pytest.mark.slow


def _run(command: list[str], env: dict, cwd: Path, timeout: float) -> subprocess.CompletedProcess:
    proc = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(command)}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def test_wheel_runs_export_and_validate_without_a_toolchain(tmp_path):
    source = tmp_path / "src"  # a copy, so the build leaves the checkout alone
    ignore = shutil.ignore_patterns("build", "__pycache__", "*.egg-info", "models", "reports", ".git", "*.onnx")
    for item in ("dat_deploy", "plugins", "pyproject.toml", "setup.py", "README.md"):
        copy = shutil.copytree if (ROOT / item).is_dir() else shutil.copy2
        copy(ROOT / item, source / item, **({"ignore": ignore} if (ROOT / item).is_dir() else {}))
    build_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "DAT_DEPLOY_ORT_OPS")}
    build_env["DAT_DEPLOY_WHEEL_CUDA"] = "0"  # nvcc takes many minutes; the CUDA part of the wheel is built elsewhere
    _run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w",
          str(tmp_path / "wheels")], build_env, tmp_path, 1800)
    (wheel,) = (tmp_path / "wheels").glob("*.whl")
    assert wheel.name.startswith("dat_deploy-") and "-py3-none-linux_" in wheel.name
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = json.loads(archive.read("dat_deploy/native/lib/build_info.json"))
    assert "dat_deploy/native/lib/libdat_ort_ops.so" in names
    assert info["libraries"]["dat_ort_ops"]["built"] and "avx512" in info["libraries"]["dat_ort_ops"]["reason"]
    assert not info["libraries"]["dat_cuda_ops"]["built"] and info["libraries"]["dat_cuda_ops"]["reason"]

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], build_env, tmp_path, 300)
    python = venv / "bin" / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--ignore-installed", str(wheel)], build_env,
         tmp_path, 600)

    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in build_env.items() if not k.startswith("DAT_DEPLOY_")}
    env.update(PATH=str(venv / "bin"), DAT_DEPLOY_CACHE=str(tmp_path / "empty-cache"), COLUMNS="200")
    probe = _run([str(python), "-c", "import dat_deploy, json, shutil; from dat_deploy import native; "
                  f"print(json.dumps([dat_deploy.__file__, str(native.ort_library_path(build=False)), "
                  f"[shutil.which(t) for t in {TOOLCHAIN!r}]]))"], env, work, 120)
    module, library, tools = json.loads(probe.stdout)
    assert Path(module).is_relative_to(venv), f"dat_deploy imported from {module}, not from the wheel"
    assert Path(library).is_relative_to(venv) and tools == [None] * len(TOOLCHAIN)

    cli = str(venv / "bin" / "dat-deploy")
    # the tiny DAT++ digits variant: its plugin flavour has DATDeformSample and DATDeformAttention nodes
    _run([cli, "export", "--variant", "dat_pp_digits", "--flavor", "plugin", "-o", "models", "--name", "tiny_plugin"], env,
         work, 1200)
    validated = _run([cli, "validate", "models/tiny_plugin", "--batch", "2", "--no-images"], env, work, 1200)
    assert "PASSED" in validated.stdout
    assert not (tmp_path / "empty-cache").exists()  # nothing was built: the wheel's library ran
    doctor = _run([cli, "doctor"], env, work, 300).stdout
    assert "CPU kernel layer" in doctor and "not in this wheel" in doctor
