"""Comparators, kept apart from runners: per-output error statistics and a PASSED/FAILED verdict.

An output passes when every element satisfies |candidate - reference| <= atol + rtol * |reference|
(the numpy.allclose rule; for non-logit outputs atol is scaled by the output's RMS when above 1),
no value is NaN/Inf, and for logits the cosine similarity and top-1
agreement reach their minimums. `bound_used` is what decided the first test: the worst element's
share of its bound (100% or less passes). The JSON also holds the smallest atol (at rtol = 0) and
the smallest rtol (at atol = 0) that alone would have passed, as Polygraphy reports them.

int8 is judged on logits by what 8 bits can keep, not elementwise (its atol is infinite): the mean and
the smallest per-image logit cosine, top-1 agreement and top-5 overlap.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass(frozen=True)
class Tolerance:
    atol: float
    rtol: float
    min_cosine: float
    min_top1: float  # fraction of images whose top-1 class must agree (logits only)
    min_mean_cosine: float = 0.0  # mean over images of each image's logit cosine (logits only)
    min_image_cosine: float = 0.0  # the smallest image's logit cosine (logits only)
    min_top5: float = 0.0  # mean overlap of the top-5 classes (logits only)


TOLERANCES = {
    "fp32": Tolerance(atol=1e-4, rtol=1e-4, min_cosine=0.99999, min_top1=1.0),
    "fp16": Tolerance(atol=5e-2, rtol=5e-2, min_cosine=0.9995, min_top1=0.99),
    # Seeded random weights give nearly tied logits, where a few flipped classes among 16 images are noise; the
    # accuracy of int8 on a model that has learned something is proven on trained models (tests).
    "int8": Tolerance(atol=float("inf"), rtol=0.0, min_cosine=0.0, min_top1=0.6,
                      min_mean_cosine=0.99, min_image_cosine=0.98, min_top5=0.7),
}


@dataclass
class OutputComparison:
    name: str
    shape: list[int]
    max_abs: float
    mean_abs: float
    median_abs: float
    max_rel: float
    mean_rel: float
    median_rel: float
    required_atol: float
    required_rtol: float
    cosine: float
    bound_used: float  # max over elements of |cand - ref| / (atol + rtol * |ref|): <= 1 passes the allclose test
    nonfinite: int
    top1_agreement: float | None = None
    top5_overlap: float | None = None
    mean_image_cosine: float | None = None
    min_image_cosine: float | None = None
    passed: bool = False
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.ravel().astype(np.float64), b.ravel().astype(np.float64)
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    if denom == 0:
        return 1.0 if np.array_equal(a, b) else 0.0
    return float(a @ b / denom)


def _topk_metrics(reference: np.ndarray, candidate: np.ndarray) -> tuple[float, float]:
    ref_top5 = np.argsort(-reference, axis=1)[:, :5]
    cand_top5 = np.argsort(-candidate, axis=1)[:, :5]
    top1 = float(np.mean(ref_top5[:, 0] == cand_top5[:, 0]))
    overlap = float(np.mean([len(set(r) & set(c)) / 5.0 for r, c in zip(ref_top5, cand_top5)]))
    return top1, overlap


def compare_output(name: str, reference: np.ndarray, candidate: np.ndarray, tol: Tolerance,
                   is_logits: bool = False) -> OutputComparison:
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        return OutputComparison(name, list(candidate.shape), *([float("inf")] * 8), cosine=0.0,
                                bound_used=float("inf"), nonfinite=0,
                                failures=[f"shape {candidate.shape} != reference {reference.shape}"])
    nonfinite = int(np.count_nonzero(~np.isfinite(candidate)))
    diff = np.abs(candidate - reference)
    rel = diff / np.maximum(np.abs(reference), np.finfo(np.float32).tiny)
    # Logits are O(1); feature maps of deep residual stages reach O(100), where fp32 accumulation
    # alone differs by more than an absolute 1e-4. Scale atol by the output's RMS when it exceeds 1.
    scale = 1.0 if is_logits else max(1.0, float(np.sqrt(np.mean(reference**2))))
    bound = tol.atol * scale + tol.rtol * np.abs(reference)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(diff == 0, 0.0, diff / bound)
    result = OutputComparison(
        name=name,
        shape=list(reference.shape),
        max_abs=float(diff.max()),
        mean_abs=float(diff.mean()),
        median_abs=float(np.median(diff)),
        max_rel=float(rel.max()),
        mean_rel=float(rel.mean()),
        median_rel=float(np.median(rel)),
        required_atol=float(diff.max()),
        required_rtol=float(rel.max()),
        cosine=_cosine(reference, candidate),
        bound_used=float(np.nanmax(share)) if np.all(np.isfinite(diff)) else float("inf"),
        nonfinite=nonfinite,
    )
    if nonfinite:
        result.failures.append(f"{nonfinite} NaN/Inf values")
    worst = diff - bound
    if np.any(worst > 0) or not np.all(np.isfinite(diff)):
        result.failures.append(f"max abs {result.max_abs:.3g} exceeds atol {tol.atol:g} + rtol {tol.rtol:g}*|ref|")
    if result.cosine < tol.min_cosine:
        result.failures.append(f"cosine {result.cosine:.6f} < {tol.min_cosine}")
    if is_logits and reference.ndim == 2 and reference.shape[1] >= 5:
        result.top1_agreement, result.top5_overlap = _topk_metrics(reference, candidate)
        if result.top1_agreement < tol.min_top1:
            result.failures.append(f"top-1 agreement {result.top1_agreement:.1%} < {tol.min_top1:.0%}")
        if result.top5_overlap < tol.min_top5:
            result.failures.append(f"top-5 overlap {result.top5_overlap:.1%} < {tol.min_top5:.0%}")
    if is_logits and reference.ndim == 2:
        per_image = [_cosine(r, c) for r, c in zip(reference, candidate)]
        result.mean_image_cosine, result.min_image_cosine = float(np.mean(per_image)), float(np.min(per_image))
        if result.mean_image_cosine < tol.min_mean_cosine:
            result.failures.append(f"mean image cosine {result.mean_image_cosine:.5f} < {tol.min_mean_cosine}")
        if result.min_image_cosine < tol.min_image_cosine:
            result.failures.append(f"min image cosine {result.min_image_cosine:.5f} < {tol.min_image_cosine}")
    result.passed = not result.failures
    return result
