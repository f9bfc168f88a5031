"""Wheel builds (`pip wheel .`, `python -m build`): compile plugins/ with CMake and ship the libraries in
dat_deploy/native/lib/ of the wheel, with build_info.json saying what was built and what was skipped and why.

- libdat_ort_ops.so (onnxruntime custom ops, every CPU layer, runs on any x86-64): always.
- libdat_cuda_ops.so: when nvcc is found (DAT_DEPLOY_WHEEL_CUDA=0 leaves it out, =1 requires it).
- libdat_trt_plugins.so: when DAT_DEPLOY_TENSORRT_INCLUDE names a folder with NvInferRuntime.h (and CUDA is built).
Editable installs (`pip install -e .`) build nothing here: a source checkout builds on demand (dat_deploy.native).
The wheel is tagged py3-none-<platform>: the libraries are loaded by onnxruntime / TensorRT, not by CPython.
Everything else about the project lives in pyproject.toml.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.build_py import build_py

try:
    from setuptools.command.bdist_wheel import bdist_wheel  # setuptools >= 70.1 (what pyproject.toml asks for)
except ImportError:  # an older setuptools in a --no-build-isolation build
    from wheel.bdist_wheel import bdist_wheel

HERE = Path(__file__).resolve().parent


def _build_plugins(destination: Path) -> None:
    sys.path.insert(0, str(HERE))  # the build driver of this very checkout (imports only the standard library)
    from dat_deploy.native import builder

    cuda_env = os.environ.get("DAT_DEPLOY_WHEEL_CUDA", "")
    cuda = None if cuda_env == "" else cuda_env not in ("0", "false", "no")
    trt = os.environ.get("DAT_DEPLOY_TENSORRT_INCLUDE") or None
    result = builder.build(cuda=cuda, tensorrt_include=trt)
    destination.mkdir(parents=True, exist_ok=True)
    info = {"source_hash": builder.source_hash(builder.plugins_source_dir()), "config": result.config_dir.name,
            "libraries": {}}
    for target in result.targets:
        library = result.library(target.target)
        if library is not None:
            shutil.copy2(library, destination / library.name)
        info["libraries"][target.target] = {"file": builder.LIBRARY_FILES.get(target.target),
                                            "built": library is not None, "reason": target.reason}
    (destination / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"dat-deploy wheel: plugins {result.config_dir} ({'cached' if result.cached else f'{result.seconds:.0f} s'})")


class BuildPyWithPlugins(build_py):
    def run(self):
        super().run()
        if not getattr(self, "editable_mode", False):
            _build_plugins(Path(self.build_lib) / "dat_deploy" / "native" / "lib")


class BinaryDistribution(Distribution):
    def has_ext_modules(self):
        return True  # native libraries inside: a platform wheel, its files at the wheel's root (platlib)


class PlatformWheel(bdist_wheel):
    def get_tag(self):
        return ("py3", "none", super().get_tag()[2])  # any CPython: the libraries are not Python extensions


setup(distclass=BinaryDistribution, cmdclass={"build_py": BuildPyWithPlugins, "bdist_wheel": PlatformWheel})
