"""`dat-deploy validate`: PyTorch fp32 is the reference; each artifact runs the same inputs.

The reference model is rebuilt from the artifact's own metadata (variant, features or logits, the
random-init seed or the sha256 of the weights, which must then be passed with --weights).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from dat_deploy.errors import UserError
from dat_deploy.export.repository import latest_model_folder, read_sidecar
from dat_deploy.model import create_model, get_variant
from dat_deploy.hashing import sha256_file
from dat_deploy.parity.compare import TOLERANCES, Tolerance
from dat_deploy.parity.inputs import default_cases
from dat_deploy.parity.report import ParityReport, run_parity
from dat_deploy.runtime import load_backend
from dat_deploy.runtime.onnxruntime_backend import load_onnx
from dat_deploy.runtime.torch_backend import TorchBackend


def resolve_artifact(path: str | Path | None, models_dir: Path = Path("models")) -> Path:
    """An ONNX file or engine, given as a file, a model folder, or nothing (the latest export)."""
    if path is None:
        folder = latest_model_folder(models_dir)
        if folder is None:
            raise UserError(f"no exported model under {models_dir}/. Run `dat-deploy export` first or pass a path.")
        path = folder
    path = Path(path)
    if path.is_dir():
        found = sorted(path.glob("1/model.*")) or sorted(path.glob("model.*"))
        found = [p for p in found if p.suffix in (".onnx", ".plan")]
        if not found:
            raise UserError(f"{path} holds no 1/model.onnx or 1/model.plan. Pass the ONNX or engine file itself.")
        path = found[0]
    if not path.is_file():
        raise UserError(f"{path} does not exist. Pass an ONNX file, an engine, or a folder under models/.")
    return path


def artifact_metadata(path: Path) -> dict:
    """ONNX metadata_props (parsed), or an engine's sidecar metadata."""
    if path.suffix == ".onnx":
        raw = {p.key: p.value for p in load_onnx(path).metadata_props}
    else:
        sidecar = read_sidecar(path.parent.parent)
        raw = sidecar.get("metadata", sidecar)
    parsed = {}
    for key, value in raw.items():
        try:
            parsed[key] = json.loads(value) if isinstance(value, str) else value
        except json.JSONDecodeError:
            parsed[key] = value
    if "variant" not in parsed:
        raise UserError(f"{path} carries no dat-deploy metadata (variant), which validate needs to rebuild the PyTorch "
                        "reference. Validate a model written by `dat-deploy export` or `dat-deploy build-trt`.")
    return parsed


def reference_model(meta: dict, weights: Path | None):
    features = meta.get("outputs") == "features"
    expected_sha = meta.get("weights_sha256")
    if expected_sha:
        if weights is None:
            raise UserError(f"the artifact was exported from weights with sha256 {expected_sha[:12]}...; pass the same file with --weights.")
        if sha256_file(weights) != expected_sha:
            raise UserError(f"{weights} is not the checkpoint this artifact was exported from (sha256 differs).")
        return create_model(meta["variant"], weights=weights, features_only=features)
    return create_model(meta["variant"], seed=int(meta.get("random_init_seed", 0)), features_only=features)


def tolerance_for(precision: str, atol: float | None, rtol: float | None, min_cosine: float | None) -> Tolerance:
    if precision not in TOLERANCES:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(TOLERANCES)}.")
    tol = TOLERANCES[precision]
    return replace(tol, **{k: v for k, v in (("atol", atol), ("rtol", rtol), ("min_cosine", min_cosine)) if v is not None})


def validate_artifact(
    artifact: str | Path | None,
    weights: Path | None = None,
    batches: list[int] = (1, 4),
    precision: str = "auto",
    atol: float | None = None,
    rtol: float | None = None,
    min_cosine: float | None = None,
    images: bool = True,
    providers: list[str] | None = None,
    bisect: bool = False,
    on_step=None,
) -> ParityReport:
    path = resolve_artifact(artifact)
    meta = artifact_metadata(path)
    if precision == "auto":
        precision = str(meta.get("precision", "fp32"))
    tol = tolerance_for(precision, atol, rtol, min_cosine)
    spec = get_variant(meta["variant"])
    if not meta.get("dynamic_batch", True) and meta.get("batch"):
        batches = [int(meta["batch"])]
    model = reference_model(meta, weights)
    candidate = load_backend(path, providers=providers)
    cases = default_cases(list(batches), spec.input_size, spec.resize_size, spec.mean, spec.std, images=images)
    report = run_parity(TorchBackend(model), [candidate], cases, tol, precision, on_step)
    report.context = {"artifact": str(path), "variant": meta["variant"], "metadata": meta}
    if bisect and not report.passed:
        if path.suffix != ".onnx":
            report.bisect = {"summary": "bisect works on ONNX artifacts only; validate the ONNX the engine was built from"}
        else:
            from dat_deploy.export.onnx_export import TraceOptions
            from dat_deploy.parity.bisect import bisect_model

            failing = next(r for r in report.results if not r.passed)
            case = next(c for c in cases if c.name == failing.case)
            options = TraceOptions(opset=int(meta.get("opset", 18)), batch=None, flavor=str(meta.get("flavor", "standard")),
                                   layout=str(meta.get("layout", "official")))  # exports before `layout` were official
            report.bisect = bisect_model(model, meta["variant"], options, case, tol)
    return report
