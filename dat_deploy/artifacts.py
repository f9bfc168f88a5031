"""Model artifacts on disk: which file a model folder holds, its sidecar, its metadata.

Every command and the Python API find and read models here, so that they all open the same file of a
folder and read its metadata the same way. What `dat-deploy export` and `build-trt` write (Triton's layout):

    models/<name>/config.pbtxt
    models/<name>/dat_deploy.json          the sidecar: what the model is, how it was made and checked
    models/<name>/<version>/model.onnx     or model.plan (an engine); Triton serves the highest version

    art = open_artifact("models/dat_t")     # a model file, or a model folder (file or folder form)
    art.path                                # models/dat_t/1/model.onnx
    art.metadata["variant"]                 # the ONNX metadata_props, completed from the sidecar
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dat_deploy.errors import UserError

SIDECAR_NAME = "dat_deploy.json"
ONNX_SUFFIXES = (".onnx",)
ENGINE_SUFFIXES = (".plan", ".engine", ".trt")
MODEL_SUFFIXES = ONNX_SUFFIXES + ENGINE_SUFFIXES
ENGINE_FOLDER_MARK = "_trt_"  # build-trt names its folders <name>_trt_<precision>


@dataclass(frozen=True)
class Artifact:
    """One model file with what is known about it.

    `sidecar` is the sidecar JSON as written ({} when there is none). `metadata` is one flat dict:
    an ONNX file's metadata_props (strings, as exported), then for keys it lacks the sidecar's
    `metadata` (the source ONNX's, for an engine), then the sidecar's own top-level entries.
    `inputs` / `outputs` map an ONNX graph's tensor names to dims (ints, or strings for symbolic
    dims; batch included); they are empty for engines.
    """

    path: Path
    sidecar_path: Path | None = None
    sidecar: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    inputs: dict[str, tuple] = field(default_factory=dict)
    outputs: dict[str, tuple] = field(default_factory=dict)

    @property
    def is_onnx(self) -> bool:
        return self.path.suffix in ONNX_SUFFIXES

    @property
    def is_engine(self) -> bool:
        return self.path.suffix in ENGINE_SUFFIXES

    @property
    def name(self) -> str:
        return model_name_for(self.path)

    def parsed_metadata(self) -> dict[str, Any]:
        """`metadata` with JSON-encoded values decoded ("[0.5, 0.5, 0.5]" -> a list, "true" -> True)."""
        parsed = {}
        for key, value in self.metadata.items():
            try:
                parsed[key] = json.loads(value) if isinstance(value, str) else value
            except json.JSONDecodeError:
                parsed[key] = value
        return parsed


def _is_version(folder: Path) -> bool:
    return folder.name.isdigit()


def _versions_newest_first(folder: Path) -> list[Path]:
    """The numeric version folders of a model folder, highest (the one Triton serves) first."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and _is_version(p)), key=lambda p: int(p.name),
                  reverse=True)


def find_model_file(path: str | os.PathLike, suffixes: Sequence[str] = MODEL_SUFFIXES,
                    filename: str | None = None) -> Path:
    """The model file `path` names: the file itself, or in a model folder the file of its highest numeric
    version (the one Triton serves), else one in the folder itself; `.onnx` before engines in one folder.
    `filename`: the name a Triton config gives (default_model_filename): only <version>/<filename> counts."""
    path = Path(path)
    kinds = _kinds(suffixes)
    if not path.exists():
        raise UserError(f"model {path} does not exist. Export one with `dat-deploy export`, or check the path.")
    if path.is_file():
        if path.suffix not in suffixes:
            what = f"neither {kinds[0]} nor {kinds[1]}" if len(kinds) > 1 else f"not {kinds[0]}"
            raise UserError(f"{path} is {what}. Pass a model file or its model folder.")
        return path
    versions = _versions_newest_first(path)
    if filename is not None:
        found = next((v / filename for v in versions if (v / filename).is_file()), None)
        if found is None:
            raise UserError(f"{path} is not a model folder: it has no <version>/{filename} "
                            "(Triton serves the numeric version folders).")
        return found
    for folder in [*versions, path]:
        for suffix in suffixes:
            candidates = sorted(folder.glob(f"*{suffix}"))
            if candidates:
                return candidates[0]
    models = sorted(p.name for p in path.iterdir() if p.is_dir() and any(_is_version(v) for v in p.iterdir()))
    hint = " Pass a model file or a model folder."
    if models:  # a repository such as models/: name a few of its model folders
        hint = f" It looks like a model repository: pass one of its folders ({', '.join(models[:3])}" \
               f"{', ...' if len(models) > 3 else ''})."
    raise UserError(
        f"{path} is not a model folder: it holds no model file ({'/'.join(suffixes)}), neither in a numeric version "
        f"folder (<version>/model{suffixes[0]}, as `dat-deploy export` and `build-trt` write them) nor in itself." + hint
    )


def _kinds(suffixes: Sequence[str]) -> list[str]:
    """['an ONNX model (.onnx)', 'a TensorRT engine (.plan/.engine/.trt)'], as far as `suffixes` accept them."""
    onnx = [s for s in suffixes if s in ONNX_SUFFIXES]
    engine = [s for s in suffixes if s in ENGINE_SUFFIXES]
    return ([f"an ONNX model ({'/'.join(onnx)})"] if onnx else []) + (
        [f"a TensorRT engine ({'/'.join(engine)})"] if engine else [])


