"""The timing loop: every (backend, batch) case runs once per round, rounds repeat.

Interleaving means a slow drift of the machine (thermal throttling, another user's job, a page
cache filling) lands on every case alike instead of on whichever backend happened to run last.
Each round also starts one case later than the previous one, so no case always runs right after
the same neighbour (and inherits its cache state).

Between two cases of different backends the loop pauses (untimed, SETTLE_S): onnxruntime's intra-op
workers keep spinning for a while after a run (session.intra_op.allow_spinning, on by default), and a
case started at once shares the cores with them. Measured on 2 cores, DAT-T batch 8, two onnxruntime
sessions alternating with two threads each: plugin flavour 499 ms back to back, 472 ms with a 50 ms pause
(alone, profiled: 480 ms); the plain export 891 and 872 ms. A 10 ms pause was not enough (495 ms).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np

from dat_deploy.profiling.memory import GpuPeak, PeakRss

SPLIT_KEYS = ("h2d_ms", "compute_ms", "d2h_ms")
SETTLE_S = 0.1  # pause between cases of different backends (see above)


@dataclass(frozen=True)
class Case:
    backend: str
    batch: int


@dataclass
class CaseResult:
    """Raw measurements of one case; statistics are computed by the report."""

    backend: str
    batch: int
    samples_ms: list[float] = field(default_factory=list)
    split_ms: dict[str, list[float]] = field(default_factory=dict)  # TensorRT H2D / compute / D2H
    peak_rss_mb: float | None = None
    rss_growth_mb: float | None = None
    peak_gpu_mb: float | None = None


# on_step(phase, case, done, total): phase is "warmup" or "timed"; total is None with a duration.
StepCallback = Callable[[str, Case, int, "int | None"], None]


def make_cases(backend_names: Sequence[str], batches: Sequence[int]) -> list[Case]:
    """Backend-major list of cases (the order the report uses)."""
    return [Case(name, int(b)) for name in backend_names for b in batches]


def round_order(cases: Sequence[Case], round_index: int) -> list[Case]:
    """The cases of round `round_index`: all of them, starting at case round_index mod len(cases)."""
    start = round_index % len(cases)
    return list(cases[start:]) + list(cases[:start])


def interleaved_order(cases: Sequence[Case], rounds: int) -> Iterator[Case]:
    """Round-robin over `cases`, `rounds` times, each round rotated by one (see round_order)."""
    for r in range(rounds):
        yield from round_order(cases, r)


def run_profile(
    backends: Mapping[str, object],
    batches: Sequence[int],
    inputs: Mapping[int, np.ndarray],
    warmup: int = 3,
    iters: int | None = 20,
    duration_s: float | None = None,
    on_step: StepCallback | None = None,
    clock: Callable[[], float] = time.perf_counter,
    settle_s: float = SETTLE_S,
    sleep: Callable[[float], None] = time.sleep,
) -> list[CaseResult]:
    """Time every backend at every batch size, interleaved.

    `inputs[b]` is the float32 NCHW batch of size b that every backend gets. With `duration_s`,
    timed rounds repeat until that many seconds have passed in total (at least one round);
    otherwise exactly `iters` rounds run. Warmup rounds are interleaved the same way and discarded.
    A backend with `timed_run(batch) -> (outputs, {"h2d_ms", "compute_ms", "d2h_ms"})` is timed
    through it so that the transfer/compute split is kept. Before a case whose backend is not the
    previous case's, `sleep(settle_s)` lets the previous backend's worker threads go idle.
    """
    if (iters is None) == (duration_s is None):
        raise ValueError("give exactly one of iters and duration_s")
    if iters is not None and iters < 1:
        raise ValueError("iters must be >= 1")
    if warmup < 0:
        raise ValueError("warmup must be >= 0")
    cases = make_cases(list(backends), batches)
    results = {case: CaseResult(case.backend, case.batch) for case in cases}
    gpu = {case: GpuPeak(backends[case.backend]) for case in cases}

    with PeakRss() as rss:

        previous_backend: str | None = None

        def run_once(case: Case) -> tuple[float, dict[str, float] | None]:
            nonlocal previous_backend
            if previous_backend not in (None, case.backend) and settle_s > 0:
                sleep(settle_s)
            previous_backend = case.backend
            backend = backends[case.backend]
            batch = inputs[case.batch]
            rss.begin(case)
            gpu[case].before_run()
            timed_run = getattr(backend, "timed_run", None)
            start = clock()
            if timed_run is not None:
                _, split = timed_run(batch)
            else:
                backend.run(batch)
                split = None
            elapsed_ms = (clock() - start) * 1000.0
            rss.end()
            gpu[case].after_run()
            return elapsed_ms, split

        total_warmup = warmup * len(cases)
        for done, case in enumerate(interleaved_order(cases, warmup), start=1):
            run_once(case)
            if on_step:
                on_step("warmup", case, done, total_warmup)

        total = None if iters is None else iters * len(cases)
        started = clock()
        done = 0
        round_index = 0
        while True:
            for case in round_order(cases, round_index):
                elapsed_ms, split = run_once(case)
                result = results[case]
                result.samples_ms.append(elapsed_ms)
                if split is not None:
                    for key in SPLIT_KEYS:
                        if key in split:
                            result.split_ms.setdefault(key, []).append(float(split[key]))
                done += 1
                if on_step:
                    on_step("timed", case, done, total)
            round_index += 1
            if iters is not None and round_index >= iters:
                break
            if duration_s is not None and clock() - started >= duration_s:
                break

        for case, result in results.items():
            result.peak_rss_mb = rss.peak_mb(case)
            result.rss_growth_mb = rss.growth_mb(case)
            result.peak_gpu_mb = gpu[case].peak_mb()
    return [results[case] for case in cases]
