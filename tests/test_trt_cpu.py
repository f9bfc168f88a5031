"""build-trt on a machine without TensorRT: every step that does not need TensorRT, and the stop.

Also the pieces around the engine that are plain Python: the Triton config, picking the latest
export, the flavour/opset checks, the runtime's version and plugin checks, and the build
orchestration driven through a stand-in `tensorrt` module (the real API is exercised by
tests/gpu/test_trt_gpu.py wherever TensorRT and a GPU exist).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types

import numpy as np
import onnx
import pytest
from google.protobuf import text_format
from onnx import TensorProto, helper, numpy_helper

from dat_deploy.errors import UserError
from dat_deploy.artifacts import read_sidecar
from dat_deploy.graph.fp16 import precision_summary
from dat_deploy.trt.build import BuildOptions, build_trt, prepare_build, write_fp16_graph
from dat_deploy.hashing import sha256_file
from dat_deploy.trt.loader import tensorrt_available
from dat_deploy.trt.source import check_flavor, find_latest_export, read_source
from dat_deploy.triton.config import config_text
from dat_deploy.triton.tensorrt import tensorrt_model_config

FLOAT = TensorProto.FLOAT
no_tensorrt = pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here; these test its absence")


def sampling_model(plugin: bool = False, opset: int = 18, fp16_marked: bool = False) -> onnx.ModelProto:
    """input -> Conv -> (offsets -> positions) -> GridSample or dat.DATDeformSample -> pool -> MatMul head."""
    rng = np.random.default_rng(0)
    ys = (np.arange(4) + 0.5) / 4 * 2 - 1
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3, 1, 1)).astype(np.float32), "w"),
        numpy_helper.from_array(rng.normal(size=(2, 4, 1, 1)).astype(np.float32), "off_w"),
        numpy_helper.from_array(np.stack(np.meshgrid(ys, ys, indexing="ij"), -1).astype(np.float32), "ref"),
        numpy_helper.from_array(rng.normal(size=(4, 7)).astype(np.float32), "head_w"),
        numpy_helper.from_array(np.array([2, 3], np.int64), "axes"),
    ]
    nodes = [
        helper.make_node("Conv", ["input", "w"], ["x"]),
        helper.make_node("Conv", ["x", "off_w"], ["off"]),
        helper.make_node("Tanh", ["off"], ["off_t"]),
        helper.make_node("Transpose", ["off_t"], ["off_nhwc"], perm=[0, 2, 3, 1]),
        helper.make_node("Add", ["off_nhwc", "ref"], ["pos"]),
    ]
    if plugin:
        nodes.append(helper.make_node("DATDeformSample", ["x", "pos"], ["s"], domain="dat", groups=1))
    else:
        mode = "linear" if opset >= 20 else "bilinear"
        nodes.append(helper.make_node("GridSample", ["x", "pos"], ["s"], align_corners=1, mode=mode))
    nodes += [
        helper.make_node("ReduceMean", ["s", "axes"], ["pooled"], keepdims=0),
        helper.make_node("MatMul", ["pooled", "head_w"], ["logits"]),
    ]
    graph = helper.make_graph(
        nodes, "sampling", [helper.make_tensor_value_info("input", FLOAT, ["batch", 3, 4, 4])],
        [helper.make_tensor_value_info("logits", FLOAT, ["batch", 7])], initializer=inits,
    )
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid("dat", 1)] if plugin else [])
    model = helper.make_model(graph, opset_imports=imports)
    model.ir_version = 9
    for key, value in {"variant": "toy", "input_size": "4", "num_classes": "7"}.items():
        model.metadata_props.add(key=key, value=value)
    if fp16_marked:
        model.metadata_props.add(key="precision", value="fp16")
    return model


def export_into(models, name: str, model: onnx.ModelProto, mtime: float | None = None):
    path = models / name / "1" / "model.onnx"
    path.parent.mkdir(parents=True)
    onnx.save(model, str(path))
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def all_files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


# ---- the CLI without TensorRT ----------------------------------------------------------------------------------------


@no_tensorrt
def test_build_trt_fp16_without_tensorrt_exits_2_before_converting(tmp_path):
    """TensorRT is checked before the fp16 conversion: no half engine folder lands in the model repository."""
    models = tmp_path / "models"
    export_into(models, "toy", sampling_model())
    before = all_files(models)
    done = subprocess.run(
        [sys.executable, "-m", "dat_deploy.cli", "build-trt", "--fp16", "--flavor", "native", "--output", str(models)],
        capture_output=True, text=True, timeout=300, env={**os.environ, "COLUMNS": "400"},
    )
    assert done.returncode == 2, done.stderr
    assert "TensorRT is not available" in done.stderr and "pip install" in done.stderr
    assert "Traceback" not in done.stderr and "converted the graph" not in done.stderr
    assert str(models / "toy" / "1" / "model.onnx") in done.stderr  # says which model it picked
    assert all_files(models) == before  # no toy_trt_fp16/, no model_fp16.onnx, no .partial


@no_tensorrt
def test_install_message_names_the_gpu_extra_and_nvidia_index(tmp_path):
    source = tmp_path / "toy.onnx"
    onnx.save(sampling_model(), str(source))
    with pytest.raises(UserError) as caught:
        build_trt(BuildOptions(onnx=source, flavor="native", output=tmp_path / "models"), log=lambda _m: None)
    message = str(caught.value)
    assert 'pip install "dat-deploy[gpu]"' in message and "pypi.nvidia.com" in message
    assert not (tmp_path / "models").exists()  # fp32 builds write nothing before TensorRT is needed


def test_the_fp16_graph_is_converted_outside_the_repository_and_reused_from_the_same_source(tmp_path):
    source = tmp_path / "toy.onnx"
    onnx.save(sampling_model(), str(source))
    options = BuildOptions(onnx=source, fp16=True, flavor="native", output=tmp_path / "models")
    first = prepare_build(options, log=lambda _m: None)
    assert not (tmp_path / "models").exists()  # preparing only checks
    work = tmp_path / "work"
    work.mkdir()
    write_fp16_graph(first, work, overwrite=False, log=lambda _m: None)
    assert first.engine_onnx == work / "model_fp16.onnx" and not (tmp_path / "models").exists()
    summary = precision_summary(onnx.load(str(first.engine_onnx)))
    assert summary.fp16_nodes.get("Conv") == 2 and summary.fp32_nodes.get("GridSample") == 1
    # A previous build's folder holds the fp16 graph of this same source: reused, not converted again.
    first.folder.root.mkdir(parents=True)
    first.folder.fp16_onnx.write_bytes(first.engine_onnx.read_bytes())
    second = prepare_build(options, log=lambda _m: None)
    write_fp16_graph(second, work, overwrite=False, log=lambda _m: None)
    assert second.fp16_reused and second.engine_onnx == second.folder.fp16_onnx
    onnx.save(sampling_model(opset=17), str(source))  # another source under the same name
    third = prepare_build(options, log=lambda _m: None)
    with pytest.raises(UserError, match="converted from another source"):
        write_fp16_graph(third, work, overwrite=False, log=lambda _m: None)


def test_an_existing_engine_is_not_overwritten_silently(tmp_path):
    source = tmp_path / "toy.onnx"
    onnx.save(sampling_model(), str(source))
    plan = tmp_path / "models" / "toy_trt_fp32" / "1" / "model.plan"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"old engine")
    with pytest.raises(UserError, match="--overwrite"):
        prepare_build(BuildOptions(onnx=source, flavor="native", output=tmp_path / "models"), log=lambda _m: None)
    assert plan.read_bytes() == b"old engine"


def test_an_inconsistent_batch_profile_is_refused_before_any_work(tmp_path):
    source = tmp_path / "toy.onnx"
    onnx.save(sampling_model(), str(source))
    options = BuildOptions(onnx=source, fp16=True, flavor="native", output=tmp_path / "m", min_batch=8, opt_batch=4)
    with pytest.raises(UserError, match="min <= opt <= max"):
        prepare_build(options, log=lambda _m: None)
    assert not (tmp_path / "m").exists()


# ---- Triton config -------------------------------------------------------------------------------------------------


def test_config_pbtxt_parses_as_a_triton_model_config():
    from tritonclient.grpc import model_config_pb2

    config = tensorrt_model_config("dat_t_trt_fp16", "input", (3, 224, 224), {"logits": (1000,)}, 32, (8, 32))
    parsed = text_format.Parse(config_text(config), model_config_pb2.ModelConfig())
    assert parsed.platform == "tensorrt_plan" and parsed.max_batch_size == 32
    assert [(i.name, list(i.dims), i.data_type) for i in parsed.input] == [("input", [3, 224, 224], model_config_pb2.TYPE_FP32)]
    assert [(o.name, list(o.dims)) for o in parsed.output] == [("logits", [1000])]
    assert list(parsed.dynamic_batching.preferred_batch_size) == [8, 32]
    assert parsed.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


# ---- which model, which flavour ------------------------------------------------------------------------------------


def test_latest_export_of_the_requested_flavour_is_picked(tmp_path):
    models = tmp_path / "models"
    standard = export_into(models, "older_standard", sampling_model(), mtime=1_000)
    plugin = export_into(models, "newer_plugin", sampling_model(plugin=True), mtime=2_000)
    export_into(models, "newest_fp16", sampling_model(fp16_marked=True), mtime=3_000)  # a converted graph
    export_into(models, "toy_trt_fp16", sampling_model(), mtime=4_000)  # an engine folder
    export_into(models, ".staging.partial", sampling_model(), mtime=5_000)  # an unfinished export
    assert find_latest_export(models, "native").path == standard
    # With export's sidecar the flavour is read from it; the graph is only loaded for the pick.
    (plugin.parent.parent / "dat_deploy.json").write_text(json.dumps({"metadata": {"flavor": "plugin"}}))
    assert find_latest_export(models, "native").path == standard
    picked = find_latest_export(models, "plugin")
    assert picked.path == plugin and picked.name == "newer_plugin"


def test_no_export_of_the_flavour_says_what_to_do(tmp_path):
    models = tmp_path / "models"
    with pytest.raises(UserError, match="does not exist"):
        find_latest_export(models, "plugin")
    models.mkdir()
    with pytest.raises(UserError, match="no exported model"):
        find_latest_export(models, "plugin")
    export_into(models, "standard", sampling_model())
    with pytest.raises(UserError, match="--flavor plugin") as caught:
        find_latest_export(models, "plugin")
    assert "(standard flavour)" in str(caught.value) and "(native)" not in str(caught.value)  # export's word


def test_native_flavour_refuses_opset_20_gridsample(tmp_path):
    path = tmp_path / "opset20.onnx"
    onnx.save(sampling_model(opset=20), str(path))
    source = read_source(path)
    assert source.opset == 20 and source.grid_sample_modes == ("linear",)
    with pytest.raises(UserError, match="opset 19 or lower"):
        check_flavor(source, "native")
    onnx.save(sampling_model(opset=19), str(path))
    check_flavor(read_source(path), "native")  # passes


def test_flavour_must_match_the_graph(tmp_path):
    standard, plugin = tmp_path / "standard.onnx", tmp_path / "plugin.onnx"
    onnx.save(sampling_model(), str(standard))
    onnx.save(sampling_model(plugin=True), str(plugin))
    with pytest.raises(UserError, match="--flavor native"):
        check_flavor(read_source(standard), "plugin")
    with pytest.raises(UserError, match="standard export"):
        check_flavor(read_source(plugin), "native")
    check_flavor(read_source(plugin), "plugin")
    fp16 = tmp_path / "fp16.onnx"
    onnx.save(sampling_model(fp16_marked=True), str(fp16))
    with pytest.raises(UserError, match="already an fp16 graph"):
        check_flavor(read_source(fp16), "native")


# ---- the runtime's checks that need no GPU -------------------------------------------------------------------------


@no_tensorrt
def test_backend_without_tensorrt_says_how_to_install(tmp_path):
    from dat_deploy.runtime.tensorrt_backend import TensorRTBackend

    with pytest.raises(UserError, match="does not exist"):
        TensorRTBackend(tmp_path / "missing.plan")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan")
    with pytest.raises(UserError, match="pip install"):
        TensorRTBackend(plan)


def test_engine_from_another_tensorrt_version_is_named_as_such(tmp_path):
    from dat_deploy.runtime.tensorrt_backend import _check_versions

    trt = types.SimpleNamespace(__version__="11.4.0.106")
    _check_versions(trt, tmp_path / "model.plan", {"tensorrt_version": "11.4.0.106"})
    with pytest.raises(UserError, match=r"built by TensorRT 10\.13\.3.*this is TensorRT 11\.4\.0\.106"):
        _check_versions(trt, tmp_path / "model.plan", {"tensorrt_version": "10.13.3"})


def test_plugin_library_is_checked_against_the_sidecar(tmp_path):
    from dat_deploy.runtime.tensorrt_backend import _plugin_library

    library = tmp_path / "libdat_trt_plugins.so"
    library.write_bytes(b"the library the engine was built with")
    sidecar = {"plugin_library": {"path": str(library), "sha256": sha256_file(library)}}
    plan = tmp_path / "model.plan"
    assert _plugin_library(plan, None, sidecar) == library  # found through the sidecar
    other = tmp_path / "other.so"
    other.write_bytes(b"a rebuilt library")
    with pytest.raises(UserError, match="is not the one"):
        _plugin_library(plan, other, sidecar)
    with pytest.raises(UserError, match="does not exist"):
        _plugin_library(plan, None, {"plugin_library": {"path": str(tmp_path / "gone.so"), "sha256": "0"}})
    assert _plugin_library(plan, None, {"plugin_library": None}) is None  # native flavour


# ---- the build orchestration, against a stand-in tensorrt module ---------------------------------------------------


class _Recorder:
    def __init__(self):
        self.calls: list[tuple] = []


def stand_in_tensorrt(recorder: _Recorder) -> types.ModuleType:
    """Just enough of TensorRT's Python API for build_trt's control flow; records the calls."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = "11.4.0.106"

    class Logger:
        WARNING, INFO = 2, 3

        def __init__(self, severity):
            pass

    class Registry:
        def load_library(self, path):
            recorder.calls.append(("load_library", path))
            return object()

    registry = Registry()

    class Cache:
        def serialize(self):
            return b"timing cache"

    class Config:
        def set_memory_pool_limit(self, pool, size):
            recorder.calls.append(("workspace", size))

        def clear_flag(self, flag):
            recorder.calls.append(("clear_flag", flag))

        def add_optimization_profile(self, profile):
            recorder.calls.append(("profile", profile.shapes))

        def create_timing_cache(self, data):
            recorder.calls.append(("timing_cache_in", data))
            return Cache()

        def set_timing_cache(self, cache, ignore_mismatch):
            pass

        def get_timing_cache(self):
            return Cache()

    class Profile:
        def set_shape(self, name, low, opt, high):
            self.shapes = (name, tuple(low), tuple(opt), tuple(high))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            recorder.calls.append(("network_flags", flags))
            return object()

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            recorder.calls.append(("build",))
            return b"serialized engine"

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            pass

        def parse_from_file(self, path):
            recorder.calls.append(("parse", path))
            return True

    trt.Logger, trt.Builder, trt.OnnxParser = Logger, Builder, OnnxParser
    trt.get_plugin_registry = lambda: registry
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=0)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE=0)
    trt.BuilderFlag = types.SimpleNamespace(TF32="TF32")
    return trt


