"""dat_deploy.artifacts: which file a model folder holds, its sidecar and its metadata, for every command."""

from __future__ import annotations

import json
import os

import onnx
import pytest
from onnx import TensorProto, helper

from dat_deploy.artifacts import (exported_onnx_files, find_model_file, find_sidecar, model_name_for, open_artifact,
                                  read_sidecar)
from dat_deploy.errors import UserError


def tiny_onnx(path, metadata=None, batch="batch"):
    """input (batch, 3, 8, 8) -> Identity -> logits; metadata_props as given."""
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["logits"])], "tiny",
                              [helper.make_tensor_value_info("input", TensorProto.FLOAT, [batch, 3, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3, 8, 8])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def test_a_folder_opens_its_highest_version_and_onnx_before_engines(tmp_path):
    folder = tmp_path / "m"
    tiny_onnx(folder / "2" / "model.onnx")
    (folder / "10").mkdir()
    (folder / "10" / "model.plan").write_bytes(b"engine")
    (folder / "10" / "model.onnx").write_bytes(b"")
    tiny_onnx(folder / "model_fp16.onnx")  # build-trt's fp16 graph beside the versions
    assert find_model_file(folder) == folder / "10" / "model.onnx"  # 10 > 2 numerically; .onnx first
    assert find_model_file(folder, (".plan",)) == folder / "10" / "model.plan"
    assert find_model_file(folder / "2" / "model.onnx") == folder / "2" / "model.onnx"  # a file is itself
    assert find_model_file(folder, filename="model.onnx") == folder / "10" / "model.onnx"
    flat = tmp_path / "flat"
    tiny_onnx(flat / "toy.onnx")
    assert find_model_file(flat) == flat / "toy.onnx"  # no version folders: the folder itself


def test_what_is_not_a_model_says_so(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        find_model_file(tmp_path / "missing")
    (tmp_path / "weights.pth").write_bytes(b"x")
    with pytest.raises(UserError, match=r"neither an ONNX model \(\.onnx\) nor a TensorRT engine"):
        find_model_file(tmp_path / "weights.pth")
    with pytest.raises(UserError, match=r"not an ONNX model \(\.onnx\)\. Pass"):
        find_model_file(tmp_path / "weights.pth", (".onnx",))
    repository = tmp_path / "models"
    tiny_onnx(repository / "dat_t" / "1" / "model.onnx")
    with pytest.raises(UserError, match=r"models is not a model folder.*pass one of its folders \(dat_t\)"):
        find_model_file(repository)
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty is not a model folder"):
        find_model_file(tmp_path / "empty")
    with pytest.raises(UserError, match=r"no <version>/model\.plan"):
        find_model_file(repository / "dat_t", filename="model.plan")
    (tmp_path / "broken.onnx").write_bytes(b"not a protobuf")
    with pytest.raises(UserError, match="broken.onnx is not an ONNX model"):
        open_artifact(tmp_path / "broken.onnx")


def test_the_sidecar_next_to_the_file_before_the_folders(tmp_path):
    plan = tmp_path / "m" / "1" / "model.plan"
    plan.parent.mkdir(parents=True)
    plan.write_bytes(b"engine")
    assert find_sidecar(plan) is None and read_sidecar(plan) == {}
    (tmp_path / "m" / "1" / "dat_deploy.json").write_text("{}")
    assert find_sidecar(plan) == tmp_path / "m" / "1" / "dat_deploy.json"
    (tmp_path / "m" / "dat_deploy.json").write_text(json.dumps({"precision": "fp16"}))
    assert find_sidecar(plan) == tmp_path / "m" / "dat_deploy.json"  # next to config.pbtxt
    (tmp_path / "m" / "1" / "model.plan.json").write_text(json.dumps({"precision": "fp32"}))
    assert read_sidecar(plan) == {"precision": "fp32"}
    (tmp_path / "m" / "1" / "model.plan.json").write_text("{not json")
    with pytest.raises(UserError, match=r"model\.plan\.json is unreadable"):
        read_sidecar(plan)
    (tmp_path / "m" / "1" / "model.plan.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="holds no JSON object"):
        open_artifact(plan)


def test_metadata_is_the_graphs_then_the_sidecars(tmp_path):
    folder = tmp_path / "dat_t_onnx"
    path = tiny_onnx(folder / "1" / "model.onnx", {"variant": "dat_t", "outputs": "logits"})
    (folder / "dat_deploy.json").write_text(json.dumps({
        "variant": "sidecar says otherwise", "outputs": ["logits"], "format": "onnx",
        "metadata": {"variant": "nested says otherwise", "input_size": "224"},
    }))
    artifact = open_artifact(folder)
    assert artifact.path == path and artifact.is_onnx and not artifact.is_engine and artifact.name == "dat_t"
    assert artifact.metadata == {"variant": "dat_t", "outputs": "logits", "input_size": "224", "format": "onnx"}
    assert artifact.parsed_metadata()["input_size"] == 224
    assert artifact.inputs == {"input": ("batch", 3, 8, 8)} and artifact.outputs == {"logits": ("batch", 3, 8, 8)}
    assert artifact.sidecar["metadata"]["variant"] == "nested says otherwise"  # the sidecar as written

    engine = tmp_path / "dat_t_trt_fp16"
    (engine / "1").mkdir(parents=True)
    (engine / "1" / "model.plan").write_bytes(b"engine")
    (engine / "dat_deploy.json").write_text(json.dumps({
        "precision": "fp16", "outputs": {"logits": [1000]}, "metadata": {"variant": "dat_t", "outputs": "features"},
    }))
    artifact = open_artifact(engine)
    assert artifact.is_engine and artifact.inputs == {} and artifact.name == "dat_t_trt_fp16"
    # The model's own metadata wins over build-trt's record of the tensors.
    assert artifact.metadata == {"variant": "dat_t", "outputs": "features", "precision": "fp16"}


def test_exported_models_newest_first_without_engine_or_unfinished_folders(tmp_path):
    root = tmp_path / "models"
    assert exported_onnx_files(root) == []
    old = tiny_onnx(root / "old" / "1" / "model.onnx")
    new = tiny_onnx(root / "new" / "3" / "model.onnx")
    tiny_onnx(root / "new" / "2" / "model.onnx")
    loose = tiny_onnx(root / "loose.onnx")
    tiny_onnx(root / "old_trt_fp16" / "1" / "model.onnx")
    tiny_onnx(root / ".old.partial" / "1" / "model.onnx")
    for path, stamp in ((old, 1_000), (new, 3_000), (loose, 2_000)):
        os.utime(path, (stamp, stamp))
    assert exported_onnx_files(root) == [new, loose, old]


def test_model_names(tmp_path):
    assert model_name_for(tmp_path / "dat_t_onnx" / "1" / "model.onnx") == "dat_t"
    assert model_name_for(tmp_path / "dat_t_trt_fp16" / "1" / "model.plan") == "dat_t_trt_fp16"
    assert model_name_for(tmp_path / "toy.onnx") == "toy"


def test_build_trt_reads_a_model_folder(tmp_path):
    from dat_deploy.trt.source import read_source

    path = tiny_onnx(tmp_path / "models" / "toy" / "1" / "model.onnx", {"variant": "toy"})
    source = read_source(tmp_path / "models" / "toy")
    assert source.path == path and source.name == "toy" and source.flavor == "native"
    assert source.input_shape == ("batch", 3, 8, 8) and source.metadata == {"variant": "toy"}


def test_every_backend_declares_whether_threads_may_share_it():
    from dat_deploy.runtime import OrtBackend, TorchBackend
    from dat_deploy.runtime.tensorrt_backend import TensorRTBackend

    assert OrtBackend.thread_safe is True
    assert TorchBackend.thread_safe is False and TensorRTBackend.thread_safe is False
