"""Shared by the profiling tests: fake backends and clock, small ONNX graphs, the report's JSON schema."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
from onnx import TensorProto

from dat_deploy.profiling.ops import ort_op_profile


class FakeBackend:
    """Records every call in a shared log; optional per-call cost in a fake clock."""

    def __init__(self, name, log, clock=None, cost_ms=1.0, splits=False):
        self.name = name
        self.output_names = ["logits"]
        self.log = log
        self.clock = clock
        self.cost_ms = cost_ms
        if splits:
            self.timed_run = self._timed_run

    def run(self, batch):
        self.log.append((self.name, len(batch)))
        if self.clock is not None:
            self.clock.now += self.cost_ms / 1000.0
        return {"logits": np.zeros((len(batch), 10), np.float32)}

    def _timed_run(self, batch):
        out = self.run(batch)
        return out, {"h2d_ms": 0.1 * len(batch), "compute_ms": self.cost_ms, "d2h_ms": 0.01}


class FakeClock:
    def __init__(self):
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def zero_inputs(batches, size=4):
    return {b: np.zeros((b, 3, size, size), np.float32) for b in batches}


def grid_sample_graph(path: Path) -> Path:
    """x -> MatMul -> GridSample (grid computed from x) -> Relu: three op types, one a sampling op."""
    weight = oh.make_tensor("w", TensorProto.FLOAT, [16, 16], np.eye(16, dtype=np.float32).ravel().tolist())
    nodes = [
        oh.make_node("MatMul", ["x", "w"], ["xm"]),
        oh.make_node("Tanh", ["g_raw"], ["grid"]),
        oh.make_node("GridSample", ["xm", "grid"], ["y"], mode="linear", align_corners=1),
        oh.make_node("Relu", ["y"], ["out"]),
    ]
    graph = oh.make_graph(
        nodes, "gs",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4, 16, 16]),
         oh.make_tensor_value_info("g_raw", TensorProto.FLOAT, ["N", 32, 32, 2])],
        [oh.make_tensor_value_info("out", TensorProto.FLOAT, None)],
        [weight],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 20)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def matrix_graph(path: Path) -> Path:
    """Gemm with a constant weight, a MatMul of a transposed input (fused by onnxruntime), a grouped Conv,
    and a Softmax: one op that is no matrix product on every machine (whether onnxruntime adds NCHWc
    Reorder nodes around the Conv depends on the CPU's vector width)."""
    rng = np.random.default_rng(1)
    weight = onnx.numpy_helper.from_array(rng.standard_normal((24, 40), dtype=np.float32), "w")  # Gemm transB
    bias = onnx.numpy_helper.from_array(rng.standard_normal(24, dtype=np.float32), "b")
    kernel = onnx.numpy_helper.from_array(rng.standard_normal((32, 8, 3, 3), dtype=np.float32), "k")  # 2 groups
    nodes = [
        oh.make_node("Gemm", ["x", "w", "b"], ["g"], transB=1),
        oh.make_node("Relu", ["g"], ["g_out"]),
        oh.make_node("Transpose", ["at"], ["a"], perm=[0, 2, 1]),
        oh.make_node("MatMul", ["a", "m"], ["mm"]),
        oh.make_node("Softmax", ["mm"], ["mm_out"]),
        oh.make_node("Conv", ["img", "k"], ["c_out"], group=2, strides=[2, 2], pads=[1, 1, 1, 1]),
    ]
    graph = oh.make_graph(
        nodes, "matrix",
        [oh.make_tensor_value_info("x", TensorProto.FLOAT, [30, 40]),
         oh.make_tensor_value_info("at", TensorProto.FLOAT, [3, 16, 20]),
         oh.make_tensor_value_info("m", TensorProto.FLOAT, [3, 16, 12]),
         oh.make_tensor_value_info("img", TensorProto.FLOAT, [2, 16, 15, 15])],
        [oh.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("g_out", "mm_out", "c_out")],
        [weight, bias, kernel],
    )
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def profile_matrix_graph(tmp_path):
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((30, 40), dtype=np.float32),
             "at": rng.standard_normal((3, 16, 20), dtype=np.float32),
             "m": rng.standard_normal((3, 16, 12), dtype=np.float32),
             "img": rng.standard_normal((2, 16, 15, 15), dtype=np.float32)}
    return ort_op_profile(matrix_graph(tmp_path / "m.onnx"), feeds, runs=2, warmup=1)


NUMBER = (int, float)


STATS_SCHEMA = {k: NUMBER for k in ("count", "min", "max", "mean", "median", "p90", "p95", "p99", "std", "cv")}


OPTIONAL_STATS = ("stats_or_none", STATS_SCHEMA)


RESULT_SCHEMA = {
    "backend": str,
    "batch": int,
    "iterations": int,
    "latency_ms": STATS_SCHEMA,
    "throughput_qps": NUMBER,
    "throughput_ips": NUMBER,
    "speedup_vs_baseline": (float, type(None)),
    "noisy": bool,
    "peak_rss_mb": (float, type(None)),
    "rss_growth_mb": (float, type(None)),
    "peak_gpu_mb": (float, type(None)),
    "h2d_ms": OPTIONAL_STATS,
    "compute_ms": OPTIONAL_STATS,
    "d2h_ms": OPTIONAL_STATS,
    "compile_s": (float, type(None)),
    "samples_ms": ("list_of", NUMBER),
}


BACKEND_SCHEMA = {
    "name": str,
    "description": str,
    "artifact": (str, type(None)),
    "load_s": NUMBER,
    "export_s": (float, type(None)),
    "compile_s": (dict, type(None)),
}


REPORT_SCHEMA = {
    "schema": str,
    "created_utc": str,
    "variant": str,
    "input_size": int,
    "settings": dict,
    "environment": dict,
    "backends": ("list_of", BACKEND_SCHEMA),
    "results": ("list_of", RESULT_SCHEMA),
    "contention": ("dict_or_none", {"wall_s": NUMBER, "cores": int, "own_cpu_s": NUMBER, "others_cpu_s": NUMBER,
                                    "others_share": NUMBER}),
    "ops": (dict, type(None)),
    "warnings": ("list_of", str),
    "notes": ("list_of", str),
}


def check_schema(value, schema, where="report"):
    """A small JSON-schema-like check: exact keys for dicts, types for leaves, element schema for lists."""
    if isinstance(schema, dict):
        assert isinstance(value, dict), f"{where}: expected an object"
        assert set(value) == set(schema), f"{where}: keys {sorted(set(value) ^ set(schema))} differ"
        for key, sub in schema.items():
            check_schema(value[key], sub, f"{where}.{key}")
    elif isinstance(schema, tuple) and schema and schema[0] == "list_of":
        assert isinstance(value, list), f"{where}: expected a list"
        for i, item in enumerate(value):
            check_schema(item, schema[1], f"{where}[{i}]")
    elif isinstance(schema, tuple) and schema and schema[0] in ("stats_or_none", "dict_or_none"):
        if value is not None:
            check_schema(value, schema[1], where)
    else:
        allowed = schema if isinstance(schema, tuple) else (schema,)
        assert isinstance(value, allowed), f"{where}: {value!r} is not {schema}"
        assert not isinstance(value, bool) or bool in allowed, f"{where}: {value!r} is a bool, not {schema}"