@pytest.mark.parametrize("flavor", ["native", "plugin"])
def test_build_writes_the_engine_folder_through_tensorrt_calls(tmp_path, monkeypatch, flavor):
    recorder = _Recorder()
    monkeypatch.setitem(sys.modules, "tensorrt", stand_in_tensorrt(recorder))
    models = tmp_path / "models"
    source = export_into(models, "toy", sampling_model(plugin=flavor == "plugin"))
    library = tmp_path / "libdat_trt_plugins.so"
    library.write_bytes(b"plugin library bytes")
    cache = tmp_path / "timing.cache"
    options = BuildOptions(
        fp16=True, flavor=flavor, output=models, plugin_lib=library if flavor == "plugin" else None,
        timing_cache=cache, workspace_gb=2, show_progress=False,
    )
    result = build_trt(options, log=lambda _m: None)

    folder = models / "toy_trt_fp16"
    assert result.folder.root == folder
    assert all_files(folder) == ["1/model.plan", "README.md", "config.pbtxt", "dat_deploy.json", "model_fp16.onnx"]
    assert (folder / "1" / "model.plan").read_bytes() == b"serialized engine"
    calls = [c[0] for c in recorder.calls]
    if flavor == "plugin":
        assert calls.index("load_library") < calls.index("parse")  # creators registered before parsing
    parsed = [c[1] for c in recorder.calls if c[0] == "parse"]  # TensorRT builds the fp16 graph, made outside models/
    assert len(parsed) == 1 and parsed[0].endswith("model_fp16.onnx") and str(models) not in parsed[0]
    assert ("network_flags", 1) in recorder.calls  # strongly typed
    assert ("workspace", 2 << 30) in recorder.calls
    assert ("profile", ("input", (1, 3, 4, 4), (8, 3, 4, 4), (32, 3, 4, 4))) in recorder.calls
    assert cache.read_bytes() == b"timing cache"

    sidecar = json.loads((folder / "dat_deploy.json").read_text())
    assert sidecar == read_sidecar(folder / "1" / "model.plan")
    assert sidecar["tensorrt_version"] == "11.4.0.106" and sidecar["precision"] == "fp16"
    assert sidecar["profile"] == {"input": "input", "min": [1, 3, 4, 4], "opt": [8, 3, 4, 4], "max": [32, 3, 4, 4]}
    assert sidecar["source_onnx"]["sha256"] == sha256_file(source)
    assert sidecar["engine_onnx"]["sha256"] == sha256_file(folder / "model_fp16.onnx")
    assert {"gpu", "compute_capability", "build_seconds", "built_at"} <= set(sidecar)
    assert sidecar["metadata"]["variant"] == "toy" and sidecar["input_size"] == 4
    if flavor == "plugin":
        assert sidecar["plugin_library"] == {"path": str(library.resolve()), "sha256": sha256_file(library)}
        assert "LD_PRELOAD" in (folder / "README.md").read_text()
    else:
        assert sidecar["plugin_library"] is None

    from dat_deploy.triton.config import load_config

    config = load_config(folder / "config.pbtxt")
    assert config.name == "toy_trt_fp16" and config.platform == "tensorrt_plan" and config.max_batch_size == 32
    assert list(config.input[0].dims) == [3, 4, 4] and list(config.output[0].dims) == [7]

    with pytest.raises(UserError, match="already exists"):
        build_trt(options, log=lambda _m: None)
    build_trt(BuildOptions(**{**options.__dict__, "overwrite": True}), log=lambda _m: None)


def test_progress_monitor_follows_tensorrt_phases():
    from io import StringIO

    from rich.console import Console

    from dat_deploy.trt.progress import make_progress_monitor

    class IProgressMonitor:  # stands in for trt.IProgressMonitor, which TensorRT calls back
        def __init__(self):
            pass

    monitor = make_progress_monitor(types.SimpleNamespace(IProgressMonitor=IProgressMonitor),
                                    console=Console(file=StringIO(), force_terminal=False))
    monitor.phase_start("Building engine", None, 2)
    monitor.phase_start("Tactic selection", "Building engine", 3)
    assert all(monitor.step_complete("Tactic selection", step) for step in range(3))  # True: keep building
    monitor.phase_finish("Tactic selection")
    assert monitor._tasks.keys() == {"Building engine"}
    monitor.phase_finish("Building engine")
    monitor.close()
