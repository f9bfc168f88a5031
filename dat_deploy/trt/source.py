"""The ONNX model an engine is built from: finding the latest export, and checking its flavour and opset."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from dat_deploy.artifacts import (ONNX_SUFFIXES, exported_onnx_files, find_model_file, graph_io, load_onnx,
                                  model_name_for, onnx_metadata, read_sidecar)
from dat_deploy.errors import UserError
from dat_deploy.graph.dat_graph import has_dat_nodes, is_onnx_node, onnx_opset

FLAVORS = ("plugin", "native")
# TensorRT's ONNX parser maps GridSample-20 mode="linear" to NEAREST without a word
# (NVIDIA/TensorRT#4646, onnx/onnx-tensorrt PR #1060): the native flavour needs opset <= 19.
MAX_NATIVE_OPSET = 19


@dataclass
class SourceModel:
    path: Path
    name: str  # the model's name in the repository (models/<name>/1/model.onnx -> <name>)
    flavor: str  # "plugin" (dat custom nodes) or "native" (standard GridSample)
    opset: int
    metadata: dict[str, str] = field(default_factory=dict)
    input_name: str = "input"
    input_shape: tuple = ()  # ints, or strings for symbolic dims
    output_names: tuple[str, ...] = ()
    output_shapes: tuple[tuple, ...] = ()
    grid_sample_modes: tuple[str, ...] = ()

    @property
    def is_fp16(self) -> bool:
        return self.metadata.get("precision") == "fp16"


def read_source(path: Path) -> SourceModel:
    """The ONNX model at `path` (a file, or a model folder's highest version) as build-trt needs it."""
    path = find_model_file(path, ONNX_SUFFIXES)
    model = load_onnx(path)
    graph = model.graph
    opset = onnx_opset(model)
    inputs, outputs = graph_io(model)
    if not inputs:
        raise UserError(f"{path} has no graph input; it is not an image classifier export.")
    modes = tuple(
        next((a.s.decode() for a in node.attribute if a.name == "mode"), "bilinear")
        for node in graph.node
        if is_onnx_node(node, "GridSample")
    )
    input_name, input_shape = next(iter(inputs.items()))
    return SourceModel(
        path=path,
        name=model_name_for(path),
        flavor="plugin" if has_dat_nodes(model) else "native",
        opset=opset,
        metadata=onnx_metadata(model),
        input_name=input_name,
        input_shape=input_shape,
        output_names=tuple(outputs),
        output_shapes=tuple(outputs.values()),
        grid_sample_modes=modes,
    )


def check_flavor(source: SourceModel, flavor: str) -> None:
    """Refuse a graph that the requested flavour cannot build correctly, saying what to export instead."""
    if flavor not in FLAVORS:
        raise UserError(f"unknown flavour {flavor!r}; choose one of {', '.join(FLAVORS)}.")
    if source.is_fp16:
        raise UserError(
            f"{source.path} is already an fp16 graph; pass the fp32 export (build-trt --fp16 converts it itself)."
        )
    if flavor == "plugin" and source.flavor != "plugin":
        raise UserError(
            f"{source.path} is the standard flavour (GridSample nodes, no `dat` plugin nodes). Export the plugin "
            "flavour (`dat-deploy export --flavor plugin`) or build this one with --flavor native."
        )
    if flavor == "native":
        if source.flavor == "plugin":
            raise UserError(
                f"{source.path} has `dat` plugin nodes; --flavor native needs the standard export "
                "(`dat-deploy export --flavor standard --opset 18`)."
            )
        if source.opset > MAX_NATIVE_OPSET and source.grid_sample_modes:
            raise UserError(
                f"{source.path} uses opset {source.opset} with GridSample mode={source.grid_sample_modes[0]!r}: "
                "TensorRT's ONNX parser silently samples NEAREST for opset-20 'linear' (NVIDIA/TensorRT#4646). "
                f"Re-export with opset {MAX_NATIVE_OPSET} or lower (`dat-deploy export --opset 18`), or use --flavor plugin."
            )
    if len(source.input_shape) != 4:
        raise UserError(f"{source.path}: input {source.input_name!r} has shape {source.input_shape}, expected NCHW.")


def _flavor_from_sidecar(path: Path) -> str | None:
    """The flavour `dat-deploy export` recorded next to the model, without loading the graph."""
    try:
        recorded = read_sidecar(path).get("metadata", {}).get("flavor")
    except (UserError, AttributeError):  # an unreadable sidecar: the graph itself tells
        return None
    return {"plugin": "plugin", "standard": "native"}.get(recorded)


# What `dat-deploy export --flavor` calls the graphs that build-trt's --flavor plugin / native build.
_EXPORT_FLAVOR_NAMES = {"plugin": "plugin flavour", "native": "standard flavour"}


def find_latest_export(models_dir: Path, flavor: str) -> SourceModel:
    """The model most recently exported into `models_dir` (Triton layout) whose flavour fits."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        raise UserError(f"model folder {models_dir} does not exist. Export a model first (`dat-deploy export`).")
    candidates = exported_onnx_files(models_dir)
    if not candidates:
        raise UserError(
            f"no exported model in {models_dir} (looked for {models_dir}/<name>/<version>/model.onnx). "
            "Export one with `dat-deploy export`, or pass the ONNX path."
        )
    skipped = []
    for path in candidates:
        quick = _flavor_from_sidecar(path)
        if quick is not None and quick != flavor:
            skipped.append(f"{path} ({_EXPORT_FLAVOR_NAMES[quick]})")
            continue
        source = read_source(path)
        if source.is_fp16:
            continue
        if source.flavor == flavor:
            return source
        skipped.append(f"{path} ({_EXPORT_FLAVOR_NAMES[source.flavor]})")
    wanted = "the plugin flavour (`dat-deploy export --flavor plugin`)" if flavor == "plugin" else "the standard flavour"
    raise UserError(
        f"no export of {wanted} in {models_dir}; found only {', '.join(skipped) or 'fp16 graphs'}. "
        f"Export one, pass the ONNX path, or choose --flavor {'native' if flavor == 'plugin' else 'plugin'}."
    )
