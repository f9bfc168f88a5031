"""libdat_ort_ops on other x86-64 CPUs, emulated with Debian's qemu-user: under `-cpu Westmere` (no AVX) the library
must pick its portable layer and give the outputs of a native run of that layer bit for bit, under `-cpu Haswell`
(AVX2, no AVX-512) the avx2 layer's. The copy that `dat-deploy triton` puts into a model repository must do the
same. A library built with -march=native on an AVX-512 machine dies here with `uncaught target signal 4 (Illegal
instruction)` under both CPUs."""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from cpu_layer_graphs import load_outputs, write_graphs
from dat_deploy.native import ort_library_path

RUNNER = Path(__file__).with_name("run_plugin_graphs.py")
QEMU = shutil.which("qemu-x86_64")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 host only"),
    pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not installed (apt-get install qemu-user; .ci/run does)"),
]


def run(library: Path, graphs: list[Path], out: Path, cpu: str | None = None, layer: str | None = None):
    """The runner natively (cpu None) or under qemu-x86_64 -cpu `cpu`; returns the process."""
    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "DAT_DEPLOY_CPU_LAYER"}
    if layer:
        env["DAT_DEPLOY_CPU_LAYER"] = layer
    command = [sys.executable, str(RUNNER), str(library), str(out), *map(str, graphs)]
    if cpu:
        command = [QEMU, "-cpu", cpu, *command]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def report(proc) -> dict:
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.splitlines()[0])


def assert_identical(expected: dict, got: dict, what: str) -> None:
    assert expected.keys() == got.keys(), what
    for graph, tensors in expected.items():
        for name, value in tensors.items():
            np.testing.assert_array_equal(got[graph][name], value, err_msg=f"{what}: {graph}/{name}")


@pytest.fixture(scope="module")
def library() -> Path:
    return ort_library_path(build=True)


@pytest.fixture(scope="module")
def graphs(tmp_path_factory) -> list[Path]:
    return list(write_graphs(tmp_path_factory.mktemp("qemu_graphs")).values())


@pytest.mark.parametrize(("cpu", "layer"), [("Westmere", "portable"), ("Haswell", "avx2")])
def test_emulated_cpu_runs_its_layer_with_the_native_outputs(library, graphs, tmp_path, cpu, layer):
    emulated = run(library, graphs, tmp_path / cpu, cpu=cpu)
    chosen = report(emulated)
    assert chosen["layer"] == layer and "CPUID" in chosen["layer_reason"], chosen
    native = run(library, graphs, tmp_path / "native", layer=layer)
    assert report(native)["layer"] == layer
    assert_identical(load_outputs(tmp_path / "native"), load_outputs(tmp_path / cpu), f"-cpu {cpu} against native {layer}")


def test_a_forced_layer_the_emulated_cpu_lacks_is_refused(library, graphs, tmp_path):
    proc = run(library, graphs[:1], tmp_path, cpu="Westmere", layer="avx2")
    assert proc.returncode != 0
    assert json.loads(proc.stdout.splitlines()[0])["layers_supported"] == "portable"
    assert ("DAT_DEPLOY_CPU_LAYER=avx2 needs x86-64-v3 (AVX2, FMA, F16C, BMI1/2, LZCNT, MOVBE), which this CPU does "
            "not have; it can run: portable.") in proc.stderr


def test_the_triton_repository_copy_runs_on_a_cpu_without_avx(library, graphs, tmp_path):
    """`dat-deploy triton` copies the library and the graph into the repository; both must run on a CPU without AVX."""
    source = next(g for g in graphs if g.stem == "deform_sample")
    model = onnx.load(source)
    model.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 5, 6]))
    folder = tmp_path / "models" / "deform_sample"
    (folder / "1").mkdir(parents=True)
    onnx.save(model, folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(
        'name: "deform_sample"\nplatform: "onnxruntime_onnx"\nmax_batch_size: 0\n'
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 2, 8, 9, 11 ] }, '
        '{ name: "pos" data_type: TYPE_FP32 dims: [ 4, 5, 6, 2 ] } ]\n'
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 2, 8, 5, 6 ] } ]\n'
        'instance_group [ { count: 1 kind: KIND_CPU } ]\n')
    repository = tmp_path / "repo"
    env = {**os.environ, "DAT_DEPLOY_ORT_OPS": str(library)}
    cli = subprocess.run([sys.executable, "-m", "dat_deploy.cli", "triton", "deform_sample", "--models",
                          str(tmp_path / "models"), "-o", str(repository)], env=env, capture_output=True, text=True,
                         timeout=300)
    assert cli.returncode == 0, cli.stdout[-2000:] + cli.stderr[-2000:]
    served = repository / "deform_sample"
    copied_library = served / library.name  # libdat_ort_ops.so, unless DAT_DEPLOY_ORT_OPS names another file
    assert copied_library.is_file() and copied_library.read_bytes() == library.read_bytes()
    graph = tmp_path / "served" / "deform_sample.onnx"  # the repository's graph, next to the feeds the runner reads
    graph.parent.mkdir()
    shutil.copy(served / "1" / "model.onnx", graph)
    shutil.copy(source.with_suffix(".inputs.npz"), graph.with_suffix(".inputs.npz"))

    emulated = run(copied_library, [graph], tmp_path / "westmere", cpu="Westmere")
    assert report(emulated)["layer"] == "portable"
    native = run(library, [source], tmp_path / "native", layer="portable")
    assert report(native)["layer"] == "portable"
    np.testing.assert_array_equal(load_outputs(tmp_path / "westmere")["deform_sample"]["y"],
                                  load_outputs(tmp_path / "native")["deform_sample"]["y"])
