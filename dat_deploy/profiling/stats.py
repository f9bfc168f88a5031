"""Latency statistics in trtexec's vocabulary: min, max, mean, median, p90/p95/p99, plus spread.

Percentiles use numpy's default ("linear") interpolation so that anyone can recompute them from
the raw samples the JSON report keeps. The standard deviation is the sample one (ddof=1): the
samples estimate the latency distribution, they are not all of it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

PERCENTILES = (90, 95, 99)
DEFAULT_CV_WARN = 0.10  # CPU timings on a shared machine; trtexec warns at 1% for GPU compute
MIN_TRUSTED_ITERATIONS = 10


@dataclass(frozen=True)
class LatencyStats:
    """Summary of one set of latency samples, all in milliseconds (cv is a fraction)."""

    count: int
    min: float
    max: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    std: float
    cv: float

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def summarize(samples_ms) -> LatencyStats:
    """Summarise latency samples (ms). Raises ValueError on an empty or non-finite set."""
    samples = np.asarray(samples_ms, dtype=np.float64).ravel()
    if samples.size == 0:
        raise ValueError("no latency samples to summarise")
    if not np.all(np.isfinite(samples)):
        raise ValueError("latency samples contain NaN or infinity")
    mean = float(samples.mean())
    std = float(samples.std(ddof=1)) if samples.size > 1 else 0.0
    p90, p95, p99 = (float(v) for v in np.percentile(samples, PERCENTILES))
    return LatencyStats(
        count=int(samples.size),
        min=float(samples.min()),
        max=float(samples.max()),
        mean=mean,
        median=float(np.median(samples)),
        p90=p90,
        p95=p95,
        p99=p99,
        std=std,
        cv=std / mean if mean > 0 else 0.0,
    )


def throughput(stats: LatencyStats, batch: int) -> tuple[float, float]:
    """(queries/s, images/s) of back-to-back runs: one query is one batch, as trtexec counts it."""
    qps = 1000.0 / stats.mean if stats.mean > 0 else float("inf")
    return qps, qps * batch


def noise_warnings(label: str, stats: LatencyStats, cv_warn: float = DEFAULT_CV_WARN) -> list[str]:
    """A plain-words warning when this case's spread is too large to trust its numbers."""
    if stats.cv <= cv_warn:
        return []
    return [
        f"{label}: latency is unstable, coefficient of variation = {stats.cv:.1%} (> {cv_warn:.0%}). "
        "Other load on the machine or frequency scaling is likely; close other work, pin --threads, "
        "or run longer (--iters / --duration)."
    ]


def few_iterations_warning(count: int) -> list[str]:
    """Percentiles of a handful of samples are just the largest samples."""
    if count >= MIN_TRUSTED_ITERATIONS:
        return []
    return [f"only {count} timed iteration(s) per case; percentiles need at least {MIN_TRUSTED_ITERATIONS} "
            "to mean much (--iters / --duration)."]
