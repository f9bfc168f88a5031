"""The plugin build driver and `dat-deploy build-plugins`: cache by source hash, summary, clear errors."""

from __future__ import annotations

import platform
import shutil
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dat_deploy import native
from dat_deploy.cli import app  # importing the CLI registers every command
from dat_deploy.errors import UserError
from dat_deploy.native import builder


@pytest.fixture()
def private_sources(tmp_path, monkeypatch) -> Path:
    """A copy of plugins/ and an empty cache, so the test builds from scratch without touching the user's cache."""
    sources = tmp_path / "plugins"
    shutil.copytree(builder.plugins_source_dir(), sources)
    monkeypatch.setenv("DAT_DEPLOY_PLUGINS_SRC", str(sources))
    monkeypatch.setenv("DAT_DEPLOY_CACHE", str(tmp_path / "cache"))
    return sources


def test_source_hash_follows_sources_not_docs(private_sources):
    before = builder.source_hash(private_sources)
    (private_sources / "README.md").write_text("edited docs\n")
    assert builder.source_hash(private_sources) == before
    header = private_sources / "common" / "datSamplingMath.h"
    header.write_text(header.read_text() + "\n// edited\n")
    assert builder.source_hash(private_sources) != before


def test_cpu_build_is_cached_and_summarised(private_sources, tmp_path):
    first = native.build(cuda=False)
    assert not first.cached
    assert first.config_dir.is_relative_to(tmp_path / "cache")
    status = {t.target: t for t in first.targets}
    assert status["dat_ort_ops"].built and status["dat_ort_ops"].library.is_file()
    assert not status["dat_cuda_ops"].built and "DAT_WITH_CUDA=OFF" in status["dat_cuda_ops"].reason
    assert not status["dat_trt_plugins"].built and "TENSORRT_INCLUDE_DIR" in status["dat_trt_plugins"].reason
    again = native.build(cuda=False)
    assert again.cached and again.library("dat_ort_ops") == first.library("dat_ort_ops")
    assert native.ort_library_path(build=False) == first.library("dat_ort_ops")
    assert {e["name"]: e["built"] for e in native.status()}["libdat_ort_ops.so"] is True


def test_missing_library_is_a_user_error(private_sources):
    with pytest.raises(UserError, match="build-plugins"):
        native.ort_library_path(build=False)
    with pytest.raises(UserError, match="--tensorrt-include"):
        native.trt_plugin_library_path()


def test_missing_sources_are_a_user_error(tmp_path, monkeypatch):
    monkeypatch.setenv("DAT_DEPLOY_PLUGINS_SRC", str(tmp_path / "nowhere"))
    with pytest.raises(UserError, match="plugin sources not found"):
        native.build(cuda=False)


def test_cli_rejects_a_folder_without_tensorrt_headers(tmp_path):
    result = CliRunner().invoke(app, ["build-plugins", "--tensorrt-include", str(tmp_path)])
    assert isinstance(result.exception, UserError)
    assert "NvInferRuntime.h" in str(result.exception)


def test_cli_prints_the_summary_table():
    result = CliRunner().invoke(app, ["build-plugins", "--no-cuda"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("dat_ort_ops", "built", "dat_cuda_ops", "skipped", "dat_trt_plugins", "libdat_ort_ops.so"):
        assert text in result.output


def test_builds_of_old_sources_are_pruned_but_recent_ones_stay(tmp_path):
    import os
    import time

    root = tmp_path / "plugins"
    keep = root / "current"
    keep.mkdir(parents=True)
    now = time.time()
    ages_h = {"recent": 0.2, "old1": 30, "old2": 40, "old3": 50, "old4": 60}
    for name, age in ages_h.items():
        (root / name / "cpu").mkdir(parents=True)
        os.utime(root / name, (now - age * 3600, now - age * 3600))
    (root / ".cpu.lock").write_text("")  # lock files are not builds
    removed = builder.prune_old_builds(keep, newest=3, grace_s=3600)
    # newest 3 = the current build plus the two most recently used others; "recent" is also within the grace
    assert sorted(p.name for p in removed) == ["old2", "old3", "old4"]
    assert sorted(p.name for p in root.iterdir()) == [".cpu.lock", "current", "old1", "recent"]
    os.utime(root / "recent", (now - 7200, now - 7200))
    os.utime(root / "old1", (now - 7000, now - 7000))
    assert [p.name for p in builder.prune_old_builds(keep, newest=1, grace_s=3600)] == ["old1", "recent"]
    assert sorted(p.name for p in root.iterdir()) == [".cpu.lock", "current"]


# The CPU kernels are compiled once per instruction-set layer (cpu/cpuLayer.h); each must be warning-free on its own.
LAYER_LEVELS = {"portable": 0, "avx2": 1, "avx512": 2}


@pytest.mark.skipif(shutil.which("g++") is None or platform.machine() not in ("x86_64", "AMD64"),
                    reason="needs g++ on an x86-64 host")
@pytest.mark.parametrize("layer", LAYER_LEVELS)
def test_cpu_kernels_compile_for_every_vector_layer(layer):
    sources = sorted((builder.plugins_source_dir() / "cpu").glob("*.cpp"))
    assert sources
    for source in sources:
        result = subprocess.run(
            ["g++", "-std=gnu++20", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-O3",
             f"-DDAT_CPU_LAYER_LEVEL={LAYER_LEVELS[layer]}", "-DDAT_CPU_X86_LAYERS", "-fopenmp-simd", str(source)],
            capture_output=True, text=True)
        assert result.returncode == 0, f"{source.name} as layer {layer}:\n{result.stderr[-3000:]}"


def test_nothing_is_compiled_for_the_build_machine():
    """The library must run on any x86-64: no -march=native (or any -march) in what CMake builds."""
    cmake = (builder.plugins_source_dir() / "CMakeLists.txt").read_text()
    assert "-march" not in cmake and "-mavx" not in cmake
