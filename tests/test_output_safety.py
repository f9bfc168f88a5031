"""What commands write: only plain folder names, nothing left behind by a failed command, the umask's modes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import onnx
import pytest
from typer.testing import CliRunner

import dat_deploy.cli  # noqa: F401  (registers the commands)
from dat_deploy import atomic
from dat_deploy.commands._app import app
from dat_deploy.errors import UserError
from dat_deploy.export.repository import write_model_folder
from dat_deploy.trt.loader import tensorrt_available
from test_triton import _model_folder
from test_trt_cpu import export_into, sampling_model

UNSAFE_NAMES = ["a/b", "../x", "/abs/x", ".hidden", "..", "a b", "", "x\\y"]


def _tree(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() + ("/" if p.is_dir() else "") for p in root.rglob("*"))


# ---- unsafe names ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_export_refuses_a_name_that_is_not_one_folder_before_any_work(tmp_path, no_model_building, name):
    output = tmp_path / "models"
    result = CliRunner().invoke(app, ["export", "--name", name, "-o", str(output)])
    assert isinstance(result.exception, UserError), result.output
    assert "--name" in str(result.exception) and "plain folder name" in str(result.exception)
    assert not output.exists() and _tree(tmp_path) == []


@pytest.mark.parametrize("name", UNSAFE_NAMES)
def test_build_trt_refuses_a_name_that_is_not_one_folder(tmp_path, name):
    source = tmp_path / "toy.onnx"
    onnx.save(sampling_model(), str(source))
    result = CliRunner().invoke(app, ["build-trt", str(source), "--flavor", "native", "--name", name,
                                      "-o", str(tmp_path / "models")])
    assert isinstance(result.exception, UserError), result.output
    assert "plain folder name" in str(result.exception)
    assert _tree(tmp_path) == ["toy.onnx"]


def test_safe_names_pass():
    for name in ("dat_t", "dat_t-v2", "DAT.T++".replace("+", "p"), "a" * 128):
        assert atomic.check_folder_name(name) == name
    with pytest.raises(UserError):
        atomic.check_folder_name("a" * 129)


# ---- nothing left behind -----------------------------------------------------------------------------------------


def _failing_invocations(root: Path) -> dict[str, list[str]]:
    models = root / "models"
    export_into(models, "toy", sampling_model())
    (models / "fake").mkdir()
    (models / "fake" / "config.pbtxt").write_text("this is not a Triton config")
    (root / "notes.txt").write_text("not an image")
    (root / "broken.onnx").write_bytes(b"not onnx")
    repo = str(root / "repo")
    cases = {
        "triton with a missing model folder": ["triton", "absent", "--models", str(models), "-o", repo],
        "triton with a fake model folder": ["triton", str(models / "fake"), "-o", repo],
        "export with a text file as weights": ["export", "-w", str(root / "notes.txt"), "-o", str(models)],
        "visualize a file that is not an image": ["visualize", str(root / "notes.txt"), "-o", str(root / "v.png")],
        "convert-fp16 of a file that is not ONNX": ["convert-fp16", str(root / "broken.onnx"), "-o", str(root / "h.onnx")],
        "build-trt of a standard export as plugin flavour": ["build-trt", "--fp16", "-o", str(models)],
    }
    if not tensorrt_available():
        cases["build-trt --fp16 without TensorRT"] = ["build-trt", "--fp16", "--flavor", "native", "-o", str(models)]
    return cases


def test_a_failed_command_leaves_nothing_behind(tmp_path):
    names = list(_failing_invocations(tmp_path / "probe"))
    for name in names:
        root = tmp_path / f"case{names.index(name)}"
        args = _failing_invocations(root)[name]
        before = _tree(root)
        result = CliRunner().invoke(app, args)
        assert isinstance(result.exception, UserError), f"{name}: {result.output} {result.exception!r}"
        assert _tree(root) == before, f"{name} left {sorted(set(_tree(root)) - set(before))}"


# ---- file modes follow the umask ---------------------------------------------------------------------------------


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    os.umask(previous)

    def set_mask(mask: int) -> None:
        os.umask(mask)

    yield set_mask
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_files_get_the_mode_open_would_give(tmp_path, umask, mask):
    umask(mask)
    written = atomic.write_text(tmp_path / "report.json", "{}")
    with open(tmp_path / "plain.json", "w") as f:  # the reference: what open() creates
        f.write("{}")
    assert _mode(written) == _mode(tmp_path / "plain.json") == 0o666 & ~mask
    with atomic.atomic_path(tmp_path / "figure.png") as tmp:
        tmp.write_bytes(b"png")
    assert _mode(tmp_path / "figure.png") == 0o666 & ~mask


@pytest.mark.parametrize("mask", [0o022, 0o027])
def test_model_folders_get_the_modes_mkdir_would_give(tmp_path, umask, mask):
    umask(mask)
    folder = write_model_folder(tmp_path / "models", "toy", {"1/model.onnx": b"x", "config.pbtxt": b"y"})
    (tmp_path / "reference").mkdir()
    assert _mode(folder) == _mode(tmp_path / "reference") == 0o777 & ~mask
    assert _mode(folder / "1") == 0o777 & ~mask
    assert _mode(folder / "config.pbtxt") == _mode(folder / "1" / "model.onnx") == 0o666 & ~mask


# ---- messages about folders ---------------------------------------------------------------------------------------


def test_an_unwritable_folder_is_named_once(tmp_path, monkeypatch):
    readonly = tmp_path / "rodir"
    readonly.mkdir()
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != readonly)  # root may write anywhere
    with pytest.raises(UserError) as caught:
        atomic.check_creatable_dir(readonly)
    assert str(caught.value).count("rodir") == 1
    with pytest.raises(UserError) as caught:
        atomic.check_creatable_dir(readonly / "new" / "deeper")
    assert f"({readonly}, where it would be created, is not)" in str(caught.value)


def test_validate_checks_its_report_folder_before_validating(tmp_path, monkeypatch):
    import dat_deploy.parity.validate as validate

    def refuse(*_args, **_kwargs):
        raise AssertionError("validated before checking where the report goes")

    monkeypatch.setattr(validate, "validate_artifact", refuse)
    blocker = tmp_path / "file"
    blocker.write_text("a file where the report folder would be")
    result = CliRunner().invoke(app, ["validate", "--report", str(blocker / "r.json")])
    assert isinstance(result.exception, UserError), result.output
    assert "--report" in str(result.exception) and "--output" not in str(result.exception)


def test_visualize_refuses_an_existing_output_before_running_the_model(tmp_path, monkeypatch):
    import dat_deploy.model as model

    monkeypatch.setattr(model, "create_model", lambda *a, **k: (_ for _ in ()).throw(AssertionError("model built")))
    out = tmp_path / "points.png"
    out.write_bytes(b"keep")
    result = CliRunner().invoke(app, ["visualize", "sample:chelsea", "-o", str(out)])
    assert isinstance(result.exception, UserError), result.output
    message = str(result.exception)
    assert "--overwrite" in message and "--name" not in message and out.read_bytes() == b"keep"
