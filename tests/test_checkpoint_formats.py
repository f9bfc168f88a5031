"""Files given as --weights are recognised by their bytes: a web page, an LFS pointer or an empty download
is named as such, never met with a traceback or with advice to turn off torch.load's safety."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from typer.testing import CliRunner

from dat_deploy.commands._app import app
from dat_deploy.errors import UserError
from dat_deploy.model.checkpoint import read_checkpoint, sniff_format
import dat_deploy.cli  # noqa: F401  (registers the commands)

NOT_CHECKPOINTS = {
    "text": (b"hello, these are not weights\n", "text file"),
    "html": (b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body>...</body></html>", "HTML page"),
    "lfs-pointer": (b"version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 114547311\n",
                    "Git LFS pointer"),
    "json": (json.dumps({"model": "dat_t", "top1": 82.0}).encode(), "JSON file"),
    "empty": (b"", "is empty (0 bytes)"),
    "unknown": (bytes(range(256)) * 4, "neither a PyTorch file"),
}


@pytest.mark.parametrize("kind", NOT_CHECKPOINTS)
def test_non_checkpoints_are_named_for_what_they_are(tmp_path, kind):
    data, words = NOT_CHECKPOINTS[kind]
    path = tmp_path / "dat_tiny_in1k_224.pth"
    path.write_bytes(data)
    assert sniff_format(path) == kind
    with pytest.raises(UserError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert words in message and str(path) in message
    assert "weights_only=False" not in message and "unpickling" not in message


def test_a_zip_that_is_not_a_torch_file_is_named(tmp_path):
    path = tmp_path / "weights.pth"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("README.txt", "the weights are elsewhere")
    with pytest.raises(UserError, match="zip archive but not a PyTorch checkpoint"):
        read_checkpoint(path)


def test_real_checkpoints_load_whatever_their_suffix(tmp_path):
    state = {"stem.0.weight": torch.arange(6.0).reshape(2, 3)}
    torch.save(state, tmp_path / "zip.pth")
    torch.save(state, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    save_file(state, str(tmp_path / "safetensors_named.pth"))  # content decides, not the name
    for name, kind in (("zip.pth", "zip"), ("legacy.pth", "pickle"), ("safetensors_named.pth", "safetensors")):
        assert sniff_format(tmp_path / name) == kind
        loaded = read_checkpoint(tmp_path / name)
        assert torch.equal(loaded["stem.0.weight"], state["stem.0.weight"])


@pytest.mark.parametrize("name", ["zip.pth", "legacy.pth"])
def test_a_truncated_checkpoint_says_what_failed(tmp_path, name):
    state = {"w": torch.zeros(1000)}
    full = tmp_path / "full.pth"
    torch.save(state, full, _use_new_zipfile_serialization=(name == "zip.pth"))
    path = tmp_path / name
    path.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    with pytest.raises(UserError) as caught:
        read_checkpoint(path)
    message = str(caught.value)
    assert "truncated or corrupt" in message and "weights_only=False" not in message
    detail = message.split("(truncated or corrupt?): ")[1].split(". Download")[0]
    assert detail.strip(" .")  # never an empty detail ("...: .")


@pytest.mark.parametrize("command", [["export"], ["predict", "--variant", "dat_t"]])
def test_cli_names_the_file_kind(tmp_path, command):
    path = tmp_path / "weights.pth"
    path.write_bytes(NOT_CHECKPOINTS["html"][0])
    result = CliRunner().invoke(app, [*command, "-w", str(path), *(["-o", str(tmp_path / "m")] if command == ["export"]
                                                                 else [])])
    assert isinstance(result.exception, UserError), result.output
    assert "HTML page" in str(result.exception)
    assert not (tmp_path / "m").exists()
