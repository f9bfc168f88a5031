"""The native plugin libraries: where they are, and building them on demand.

* `ort_library_path(build=True)`: libdat_ort_ops.so (onnxruntime custom ops, CPU); built the first
  time it is needed (CPU only, a few seconds) and cached by the hash of plugins/ sources.
* `trt_plugin_library_path()`: libdat_trt_plugins.so (TensorRT IPluginV3 plugins); built only by
  `dat-deploy build-plugins --tensorrt-include DIR`, because it needs the TensorRT headers.
* `cuda_library_path()`: libdat_cuda_ops.so (the CUDA kernels with C entry points, for tests).
* `build(...)`, `status()`: the build driver and a summary of what is built.
* An installed wheel carries the libraries it was built with in dat_deploy/native/lib/ (setup.py), with
  build_info.json saying what was left out and why; those are used before anything is built.
* `doctor_checks()`: `status()` plus which CPU layer the onnxruntime op library runs and why (cpu_layer.py).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from dat_deploy.errors import UserError
from dat_deploy.native import builder
from dat_deploy.native.builder import BuildResult, TargetResult, build, find_built, log

__all__ = [
    "BuildResult",
    "TargetResult",
    "build",
    "cuda_library_path",
    "doctor_checks",
    "find_library",
    "ort_library_path",
    "status",
    "trt_plugin_library_path",
]

_ENV_OVERRIDES = {
    "dat_ort_ops": "DAT_DEPLOY_ORT_OPS",
    "dat_trt_plugins": "DAT_DEPLOY_TRT_PLUGINS",
    "dat_cuda_ops": "DAT_DEPLOY_CUDA_OPS",
}


BUNDLED_DIR = Path(__file__).resolve().parent / "lib"  # only in an installed wheel


def bundled_library(target: str) -> Path | None:
    """The library of `target` (e.g. "dat_ort_ops") that an installed wheel carries, or None."""
    path = BUNDLED_DIR / builder.LIBRARY_FILES[target]
    return path if path.is_file() else None


def bundled_build_info() -> dict | None:
    """What the wheel's build made and skipped (setup.py's build_info.json), or None in a source checkout."""
    try:
        return json.loads((BUNDLED_DIR / "build_info.json").read_text())
    except (OSError, ValueError):
        return None


def _from_env(target: str) -> Path | None:
    value = os.environ.get(_ENV_OVERRIDES[target])
    if not value:
        return None
    path = Path(value)
    if not path.is_file():
        raise UserError(f"{_ENV_OVERRIDES[target]}={value} is not a file. Unset it or point it at the built library.")
    return path


def _locate(target: str) -> Path | None:
    """The library of `target`: the environment's override, else the wheel's copy, else the build cache's."""
    return _from_env(target) or bundled_library(target) or find_built(target)


def ort_library_path(build: bool = True) -> Path:
    """The onnxruntime custom-op library; with build=True it is built (CPU only) if missing."""
    found = _locate("dat_ort_ops")
    if found is not None:
        return found
    if not build:
        raise UserError("the onnxruntime custom-op library (libdat_ort_ops.so) is not built. Run `dat-deploy build-plugins`.")
    log("building the onnxruntime custom-op library (first use; cached afterwards)")
    result = builder.build(cuda=False)
    library = result.library("dat_ort_ops")
    if library is None:
        raise UserError(f"building libdat_ort_ops.so did not produce it; see {result.config_dir / 'build.log'}")
    return library


def trt_plugin_library_path() -> Path:
    """The TensorRT plugin library, built by `dat-deploy build-plugins --tensorrt-include DIR`."""
    found = _locate("dat_trt_plugins")
    if found is None:
        raise UserError(
            "the TensorRT plugin library (libdat_trt_plugins.so) is not built. Run `dat-deploy build-plugins "
            "--tensorrt-include <TensorRT include dir>` (needs nvcc), or set DAT_DEPLOY_TRT_PLUGINS."
        )
    return found


def cuda_library_path() -> Path:
    """The CUDA kernels' C-ABI library, built by `dat-deploy build-plugins` where nvcc exists."""
    found = _locate("dat_cuda_ops")
    if found is None:
        raise UserError("the CUDA kernels (libdat_cuda_ops.so) are not built. Run `dat-deploy build-plugins --cuda`.")
    return found


# The short kinds `find_library` and `status` take -> CMake targets (builder.LIBRARY_FILES names their files).
_KIND_TARGETS = {"ort": "dat_ort_ops", "cuda": "dat_cuda_ops", "trt": "dat_trt_plugins"}


def find_library(target: str) -> Path | None:
    """'ort' / 'trt' / 'cuda' -> the built library or None (never builds)."""
    if target not in _KIND_TARGETS:
        raise ValueError(f"unknown plugin library kind {target!r}; expected one of {sorted(_KIND_TARGETS)}")
    try:
        return _locate(_KIND_TARGETS[target])
    except UserError:
        return None


def status() -> list[dict]:
    """One entry per library: name, built, detail (path or what to do), fix."""
    fixes = {
        "ort": "dat-deploy build-plugins (or any command that needs it builds it)",
        "trt": "dat-deploy build-plugins --tensorrt-include <TensorRT include dir> (needs nvcc)",
        "cuda": "dat-deploy build-plugins --cuda (needs nvcc)",
    }
    wheel = bundled_build_info()
    entries = []
    for kind, target in _KIND_TARGETS.items():
        path = find_library(kind)
        detail = str(path) if path else "not built for the current plugins/ sources"
        if wheel is not None and path is None:  # an installed wheel: say why its build left the library out
            reason = wheel.get("libraries", {}).get(target, {}).get("reason") or "not built"
            detail = f"not in this wheel: its build skipped it ({reason})"
        entries.append({
            "name": builder.LIBRARY_FILES[target],
            "built": path is not None,
            "detail": detail,
            "fix": "" if path else fixes[kind],
        })
    return entries


def doctor_checks() -> list[dict]:
    """status() plus the CPU layer libdat_ort_ops picks here (loads the library; never builds it)."""
    from dat_deploy.native.cpu_layer import LAYER_ENV, read_cpu_layer

    entries = status()
    library = find_library("ort")
    if library is None:
        entries.append({"name": "CPU kernel layer", "status": "info",
                        "detail": "decided by the onnxruntime op library from CPUID when it loads; not built yet",
                        "fix": ""})
        return entries
    try:
        choice = read_cpu_layer(library)
    except (OSError, UserError) as exc:
        entries.append({"name": "CPU kernel layer", "status": "warn", "detail": str(exc), "fix": "dat-deploy build-plugins"})
        return entries
    supported = ", ".join(choice.supported)
    if choice.refused:
        entries.append({"name": "CPU kernel layer", "status": "missing", "detail": choice.reason,
                        "fix": f"unset {LAYER_ENV} or set it to one of: {supported}"})
    else:
        entries.append({"name": "CPU kernel layer", "status": "ok",
                        "detail": f"{choice.layer}: {choice.reason} (this CPU can run: {supported})",
                        "fix": f"{LAYER_ENV}=portable|avx2|avx512 forces one"})
    return entries
