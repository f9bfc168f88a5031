"""How fast an onnxruntime graph could get if everything but its matrix products were free.

A speed goal is only worth chasing if the graph can reach it. Its matrix products (Gemm, MatMul,
Conv) run through MLAS, close to the rate each shape reaches alone, so the time they take is a floor
that graph rewrites and custom ops do not lower: what remains to win is the time of every other op.
`speed_ceiling` turns one backend's op profile and the timed means of the same loop into that
floor, the speedup it would give over each baseline, and how much time a goal leaves the other ops.
Used by `bench_backends.py --ops`; tested in tests/test_ceiling.py.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np

from dat_deploy.profiling.ops import matrix_gmac_s


def sgemm_rate_gmac_s(threads: int | None = None, size: int = 2048, runs: int = 3) -> float:
    """This machine's fp32 GEMM rate through onnxruntime (one size^3 MatMul with a constant weight), best of `runs`."""
    import onnx
    import onnx.helper as oh
    import onnxruntime as ort
    from onnx import numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((size, size), dtype=np.float32), "w")
    graph = oh.make_graph(
        [oh.make_node("MatMul", ["x", "w"], ["y"])], "sgemm",
        [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [size, size])],
        [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [size, size])], [weight])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    feeds = {"x": rng.standard_normal((size, size), dtype=np.float32)}
    session.run(None, feeds)  # prepacking and first-touch
    best = float("inf")
    for _ in range(runs):
        start = time.perf_counter()
        session.run(None, feeds)
        best = min(best, time.perf_counter() - start)
    return size ** 3 / best / 1e9


@dataclass
class SpeedCeiling:
    backend: str
    batch: int
    backend_ms: float  # timed mean of the backend
    matrix_share: float  # of its kernel time, from the op profile
    matrix_ms: float  # backend_ms * matrix_share: the floor
    other_ms: float  # the rest of backend_ms
    matrix_gmac_s: float | None  # rate of its matrix products
    machine_gmac_s: float | None  # one large SGEMM through onnxruntime on the same machine
    best_speedup: dict[str, float]  # baseline -> its mean over matrix_ms
    peak_speedup: dict[str, float]  # baseline -> its mean over the matrix products' MACs at machine_gmac_s
    other_budget_ms: dict[str, float]  # baseline -> time the goal leaves every other op (< 0: out of reach)

    def as_dict(self) -> dict:
        return asdict(self)


def speed_ceiling(backend: str, batch: int, backend_ms: float, profile: dict,
                  goals: dict[str, tuple[float, float | None]], machine_gmac_s: float | None = None) -> SpeedCeiling:
    """The floor of `backend` from its op profile (`OpProfile.as_dict()`).

    `goals` maps a baseline's name to (its timed mean in ms, the speedup wanted over it, or None for
    a baseline without a goal: its best speedup is computed, no budget).
    The profile's shares are applied to the timed mean: profiling adds its own overhead, and the
    timed loop is what the goals are judged on.
    """
    share = float(profile.get("matrix_share") or 0.0)
    matrix_ms = backend_ms * share
    gmac = profile.get("matrix_gmac_per_run")
    rate = matrix_gmac_s(profile)
    best = {name: mean / matrix_ms for name, (mean, _) in goals.items()} if matrix_ms > 0 else {}
    # A reference, not a limit: small products (49x49 window attention, K=96) run slower than a 2048^3
    # GEMM, cache-friendly ones (392x768x3072 in DAT-T) faster.
    peak = {}
    if gmac and machine_gmac_s:
        peak_ms = gmac / machine_gmac_s * 1000.0
        peak = {name: mean / peak_ms for name, (mean, _) in goals.items()}
    budget = {name: mean / goal - matrix_ms for name, (mean, goal) in goals.items() if goal}
    return SpeedCeiling(backend=backend, batch=batch, backend_ms=backend_ms, matrix_share=share, matrix_ms=matrix_ms,
                        other_ms=backend_ms - matrix_ms, matrix_gmac_s=rate, machine_gmac_s=machine_gmac_s,
                        best_speedup=best, peak_speedup=peak, other_budget_ms=budget)


def describe_ceiling(variant: str, ceiling: SpeedCeiling) -> str:
    """One markdown bullet: the floor, its GEMM rate against the machine's, and what each goal leaves the other ops."""
    rate = ""
    if ceiling.matrix_gmac_s is not None:
        rate = f" at {ceiling.matrix_gmac_s:.1f} GMAC/s"
        if ceiling.machine_gmac_s:
            rate += (f" ({ceiling.matrix_gmac_s / ceiling.machine_gmac_s:.0%} of this machine's "
                     f"{ceiling.machine_gmac_s:.1f} GMAC/s SGEMM through onnxruntime)")
    best = ", ".join(f"{ratio:.2f}x {name}" for name, ratio in ceiling.best_speedup.items())
    if ceiling.peak_speedup:
        best += " (and were the matrix products as fast as one large SGEMM: " + ", ".join(
            f"{ratio:.2f}x" for ratio in ceiling.peak_speedup.values()) + ")"
    budgets = ", ".join(
        f"{budget:.0f} ms against {name}" if budget >= 0 else f"none against {name} (the matrix products alone are "
                                                             f"{-budget:.0f} ms over)"
        for name, budget in ceiling.other_budget_ms.items())
    line = (f"- {variant} batch {ceiling.batch} {ceiling.backend}: matrix products (Gemm, DATGemm, MatMul, Conv) take "
            f"{ceiling.matrix_share:.0%} of kernel time, {ceiling.matrix_ms:.0f} of {ceiling.backend_ms:.0f} ms{rate}. "
            f"With every other op free: {best}.")
    if budgets:
        line += f" The goals leave the other ops ({ceiling.other_ms:.0f} ms now): {budgets}."
    return line
