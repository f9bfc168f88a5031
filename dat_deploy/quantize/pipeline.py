"""`dat-deploy quantize`: an exported fp32 model folder in, a validated int8 model folder out.

    result = quantize_folder("models/dat_t_plugin")     # -> models/dat_t_plugin_int8/ (same Triton layout)

Steps: calibrate the unfused fp32 graph on images (our op library registered), quantize it with
onnxruntime's QDQ quantizer (`recipe`), validate the result against PyTorch fp32 on photos the calibration
did not use, and when that fails leave the layers that drift most in float and try again (a few rounds).
The onnxruntime-only fp32 fusions (DATGemm, DATBiasGelu, DATAddLayerNorm) are not written into the file:
the onnxruntime backend applies them where the session runs, and they only match what stayed float.
"""

from __future__ import annotations

import json
import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from dat_deploy.atomic import check_creatable_dir
from dat_deploy.errors import UserError
from dat_deploy.artifacts import SIDECAR_NAME
from dat_deploy.triton.config import CONFIG_NAME
from dat_deploy.export.repository import write_model_folder
from dat_deploy.quantize import images as calibration_images
from dat_deploy.quantize.calibrate import METHODS, write_calibration_cache
from dat_deploy.quantize.cpu_int8 import int8_path
from dat_deploy.quantize.recipe import (QUANTIZED_OPS, TARGETS, Recipe, constant_weight_nodes, excluded_by_pattern,
                                        quantizer_arguments)

QUANTIZED_NODE_TYPES = ("QuantizeLinear", "DequantizeLinear", "QLinearConv", "QLinearMatMul", "QGemm",
                        "MatMulInteger", "ConvInteger", "DynamicQuantizeLinear", "DynamicQuantizeMatMul")
DRIFT_ROUNDS = 3
DRIFT_IMAGES = 8


@dataclass
class QuantizeResult:
    folder: Path
    onnx_path: Path
    recipe: Recipe
    report: object  # ParityReport
    calibration: dict
    drift_rounds: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    written: bool = True


@dataclass
class _Source:
    folder: Path
    onnx_path: Path
    model: object  # onnx.ModelProto
    meta: dict
    prep: dict
    sidecar: dict


def _source(folder: Path) -> _Source:
    from dat_deploy.api import model_info
    from dat_deploy.artifacts import load_onnx, model_folder, open_artifact

    folder = Path(folder)
    if not folder.is_dir():
        raise UserError(f"{folder} is not a model folder. Pass a folder written by `dat-deploy export` (models/<name>).")
    found = open_artifact(folder)
    path = found.path
    if not found.is_onnx:
        raise UserError(f"{path} is a TensorRT engine; quantize takes the ONNX model folder it was built from.")
    model = load_onnx(path)
    meta = found.parsed_metadata()
    if "variant" not in meta:
        raise UserError(f"{path} carries no dat-deploy metadata (variant), which quantize needs to rebuild the PyTorch "
                        "reference. Quantize a model folder written by `dat-deploy export`.")
    if meta.get("precision") == "int8" or any(n.op_type in QUANTIZED_NODE_TYPES for n in model.graph.node):
        raise UserError(f"{folder} is already an int8 model. Quantize the fp32 export it came from.")
    if meta.get("precision", "fp32") != "fp32":
        raise UserError(f"{folder} is a {meta['precision']} model; quantize takes an fp32 export (`dat-deploy export`).")
    if meta.get("outputs") == "features":
        raise UserError(f"{folder} is a feature-map export; int8 is validated on logits: quantize a classifier export.")
    info = model_info(found)
    prep = {"input_size": info.input_size, "resize_size": info.resize_size, "mean": info.mean, "std": info.std}
    return _Source(model_folder(path), path, model, meta, prep, found.sidecar)


def _check_arguments(images: int, method: str, target: str) -> None:
    if images < 1:
        raise UserError(f"--images {images}: calibration needs at least 1 image (128 is the default; peers use 128-1000).")
    if method not in METHODS:
        raise UserError(f"--method {method!r}: choose one of {', '.join(METHODS)}.")
    if target not in TARGETS:
        raise UserError(f"--target {target!r}: choose one of {', '.join(TARGETS)}.")


