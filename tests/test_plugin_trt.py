"""The TensorRT plugin library without TensorRT or a GPU: a C++ harness (plugins/tests/trtPluginHarness.cpp)
dlopens libdat_trt_plugins.so and checks creators, fields, capabilities, dtypes, formats, output shapes
and the serialisation round trip. Needs nvcc and TensorRT headers ($TENSORRT_INCLUDE_DIR).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dat_deploy import native
from dat_deploy.native.builder import plugins_source_dir

TRT_INCLUDE = os.environ.get("TENSORRT_INCLUDE_DIR")
pytestmark = [
    pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH: the TensorRT plugins need the CUDA kernels"),
    pytest.mark.skipif(not TRT_INCLUDE, reason="TENSORRT_INCLUDE_DIR not set: no TensorRT headers to build the plugins"),
]


def cuda_include() -> Path:
    candidates = [Path(os.environ[v]) / "include" for v in ("CUDA_HOME", "CUDA_PATH") if os.environ.get(v)]
    candidates += [Path(shutil.which("nvcc")).resolve().parents[1] / "include", Path("/usr/local/cuda/include")]
    for candidate in candidates:
        if (candidate / "cuda_runtime_api.h").is_file():
            return candidate
    pytest.skip("cuda_runtime_api.h not found (set CUDA_HOME)")


def test_plugin_library_passes_the_harness(tmp_path):
    library = native.build(cuda=True, tensorrt_include=TRT_INCLUDE).library("dat_trt_plugins")
    assert library is not None
    harness = tmp_path / "trtPluginHarness"
    compile_cmd = ["g++", "-std=c++17", "-Wall", "-Wextra", "-Werror", "-isystem", TRT_INCLUDE,
                   "-isystem", str(cuda_include()), str(plugins_source_dir() / "tests" / "trtPluginHarness.cpp"),
                   "-o", str(harness), "-ldl"]
    subprocess.run(compile_cmd, check=True)
    run = subprocess.run([str(harness), str(library)], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASSED" in run.stdout
