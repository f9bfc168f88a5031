"""Gathering model folders into a Triton repository; every config checked with Triton's ModelConfig protobuf."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import onnx
import pytest
from onnx import TensorProto, helper

from dat_deploy.errors import UserError
from dat_deploy.triton.config import load_config
from dat_deploy.triton.repository import gather

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")

CONFIG = """
name: "{name}"
platform: "{platform}"
max_batch_size: 8
input [ {{ name: "input" data_type: TYPE_FP32 dims: [ 3, 8, 8 ] }} ]
output [ {{ name: "logits" data_type: TYPE_FP32 dims: [ 3 ] }} ]
dynamic_batching {{ preferred_batch_size: [ 4, 8 ] max_queue_delay_microseconds: 100 }}
instance_group [ {{ count: 1 kind: {kind} }} ]
"""


def _tiny_onnx(path: Path, plugin: bool = False, batch: str | int = "batch") -> None:
    """input (batch,3,8,8) -> logits (batch,3); the plugin flavour carries a node in the `dat` domain."""
    nodes = [helper.make_node("ReduceMean", ["input", "axes"], ["logits"], keepdims=0)]
    if plugin:
        nodes = [helper.make_node("DATDeformSample", ["input", "input"], ["sampled"], domain="dat", groups=1),
                 helper.make_node("ReduceMean", ["sampled", "axes"], ["logits"], keepdims=0)]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])],
        initializer=[helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])],
    )
    opsets = [helper.make_opsetid("", 18)] + ([helper.make_opsetid("dat", 1)] if plugin else [])
    onnx.save(helper.make_model(graph, opset_imports=opsets), str(path))


def _model_folder(root: Path, name: str, kind: str = "onnx", plugin: bool = False, **onnx_kwargs) -> Path:
    folder = root / name
    (folder / "1").mkdir(parents=True)
    if kind == "onnx":
        _tiny_onnx(folder / "1" / "model.onnx", plugin=plugin, **onnx_kwargs)
        platform, device = "onnxruntime_onnx", "KIND_CPU"
    else:
        (folder / "1" / "model.plan").write_bytes(b"not a real engine")
        platform, device = "tensorrt_plan", "KIND_GPU"
    (folder / "config.pbtxt").write_text(CONFIG.format(name=name, platform=platform, kind=device))
    return folder


def _parse(path: Path):
    config = model_config_pb2.ModelConfig()
    text_format.Parse(path.read_text(), config)  # independent of dat_deploy's own loader
    return config


def test_gather_standard_onnx(tmp_path):
    models = tmp_path / "models"
    _model_folder(models, "dat_t_onnx")
    _model_folder(models, "other_onnx")
    result = gather(["dat_t_onnx"], tmp_path / "repo", models_root=models)

    config = _parse(tmp_path / "repo" / "dat_t_onnx" / "config.pbtxt")
    assert config.name == "dat_t_onnx" and config.platform == "onnxruntime_onnx"
    assert list(config.input[0].dims) == [3, 8, 8] and config.max_batch_size == 8
    assert not config.model_operations.op_library_filename  # no custom ops in a standard graph
    assert (tmp_path / "repo" / "dat_t_onnx" / "1" / "model.onnx").is_file()
    assert not (tmp_path / "repo" / "other_onnx").exists()
    assert [p.name for p in (tmp_path / "repo").iterdir()] == ["dat_t_onnx"]  # no staging left behind

    argv = shlex.split(result.command)
    assert argv[:2] == ["docker", "run"] and "--gpus=all" not in argv  # a CPU model needs no GPU
    assert f"{(tmp_path / 'repo').resolve()}:/models" in argv
    assert argv[-2:] == ["tritonserver", "--model-repository=/models"]


def test_plugin_onnx_is_served_with_the_cpu_fusions(tmp_path):
    """The repository's copy gets the rewrites dat-deploy's onnxruntime backend makes; the export stays as it is."""
    import math

    import numpy as np
    from onnx import numpy_helper

    models = tmp_path / "models"
    folder = _model_folder(models, "dat_t_plugin", plugin=True)
    exported = onnx.load(str(folder / "1" / "model.onnx"))
    gelu = [  # Add(bias) + GELU as the exporter writes it, on the logits
        helper.make_node("Add", ["pooled", "bias"], ["pre"]),
        helper.make_node("Div", ["pre", "sqrt2"], ["div"]),
        helper.make_node("Erf", ["div"], ["erf"]),
        helper.make_node("Add", ["erf", "one"], ["plus1"]),
        helper.make_node("Mul", ["pre", "plus1"], ["mul"]),
        helper.make_node("Mul", ["mul", "half"], ["logits"]),
    ]
    exported.graph.node[-1].output[0] = "pooled"
    exported.graph.node.extend(gelu)
    for name, value in (("bias", np.arange(3, dtype=np.float32)), ("sqrt2", np.float32(math.sqrt(2))),
                        ("one", np.float32(1)), ("half", np.float32(0.5))):
        exported.graph.initializer.append(numpy_helper.from_array(np.asarray(value), name))
    onnx.save(exported, str(folder / "1" / "model.onnx"))
    lib = tmp_path / "libdat_ort_ops.so"
    lib.write_bytes(b"\x7fELF fake")

    result = gather([], tmp_path / "repo", models_root=models, ort_ops_library=lib)
    served = onnx.load(str(tmp_path / "repo" / "dat_t_plugin" / "1" / "model.onnx"))
    assert [n.op_type for n in served.graph.node] == ["DATDeformSample", "ReduceMean", "DATBiasGelu"]
    assert "Erf" in [n.op_type for n in onnx.load(str(folder / "1" / "model.onnx")).graph.node]
    assert result.models[0].cpu_fusions == {"DATBiasGelu": 1}
    assert any("1 DATBiasGelu" in note for note in result.notes)


def test_plugin_onnx_gets_its_op_library(tmp_path):
    models = tmp_path / "models"
    _model_folder(models, "dat_t_plugin", plugin=True)
    lib = tmp_path / "build" / "libdat_ort_ops.so"
    lib.parent.mkdir()
    lib.write_bytes(b"\x7fELF fake")

    with pytest.raises(UserError, match="custom-op library"):
        gather([], tmp_path / "repo", models_root=models, ort_ops_library=tmp_path / "missing.so")

    result = gather([], tmp_path / "repo", models_root=models, ort_ops_library=lib)
    config = _parse(tmp_path / "repo" / "dat_t_plugin" / "config.pbtxt")
    assert list(config.model_operations.op_library_filename) == ["/models/dat_t_plugin/libdat_ort_ops.so"]
    assert (tmp_path / "repo" / "dat_t_plugin" / "libdat_ort_ops.so").read_bytes() == lib.read_bytes()
    assert "LD_PRELOAD" not in result.command


def test_engine_is_served_with_ld_preload(tmp_path):
    models = tmp_path / "models"
    _model_folder(models, "dat_t_trt", kind="plan")
    plugin = tmp_path / "libdat_trt_plugins.so"
    plugin.write_bytes(b"\x7fELF fake")
    result = gather(["dat_t_trt"], tmp_path / "repo", models_root=models, trt_plugin_library=plugin)
    argv = shlex.split(result.command)
    assert "--gpus=all" in argv
    assert argv[argv.index("-e") + 1] == "LD_PRELOAD=/models/dat_t_trt/libdat_trt_plugins.so"
    assert (tmp_path / "repo" / "dat_t_trt" / "libdat_trt_plugins.so").is_file()
    assert _parse(tmp_path / "repo" / "dat_t_trt" / "config.pbtxt").platform == "tensorrt_plan"


def test_existing_model_is_not_overwritten_silently(tmp_path):
    models = tmp_path / "models"
    _model_folder(models, "m")
    gather(["m"], tmp_path / "repo", models_root=models)
    (tmp_path / "repo" / "m" / "marker").write_text("old")
    with pytest.raises(UserError, match="already exists"):
        gather(["m"], tmp_path / "repo", models_root=models)
    assert (tmp_path / "repo" / "m" / "marker").exists()
    gather(["m"], tmp_path / "repo", models_root=models, overwrite=True)
    assert not (tmp_path / "repo" / "m" / "marker").exists()
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["m"]


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t: t.replace('name: "bad"', 'name: "renamed"'), "differs from its folder name"),
        (lambda t: t.replace("max_batch_size: 8", "max_batch_sise: 8"), "not a valid Triton ModelConfig"),
        (lambda t: t.replace("dims: [ 3, 8, 8 ]", "dims: [ 3, 9, 9 ]"), r"dims \[3, 9, 9\] in the config"),
        (lambda t: t.replace('name: "logits"', 'name: "probs"'), "does not declare"),
        (lambda t: t.replace("max_batch_size: 8", "max_batch_size: 0"), "dynamic_batching needs max_batch_size"),
        (lambda t: t.replace("onnxruntime_onnx", "pytorch_libtorch"), "not one dat-deploy writes"),
    ],
)
def test_bad_configs_are_refused_before_copying(tmp_path, edit, message):
    folder = _model_folder(tmp_path / "models", "bad")
    config = folder / "config.pbtxt"
    config.write_text(edit(config.read_text()))
    with pytest.raises(UserError, match=message):
        gather(["bad"], tmp_path / "repo", models_root=tmp_path / "models")
    assert not (tmp_path / "repo" / "bad").exists()


def test_fixed_batch_onnx_with_batching_config_is_refused(tmp_path):
    _model_folder(tmp_path / "models", "fixed", batch=1)
    with pytest.raises(UserError, match="dynamic first"):
        gather(["fixed"], tmp_path / "repo", models_root=tmp_path / "models")


def test_missing_sources_are_reported(tmp_path):
    _model_folder(tmp_path / "models", "present")
    with pytest.raises(UserError, match="present"):
        gather(["absent"], tmp_path / "repo", models_root=tmp_path / "models")
    with pytest.raises(UserError, match="no model folders"):
        gather([], tmp_path / "repo", models_root=tmp_path / "empty")


def test_load_config_reports_the_file(tmp_path):
    path = tmp_path / "config.pbtxt"
    path.write_text("name: 'x'\nplatfrom: 'onnxruntime_onnx'\n")
    with pytest.raises(UserError, match="config.pbtxt"):
        load_config(path)


def _write_sidecar(folder: Path, plugin_library) -> None:
    import json

    (folder / "dat_deploy.json").write_text(json.dumps({"format": "tensorrt", "plugin_library": plugin_library}))


def test_engine_without_plugins_needs_no_preload(tmp_path):
    folder = _model_folder(tmp_path / "models", "native_trt", kind="plan")
    _write_sidecar(folder, None)  # build-trt's record of a native-flavour engine
    result = gather([], tmp_path / "repo", models_root=tmp_path / "models")
    assert "LD_PRELOAD" not in result.command
    assert not any("no TensorRT plugin library" in note for note in result.notes)
    assert "--gpus=all" in shlex.split(result.command)


def test_engine_uses_the_plugin_it_was_built_with(tmp_path):
    import hashlib

    built_with = tmp_path / "build" / "libdat_trt_plugins.so"
    built_with.parent.mkdir()
    built_with.write_bytes(b"\x7fELF the build used for the plan")
    folder = _model_folder(tmp_path / "models", "dat_t_trt", kind="plan")
    _write_sidecar(folder, {"path": str(built_with), "sha256": hashlib.sha256(built_with.read_bytes()).hexdigest()})

    result = gather([], tmp_path / "repo", models_root=tmp_path / "models")
    copied = tmp_path / "repo" / "dat_t_trt" / "libdat_trt_plugins.so"
    assert copied.read_bytes() == built_with.read_bytes()
    assert not any("not the plugin build" in note for note in result.notes)

    other = tmp_path / "other.so"
    other.write_bytes(b"\x7fELF another build")
    result = gather([], tmp_path / "repo2", models_root=tmp_path / "models", trt_plugin_library=other)
    assert any("not the plugin build the engine was made with" in note for note in result.notes)


def test_engine_plugin_not_found_is_a_note_not_a_crash(tmp_path, monkeypatch):
    import dat_deploy.triton.repository as triton_repo

    monkeypatch.setattr(triton_repo, "default_plugin_library", lambda kind: None)
    _model_folder(tmp_path / "models", "old_trt", kind="plan")  # no sidecar: assume it needs the plugin
    result = gather([], tmp_path / "repo", models_root=tmp_path / "models")
    assert "LD_PRELOAD" not in result.command
    assert any("no TensorRT plugin library" in note for note in result.notes)


@pytest.mark.slow
def test_exported_plugin_model_is_servable(tmp_path, export_once):
    """export (plugin flavour) -> gather -> what Triton's onnxruntime backend does with the folder."""
    import numpy as np
    import onnxruntime as ort

    exported = export_once("dat_t", flavor="plugin").folder
    models, name = exported.parent, exported.name
    result = gather([name], tmp_path / "repo", models_root=models)

    folder = tmp_path / "repo" / name
    config = _parse(folder / "config.pbtxt")
    (library,) = config.model_operations.op_library_filename
    assert library == f"/models/{name}/libdat_ort_ops.so"
    assert [group.kind for group in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_CPU]
    assert "--gpus=all" not in result.command  # the custom ops are CPU kernels
    # the repository's graph is the same whatever CPU packages it: no DATGemm, which pays only on some CPUs
    assert result.models[0].cpu_fusions == {"DATBiasGelu": 12, "DATAddLayerNorm": 21}
    note = next(n for n in result.notes if "custom-op library" in n and "any x86-64 CPU" in n)
    assert re.search(r"glibc >= 2\.\d+", note)
    assert f"{(tmp_path / 'repo').resolve()}:/models" in shlex.split(result.command)
    # the ORT backend registers the library, then loads the model; the container path maps to our folder
    options = ort.SessionOptions()
    options.register_custom_ops_library(str(folder / Path(library).name))
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), options, providers=["CPUExecutionProvider"])
    (logits,) = session.run(None, {config.input[0].name: np.zeros((2, *config.input[0].dims), np.float32)})
    assert logits.shape == (2, *config.output[0].dims)


