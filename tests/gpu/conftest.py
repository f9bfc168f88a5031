"""Shared pieces of the GPU suite: exports and TensorRT engines built once per session.

Only helpers and fixtures live here (no collection-wide skip), so the CUDA-kernel tests in this
folder keep their own conditions.
"""

from __future__ import annotations

from pathlib import Path

import pytest


class EngineCache:
    """Exports and engines built on demand, once per session, under one temporary model repository."""

    MAX_BATCH = 32

    def __init__(self, root: Path):
        self.root = root
        self._exports: dict[tuple[str, str], Path] = {}
        self._engines: dict[tuple[str, str, str], Path] = {}

    def export(self, variant: str, flavor: str) -> Path:
        from dat_deploy.export import export_onnx

        key = (variant, flavor)
        if key not in self._exports:
            standard = "standard" if flavor == "native" else "plugin"
            result = export_onnx(variant, output_dir=self.root, flavor=standard, opset=18)
            self._exports[key] = result.onnx_path
        return self._exports[key]

    def plugin_library(self) -> Path:
        from dat_deploy.errors import UserError
        from dat_deploy.native import trt_plugin_library_path

        try:
            return trt_plugin_library_path()
        except UserError as exc:
            pytest.skip(f"the TensorRT plugin library is not built: {exc}")

    def engine(self, variant: str, flavor: str, precision: str) -> Path:
        from dat_deploy.trt.build import BuildOptions, build_trt

        key = (variant, flavor, precision)
        if key not in self._engines:
            library = self.plugin_library() if flavor == "plugin" else None
            options = BuildOptions(
                onnx=self.export(variant, flavor),
                fp16=precision == "fp16",
                max_batch=self.MAX_BATCH,
                flavor=flavor,
                plugin_lib=library,
                output=self.root,
                name=f"{variant}_{flavor}",
                timing_cache=self.root / "timing.cache",
                show_progress=False,
            )
            result = build_trt(options, log=print)
            self._engines[key] = result.folder.plan
        return self._engines[key]


@pytest.fixture(scope="session")
def engines(tmp_path_factory) -> EngineCache:
    return EngineCache(tmp_path_factory.mktemp("trt_models"))