def model_folder(model_file: Path) -> Path:
    """The model folder of a file in Triton's layout (<folder>/<version>/model.*), else the file's folder."""
    model_file = Path(model_file)
    return model_file.parent.parent if _is_version(model_file.parent) else model_file.parent


def model_name_for(path: str | os.PathLike) -> str:
    """models/<name>/<version>/model.onnx -> <name> (without export's old `_onnx` ending); else the file stem."""
    path = Path(path)
    if _is_version(path.parent) and path.parent.parent.name:
        name = path.parent.parent.name
    else:
        name = path.stem
    return name[: -len("_onnx")] if name.endswith("_onnx") and len(name) > len("_onnx") else name


def find_sidecar(model_file: str | os.PathLike) -> Path | None:
    """The sidecar of a model file, or None: `<file>.json` or `<stem>.json` next to it, else the model
    folder's dat_deploy.json (next to config.pbtxt), else a dat_deploy.json next to the file."""
    model_file = Path(model_file)
    candidates = [Path(f"{model_file}.json"), model_file.with_suffix(".json")]
    if _is_version(model_file.parent):
        candidates.append(model_file.parent.parent / SIDECAR_NAME)
    candidates.append(model_file.parent / SIDECAR_NAME)
    return next((c for c in candidates if c.is_file()), None)


def read_json_object(path: Path, what: str = "sidecar") -> dict[str, Any]:
    """A JSON file that must hold one object; a UserError names the file otherwise."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{what} {path} is unreadable ({exc}). Re-export the model, or delete the file.") from None
    if not isinstance(data, dict):
        raise UserError(f"{what} {path} holds no JSON object. Re-export the model, or delete the file.")
    return data


def read_sidecar(model_file: str | os.PathLike) -> dict[str, Any]:
    """The sidecar JSON of a model file as written, {} when it has none."""
    path = find_sidecar(model_file)
    return read_json_object(path) if path is not None else {}


def load_onnx(path: str | os.PathLike, external_data: bool = False):
    """Parse an ONNX file (its external data only if asked), or raise a UserError that names it."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise UserError(f"ONNX file {path} does not exist. Export one with `dat-deploy export`, or check the path.")
    try:
        return onnx.load(str(path), load_external_data=external_data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise UserError(f"{path} is not an ONNX model ({type(exc).__name__}: {exc}). "
                        "Pass a file written by `dat-deploy export`, or re-export it.") from None


def tensor_dims(value_info) -> tuple:
    """An ONNX tensor's dims: ints where static, the symbol (or "?") where not."""
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?")
                 for d in value_info.type.tensor_type.shape.dim)


def graph_io(model) -> tuple[dict[str, tuple], dict[str, tuple]]:
    """(inputs, outputs) of an ONNX model: name -> dims; inputs that are initializers (old IR) left out."""
    graph = model.graph
    initializers = {init.name for init in graph.initializer}
    inputs = {i.name: tensor_dims(i) for i in graph.input if i.name not in initializers}
    return inputs, {o.name: tensor_dims(o) for o in graph.output}


def onnx_metadata(model) -> dict[str, str]:
    return {p.key: p.value for p in model.metadata_props}


def open_artifact(path: str | os.PathLike, suffixes: Sequence[str] = MODEL_SUFFIXES, model=None) -> Artifact:
    """The artifact at `path` (a model file or a model folder), with its sidecar and metadata read.

    `model`: the already parsed ONNX model of that file, if the caller has it.
    """
    model_file = find_model_file(path, suffixes)
    sidecar_path = find_sidecar(model_file)
    sidecar = read_json_object(sidecar_path) if sidecar_path is not None else {}
    metadata: dict[str, Any] = {}
    inputs: dict[str, tuple] = {}
    outputs: dict[str, tuple] = {}
    if model_file.suffix in ONNX_SUFFIXES:
        model = load_onnx(model_file) if model is None else model
        metadata = onnx_metadata(model)
        inputs, outputs = graph_io(model)
    nested = sidecar.get("metadata")
    for source in (nested if isinstance(nested, dict) else {}, sidecar):
        for key, value in source.items():
            if key != "metadata":
                metadata.setdefault(key, value)
    return Artifact(model_file, sidecar_path, sidecar, metadata, inputs, outputs)


def exported_onnx_files(root: str | os.PathLike) -> list[Path]:
    """The ONNX models exported into a model repository, newest first: each model folder's file
    (<name>/<version>/model.onnx, highest version), and loose .onnx files in the root. Folders being
    written (hidden names) and build-trt's engine folders are left out."""
    root = Path(root)
    if not root.is_dir():
        return []
    found = [p for p in root.glob("*.onnx") if p.is_file()]
    for folder in root.iterdir():
        if not folder.is_dir() or folder.name.startswith(".") or ENGINE_FOLDER_MARK in folder.name:
            continue
        for version in _versions_newest_first(folder):
            if (version / "model.onnx").is_file():
                found.append(version / "model.onnx")
                break
    return sorted(found, key=lambda p: p.stat().st_mtime, reverse=True)


__all__ = [
    "Artifact", "ENGINE_SUFFIXES", "MODEL_SUFFIXES", "ONNX_SUFFIXES", "SIDECAR_NAME", "exported_onnx_files",
    "find_model_file", "find_sidecar", "graph_io", "load_onnx", "model_folder", "model_name_for", "onnx_metadata",
    "open_artifact", "read_json_object", "read_sidecar", "tensor_dims",
]
