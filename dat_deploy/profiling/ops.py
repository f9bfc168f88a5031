"""Per-op time breakdowns: onnxruntime's profiler trace, and TensorRT's layer profiler where present.

Both are summarised the same way: time per run by op type, its share of all kernel time, and the
share of the deformable sampling ops (GridSample in the standard flavour, DATDeformSample /
DATRelPosBias in the plugin flavour), which are what our plugin work is meant to shrink.
onnxruntime's trace also records tensor shapes, from which the matrix products' multiply-accumulates
are counted: their rate says how close a graph is to what the machine's GEMM allows.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from dat_deploy.errors import UserError

SAMPLING_OPS = frozenset({"GridSample", "DATDeformSample", "DATRelPosBias"})
# onnxruntime's CPU kernels that run as MLAS GEMMs (fused variants come from its graph optimizer).
MATRIX_OPS = frozenset({"Gemm", "FusedGemm", "DATGemm", "MatMul", "FusedMatMul", "Conv", "FusedConv"})


@dataclass
class OpTime:
    op_type: str
    calls_per_run: float
    ms_per_run: float
    share: float  # of all kernel time
    sampling: bool
    gmac_per_run: float | None = None  # multiply-accumulates (1e9) of a matrix-product op; None for the rest


@dataclass
class OpProfile:
    source: str  # "onnxruntime" or "tensorrt"
    runs: int  # profiled runs (warmup runs excluded)
    kernel_ms_per_run: float  # sum over ops
    run_ms_per_run: float | None  # whole run as the engine saw it (kernels + scheduling)
    sampling_share: float
    ops: list[OpTime] = field(default_factory=list)
    matrix_share: float = 0.0  # of all kernel time: the MATRIX_OPS
    matrix_gmac_per_run: float | None = None  # None when no shapes were recorded (TensorRT)

    def as_dict(self) -> dict:
        return asdict(self)


def matrix_gmac_s(profile: dict) -> float | None:
    """Rate in GMAC/s of the matrix products of a profile (`OpProfile.as_dict()`), from their kernel time alone."""
    matrix_ms = float(profile.get("matrix_share") or 0.0) * float(profile["kernel_ms_per_run"])
    gmac = profile.get("matrix_gmac_per_run")
    return gmac / (matrix_ms / 1000.0) if gmac and matrix_ms > 0 else None


def _shapes(type_shapes: list[dict] | None) -> list[list[int]]:
    """[{"float": [2, 3]}, ...] as onnxruntime's profiler records them -> [[2, 3], ...]."""
    return [list(next(iter(entry.values()))) for entry in type_shapes or []]


def matrix_macs(op_type: str, inputs: list[list[int]], outputs: list[list[int]]) -> int | None:
    """Multiply-accumulates of one matrix-product node from its recorded shapes (None: not one, or shapes missing).

    Prepacked weights are not listed among a Gemm's inputs, so the reduction length comes from A and
    the output: A holds M*K elements whatever its transposition. MatMul's K is A's last axis, or the
    one before it when onnxruntime fused a transpose of A in (FusedMatMul transA). Conv's is the
    weight's Cin/groups * kernel size, the output holding N * Cout * spatial (NCHWc-blocked or not).
    """
    if op_type not in MATRIX_OPS or not inputs or not outputs or not outputs[0]:
        return None
    out = outputs[0]
    if op_type in ("Gemm", "FusedGemm", "DATGemm"):  # DATGemm: x (..., K), weight (N, K), bias -> (..., N)
        return int(np.prod(inputs[0])) * out[-1]
    if op_type in ("MatMul", "FusedMatMul"):
        a = inputs[0]
        if len(a) == 1:
            k = a[0]
        else:
            k = a[-1] if len(out) >= 2 and a[-2] == out[-2] else a[-2]
        return int(np.prod(out)) * k
    if len(inputs) < 2 or len(inputs[1]) < 3:
        return None  # a Conv without its weight's shape
    return int(np.prod(out)) * int(np.prod(inputs[1][1:]))


def summarize_op_times(source: str, per_op_ms: dict[str, float], per_op_calls: dict[str, int], runs: int,
                       run_ms_total: float | None = None, per_op_macs: dict[str, int] | None = None) -> OpProfile:
    """Turn total time, call count and (for matrix products) MACs per op type over `runs` runs into an OpProfile, biggest first."""
    runs = max(runs, 1)
    kernel_total = sum(per_op_ms.values())
    macs = per_op_macs or {}
    ops = [
        OpTime(
            op_type=op,
            calls_per_run=per_op_calls.get(op, 0) / runs,
            ms_per_run=ms / runs,
            share=ms / kernel_total if kernel_total > 0 else 0.0,
            sampling=op in SAMPLING_OPS,
            gmac_per_run=macs[op] / runs / 1e9 if op in macs else None,
        )
        for op, ms in per_op_ms.items()
    ]
    ops.sort(key=lambda o: o.ms_per_run, reverse=True)
    return OpProfile(
        source=source,
        runs=runs,
        kernel_ms_per_run=kernel_total / runs,
        run_ms_per_run=None if run_ms_total is None else run_ms_total / runs,
        sampling_share=sum(o.share for o in ops if o.sampling),
        ops=ops,
        matrix_share=sum(o.share for o in ops if o.op_type in MATRIX_OPS),
        matrix_gmac_per_run=sum(macs.values()) / runs / 1e9 if macs else None,
    )