def test_cli_triton(tmp_path):
    import json

    from typer.testing import CliRunner

    from dat_deploy.cli import app

    _model_folder(tmp_path / "models", "dat_t")
    runner = CliRunner(env={"COLUMNS": "250"})
    result = runner.invoke(app, ["triton", "--models", str(tmp_path / "models"), "-o", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    assert "docker run" in result.output and "--model-repository=/models" in result.output
    _parse(tmp_path / "repo" / "dat_t" / "config.pbtxt")

    result = runner.invoke(app, ["triton", "dat_t", "--models", str(tmp_path / "models"), "-o", str(tmp_path / "repo"),
                                 "--overwrite", "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert [m["name"] for m in payload["models"]] == ["dat_t"] and payload["command"].startswith("docker run")

    result = runner.invoke(app, ["triton", "dat_t", "--models", str(tmp_path / "models"), "-o", str(tmp_path / "repo")])
    assert result.exit_code != 0 and "already exists" in str(result.exception)


def test_cli_triton_says_which_models_have_random_weights(tmp_path):
    import json

    from typer.testing import CliRunner

    from dat_deploy.cli import app

    models = tmp_path / "models"
    random_init = _model_folder(models, "dat_t")
    (random_init / "dat_deploy.json").write_text(json.dumps({"metadata": {"variant": "dat_t", "random_init_seed": "0"}}))
    trained = _model_folder(models, "dat_s")
    (trained / "dat_deploy.json").write_text(json.dumps({"metadata": {"variant": "dat_s", "weights_sha256": "ab" * 32}}))
    runner = CliRunner(env={"COLUMNS": "250"})
    result = runner.invoke(app, ["triton", "--models", str(models), "-o", str(tmp_path / "repo")])
    assert result.exit_code == 0, result.output
    notes = [line for line in result.output.splitlines() if "random weights" in line]
    assert len(notes) == 1 and "dat_t has seeded random weights (seed 0)" in notes[0]

    result = runner.invoke(app, ["triton", "--models", str(models), "-o", str(tmp_path / "repo2"), "--json"])
    payload = json.loads(result.stdout)
    assert {m["name"]: m["random_weights"] for m in payload["models"]} == {"dat_t": True, "dat_s": False}


def test_a_refused_source_leaves_no_output_folder(tmp_path):
    _model_folder(tmp_path / "models", "present")
    (tmp_path / "models" / "fake").mkdir()
    for sources in (["absent"], [str(tmp_path / "models" / "fake")]):
        with pytest.raises(UserError):
            gather(sources, tmp_path / "repo", models_root=tmp_path / "models")
        assert not (tmp_path / "repo").exists()