def _quantize(source: _Source, recipe: Recipe, cache: Path, out: Path) -> None:
    import onnx
    from onnxruntime.quantization import quantize_static

    arguments = quantizer_arguments(recipe)
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.ERROR))  # quantize_static warns on the root logger to pre-process with onnxruntime
    try:  # its symbolic shape inference, which cannot see through our custom ops
        quantize_static(str(source.onnx_path), str(out), None, calibration_cache_path=str(cache),
                        nodes_to_quantize=recipe.quantized_nodes, **arguments)
    finally:
        root.setLevel(level)
    model = onnx.load(str(out))
    entries = {p.key: p.value for p in model.metadata_props}
    entries.update(precision="int8", int8_target=recipe.target)
    del model.metadata_props[:]
    onnx.helper.set_model_props(model, entries)
    onnx.save(model, str(out))


def _validate(path: Path, reference, spec, tolerance, on_step):
    from dat_deploy.parity.inputs import int8_cases
    from dat_deploy.parity.report import run_parity
    from dat_deploy.runtime.onnxruntime_backend import OrtBackend

    cases = int8_cases(spec["input_size"], spec["resize_size"], spec["mean"], spec["std"])
    return run_parity(reference, [OrtBackend(path)], cases, tolerance, "int8", on_step)


def quantize_folder(
    source: str | Path,
    output: str | Path | None = None,
    calibration: str | Path | None = None,
    images: int = 128,
    method: str = "minmax",
    target: str = "onnxruntime",
    exclude: list[str] | tuple[str, ...] = (),
    overwrite: bool = False,
    check: bool = True,
    weights: str | Path | None = None,
    reduce_range: bool = False,
    limits: dict | None = None,
    on_step: Callable[[str], None] = lambda _msg: None,
) -> QuantizeResult:
    """Quantize, validate against PyTorch fp32, write the int8 model folder atomically. Raises UserError."""
    start = time.perf_counter()
    _check_arguments(images, method, target)
    src = _source(Path(source))
    final = Path(output) if output else src.folder.parent / f"{src.folder.name}_int8"
    if final.exists() and not overwrite:
        raise UserError(f"{final} already exists. Pass --overwrite to replace it, or choose another -o.")
    check_creatable_dir(final.parent)
    if calibration is not None:  # a bad folder fails here, before any output
        calib = calibration_images.folder_calibration_set(Path(calibration), images, src.prep)
        on_step(f"read {len(calib.batch)} calibration images from {calibration}"
                + (f"; skipped {len(calib.skipped)} unreadable: {', '.join(calib.skipped[:3])}" if calib.skipped else ""))
    else:
        calib = calibration_images.default_calibration_set(images, src.prep)
        on_step(f"built the default calibration set: {images} views of scikit-image's photos")

    from dat_deploy.native import ort_library_path
    from dat_deploy.parity.validate import reference_model, tolerance_for
    from dat_deploy.graph.dat_graph import has_dat_nodes
    from dat_deploy.runtime.torch_backend import TorchBackend

    library = ort_library_path(build=True) if has_dat_nodes(src.model) else None
    recipe = Recipe(target=target, method=method, reduce_range=reduce_range, exclude_patterns=list(exclude))
    for node in constant_weight_nodes(src.model):
        pattern = excluded_by_pattern(node.name, recipe.exclude_patterns)
        if pattern is None:
            recipe.quantized_nodes.append(node.name)
        else:
            recipe.float_nodes[node.name] = f"--exclude {pattern}"
    if not recipe.quantized_nodes:
        raise UserError(f"{src.folder} has no MatMul / Gemm / Conv with constant weights left to quantize "
                        f"(--exclude {' '.join(exclude)} matched all).")
    tolerance = tolerance_for("int8", **(limits or {}))
    reference = TorchBackend(reference_model(src.meta, Path(weights) if weights else None))
    rounds: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="dat-deploy-int8-") as tmp:
        work = Path(tmp)
        cache = work / "ranges.json"
        on_step(f"calibrating {src.onnx_path.name} on {len(calib.batch)} images ({method})")
        write_calibration_cache(src.onnx_path, calib.batch, method, cache, library, list(QUANTIZED_OPS))
        candidate = work / "model.onnx"
        for round_index in range(DRIFT_ROUNDS + 1):
            on_step(f"quantizing {len(recipe.quantized_nodes)} nodes for {target}")
            _quantize(src, recipe, cache, candidate)
            on_step("validating against PyTorch fp32 on held-out photos")
            report = _validate(candidate, reference, src.prep, tolerance, on_step)
            if report.passed or round_index == DRIFT_ROUNDS:
                break
            on_step("the gate failed: measuring which layers drift most")
            from dat_deploy.quantize.drift import activation_drift, worst_nodes

            drift = activation_drift(src.onnx_path, candidate, calib.batch[:DRIFT_IMAGES], library, work)
            count = max(1, len(recipe.quantized_nodes) // 10)
            worst = worst_nodes(src.model, drift, recipe.quantized_nodes, count)
            if not worst:
                break
            rounds.append({"round": round_index + 1, "left_float": {n: round(s, 2) for n, s in worst},
                           "mean_image_cosine": _mean_cosine(report)})
            for name, sqnr in worst:
                recipe.quantized_nodes.remove(name)
                recipe.float_nodes[name] = f"drift: input SQNR {sqnr:.1f} dB, among the lowest (round {round_index + 1})"
        report.context = {"artifact": "int8 candidate", "variant": src.meta["variant"], "metadata": src.meta}
        result = QuantizeResult(final, final / "1" / "model.onnx", recipe, report, calib.source, rounds,
                                written=False)
        if check and not report.passed:
            result.seconds = time.perf_counter() - start
            return result
        data = candidate.read_bytes()
    result.seconds = time.perf_counter() - start
    files = {"1/model.onnx": data, CONFIG_NAME: _config_text(src.folder, final.name),
             SIDECAR_NAME: json.dumps(_sidecar(src, final.name, result, calib), indent=2, default=float).encode()}
    on_step(f"writing {final}")
    write_model_folder(final.parent, final.name, files, overwrite=overwrite)
    result.written = True
    return result


def _mean_cosine(report) -> float | None:
    values = [o.mean_image_cosine for r in report.results for o in r.outputs if o.mean_image_cosine is not None]
    return round(min(values), 6) if values else None


def _float_by_design(model) -> dict[str, str]:
    """The compute nodes the recipe never quantizes, counted by kind, with the reason."""
    from collections import Counter

    from dat_deploy.graph.dat_graph import is_dat_node

    quantizable = {n.name for n in constant_weight_nodes(model)}
    counts = Counter()
    for node in model.graph.node:
        if is_dat_node(node):
            counts[f"dat::{node.op_type}"] += 1
        elif node.op_type in QUANTIZED_OPS and node.name not in quantizable:
            counts[f"{node.op_type} of two activations"] += 1
        elif node.op_type in ("LayerNormalization", "Softmax", "Gelu", "Erf", "Add"):
            counts[node.op_type] += 1
    why = {"dat": "custom op: keeps fp32 I/O", "two activations": "no constant weight (attention products)",
           "LayerNormalization": "inter-channel outliers (FQ-ViT)", "Softmax": "power-law outputs (FQ-ViT)",
           "Gelu": "elementwise, no int8 gain", "Erf": "elementwise, no int8 gain", "Add": "residuals and biases"}
    return {kind: f"{count} nodes: {next(v for k, v in why.items() if k in kind)}" for kind, count in sorted(counts.items())}


def _config_text(source_folder: Path, name: str) -> bytes:
    from dat_deploy.triton.config import config_text, load_config

    config = load_config(source_folder / CONFIG_NAME)
    config.name = name
    return config_text(config).encode()


def _sidecar(src: _Source, name: str, result: QuantizeResult, calib) -> dict:
    import onnxruntime

    source_sidecar = src.sidecar
    metadata = dict(source_sidecar.get("metadata", {}))
    metadata.update(precision="int8", int8_target=result.recipe.target)
    return {
        "name": name,
        "variant": src.meta["variant"],
        "format": "onnx",
        "precision": "int8",
        "input": source_sidecar.get("input", "input"),
        "outputs": source_sidecar.get("outputs", ["logits"]),
        "metadata": metadata,
        "source": {"folder": str(src.folder), "name": source_sidecar.get("name", src.folder.name)},
        "quantization": {**result.recipe.to_dict(), "float_by_design": _float_by_design(src.model)},
        "calibration": {**calib.source, "skipped": calib.skipped},
        "drift_rounds": result.drift_rounds,
        "onnxruntime": onnxruntime.__version__,
        "cpu_int8_path": int8_path(),
        "validation": result.report.to_dict(),
        "seconds": round(result.seconds, 1),
    }