def parse_ort_profile(trace, skip_runs: int = 0) -> OpProfile:
    """Aggregate an onnxruntime profiler trace (path or loaded event list) by op type.

    The trace holds one "model_run" event per InferenceSession.run and one "<node>_kernel_time"
    event per executed node; a node event belongs to the run whose time window contains it.
    The first `skip_runs` runs (warmup) are left out.
    """
    events = json.loads(Path(trace).read_text()) if isinstance(trace, (str, Path)) else trace
    runs = sorted(
        (e["ts"], e["ts"] + e["dur"]) for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"
    )
    if len(runs) <= skip_runs:
        raise ValueError(f"the profile holds {len(runs)} run(s); nothing left after skipping {skip_runs} warmup run(s)")
    kept = runs[skip_runs:]
    starts = np.array([start for start, _ in kept])
    ends = np.array([end for _, end in kept])
    per_op_us: dict[str, float] = defaultdict(float)
    per_op_calls: dict[str, int] = defaultdict(int)
    per_op_macs: dict[str, int] = defaultdict(int)
    for event in events:
        if event.get("cat") != "Node" or not str(event.get("name", "")).endswith("_kernel_time"):
            continue
        ts = event["ts"]
        i = int(np.searchsorted(starts, ts, side="right")) - 1
        if i < 0 or ts > ends[i]:
            continue  # a warmup run or outside any run
        args = event.get("args", {})
        op = args.get("op_name", "?")
        per_op_us[op] += float(event["dur"])
        per_op_calls[op] += 1
        macs = matrix_macs(op, _shapes(args.get("input_type_shape")), _shapes(args.get("output_type_shape")))
        if macs is not None:
            per_op_macs[op] += macs
    run_us_total = float(sum(end - start for start, end in kept))
    return summarize_op_times(
        "onnxruntime",
        {op: us / 1000.0 for op, us in per_op_us.items()},
        dict(per_op_calls),
        len(kept),
        run_us_total / 1000.0,
        dict(per_op_macs),
    )


def ort_op_profile(
    onnx_path: Path,
    batch: np.ndarray | dict[str, np.ndarray],
    runs: int = 10,
    warmup: int = 2,
    intra_op_threads: int | None = None,
    custom_op_library: Path | None = None,
) -> OpProfile:
    """Run `onnx_path` in a profiling onnxruntime CPU session and summarise its trace.

    `batch` feeds the first graph input (or is a full {input name: array} feed dict).

    A separate session: profiling slows every run a little, so it never shares the timed one.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    if intra_op_threads:
        options.intra_op_num_threads = intra_op_threads
    from dat_deploy.artifacts import load_onnx
    from dat_deploy.runtime.onnxruntime_backend import prepare_session

    libraries = [custom_op_library] if custom_op_library is not None else []
    source = prepare_session(load_onnx(onnx_path), onnx_path, options, libraries)[0]  # what OrtBackend runs on the CPU
    with tempfile.TemporaryDirectory(prefix="dat-deploy-ortprof-") as tmp:
        options.profile_file_prefix = str(Path(tmp) / "ort")
        try:
            session = ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(f"onnxruntime cannot load {onnx_path} for op profiling: {exc}") from exc
        feeds = batch if isinstance(batch, dict) else {session.get_inputs()[0].name: batch}
        for _ in range(warmup + runs):
            session.run(None, feeds)
        trace = session.end_profiling()
        return parse_ort_profile(trace, skip_runs=warmup)


_TRAILING_INDEX = re.compile(r"(_\d+)+$")


def layer_type_from_name(layer_name: str) -> str:
    """Best-effort op type of a TensorRT layer named after its ONNX node ("/blocks.0/attn/MatMul_2" -> "MatMul").

    Fused layers keep their full name (e.g. "{ForeignNode[...]}"), so they stay visible as such.
    """
    if layer_name.startswith("{") or "+" in layer_name:
        return layer_name
    last = layer_name.rstrip("/").rsplit("/", 1)[-1]
    return _TRAILING_INDEX.sub("", last) or layer_name


def trt_layer_profile(backend, batch: np.ndarray, runs: int = 10, warmup: int = 2) -> OpProfile | None:
    """Per-layer times from TensorRT's IProfiler, or None when the backend exposes no TensorRT context.

    Uses `backend.layer_profile(batch, runs)` if the backend implements it ((layer, ms) records of
    all runs), else attaches an IProfiler to the backend's execution context for `runs` runs.
    """
    own = getattr(backend, "layer_profile", None)
    if own is not None:
        records = list(own(batch, runs))
    else:
        context = getattr(backend, "context", None)  # TensorRTBackend's IExecutionContext
        if context is None or getattr(backend, "use_cuda_graph", False):
            return None  # a replayed CUDA graph reports no layer times
        import tensorrt as trt  # lazy: only on machines that have it

        class _Collector(trt.IProfiler):
            def __init__(self):
                trt.IProfiler.__init__(self)
                self.records: list[tuple[str, float]] = []

            def report_layer_time(self, layer_name, ms):
                self.records.append((layer_name, ms))

        for _ in range(warmup):
            backend.run(batch)
        collector = _Collector()
        context.profiler = collector
        try:
            for _ in range(runs):
                backend.run(batch)
        finally:
            context.profiler = None
        records = collector.records
    per_op_ms: dict[str, float] = defaultdict(float)
    per_op_calls: dict[str, int] = defaultdict(int)
    for name, ms in records:
        op = layer_type_from_name(name)
        per_op_ms[op] += float(ms)
        per_op_calls[op] += 1
    return summarize_op_times("tensorrt", dict(per_op_ms), dict(per_op_calls), runs)
