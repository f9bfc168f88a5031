"""`dat-deploy validate`: PyTorch fp32 is the reference; each artifact runs the same inputs.

The reference model is rebuilt from the artifact's own metadata (variant, features or logits, the
random-init seed or the sha256 of the weights, which must then be passed with --weights).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dat_deploy.artifacts import Artifact, exported_onnx_files, open_artifact
from dat_deploy.errors import UserError
from dat_deploy.model import create_model, get_variant
from dat_deploy.hashing import sha256_file
from dat_deploy.parity.compare import TOLERANCES, Tolerance
from dat_deploy.parity.inputs import default_cases, int8_cases
from dat_deploy.parity.report import ParityReport, run_parity
from dat_deploy.runtime import load_backend
from dat_deploy.runtime.torch_backend import TorchBackend


def artifact_to_validate(path: str | Path | None, models_dir: Path = Path("models")) -> Artifact:
    """The artifact to validate: a file, a model folder, or nothing (the latest export under models_dir)."""
    if path is None:
        exports = exported_onnx_files(models_dir)
        if not exports:
            raise UserError(f"no exported model under {models_dir}/. Run `dat-deploy export` first or pass a path.")
        path = exports[0]
    artifact = open_artifact(path)
    if "variant" not in artifact.metadata:
        raise UserError(f"{artifact.path} carries no dat-deploy metadata (variant), which validate needs to rebuild the "
                        "PyTorch reference. Validate a model written by `dat-deploy export` or `dat-deploy build-trt`.")
    return artifact


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


def tolerance_for(precision: str, atol: float | None = None, rtol: float | None = None, min_cosine: float | None = None,
                  **limits: float | None) -> Tolerance:
    """The precision's tolerance with the given fields replaced (min_top1, min_top5, min_mean_cosine, ...)."""
    if precision not in TOLERANCES:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(TOLERANCES)}.")
    given = {"atol": atol, "rtol": rtol, "min_cosine": min_cosine, **limits}
    return replace(TOLERANCES[precision], **{k: v for k, v in given.items() if v is not None})


def cases_for(precision: str, batches: list[int], spec, images: bool = True):
    if precision == "int8":
        return int8_cases(spec.input_size, spec.resize_size, spec.mean, spec.std)
    return default_cases(list(batches), spec.input_size, spec.resize_size, spec.mean, spec.std, images=images)


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
    limits: dict | None = None,
) -> ParityReport:
    """`limits`: further Tolerance fields to replace (min_top1, min_top5, min_mean_cosine, min_image_cosine)."""
    found = artifact_to_validate(artifact)
    path, meta = found.path, found.parsed_metadata()
    if precision == "auto":
        precision = str(meta.get("precision", "fp32"))
    tol = tolerance_for(precision, atol, rtol, min_cosine, **(limits or {}))
    spec = get_variant(meta["variant"])
    if not meta.get("dynamic_batch", True) and meta.get("batch"):
        batches = [int(meta["batch"])]
    model = reference_model(meta, weights)
    candidate = load_backend(path, providers=providers)
    cases = cases_for(precision, batches, spec, images)
    report = run_parity(TorchBackend(model), [candidate], cases, tol, precision, on_step)
    report.context = {"artifact": str(path), "variant": meta["variant"], "metadata": meta}
    if bisect and not report.passed:
        if not found.is_onnx:
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
