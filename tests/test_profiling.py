"""`dat-deploy profile`: statistics, interleaving, report schema, op-profile parsing, and a smoke run."""

from __future__ import annotations

import csv
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnx.helper as oh
import pytest
from onnx import TensorProto
from typer.testing import CliRunner

from dat_deploy.commands._app import app
from dat_deploy.errors import UserError
from dat_deploy.profiling import report as report_mod
from dat_deploy.commands.common import parse_batch_list
from dat_deploy.profiling.backends import PreparedBackend, parse_backend_list
from dat_deploy.profiling.contention import ContentionMeter, contention_warning
from dat_deploy.profiling.memory import PeakRss, _hwm_resettable
from dat_deploy.profiling.ceiling import describe_ceiling, sgemm_rate_gmac_s, speed_ceiling
from dat_deploy.profiling.ops import (MATRIX_OPS, layer_type_from_name, matrix_gmac_s, matrix_macs, ort_op_profile,
                                     parse_ort_profile, trt_layer_profile)
from dat_deploy.profiling.runner import CaseResult, interleaved_order, make_cases, run_profile
from dat_deploy.profiling.stats import few_iterations_warning, noise_warnings, summarize, throughput

# --------------------------------------------------------------------------------------------
# statistics
# --------------------------------------------------------------------------------------------


def test_statistics_of_one_to_ten_match_hand_computed_values():
    s = summarize(list(range(1, 11)))
    assert s.count == 10
    assert (s.min, s.max, s.mean, s.median) == (1.0, 10.0, 5.5, 5.5)
    # numpy "linear" percentiles: value at rank q/100 * (n - 1) between the sorted samples
    assert s.p90 == pytest.approx(9.1)
    assert s.p95 == pytest.approx(9.55)
    assert s.p99 == pytest.approx(9.91)
    assert s.std == pytest.approx(math.sqrt(82.5 / 9))  # sample std: sum of squared deviations / (n - 1)
    assert s.cv == pytest.approx(math.sqrt(82.5 / 9) / 5.5)


def test_statistics_of_unsorted_samples():
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert s.median == 2.5
    assert s.p90 == pytest.approx(3.7)  # rank 2.7: 3 + 0.7 * (4 - 3)
    assert s.min == 1.0 and s.max == 4.0


def test_statistics_agree_with_numpy_on_random_samples():
    samples = np.random.default_rng(7).lognormal(mean=3.0, sigma=0.4, size=537)
    s = summarize(samples)
    assert s.mean == pytest.approx(samples.mean())
    assert s.median == pytest.approx(np.median(samples))
    for q, value in ((90, s.p90), (95, s.p95), (99, s.p99)):
        assert value == pytest.approx(np.percentile(samples, q, method="linear"))
    assert s.std == pytest.approx(samples.std(ddof=1))


def test_single_sample_has_zero_spread_and_empty_input_is_refused():
    s = summarize([12.5])
    assert (s.min, s.median, s.p99, s.std, s.cv) == (12.5, 12.5, 12.5, 0.0, 0.0)
    with pytest.raises(ValueError):
        summarize([])
    with pytest.raises(ValueError):
        summarize([1.0, float("nan")])


def test_throughput_counts_queries_and_images():
    qps, ips = throughput(summarize([4.0, 6.0]), batch=8)  # mean 5 ms per batch of 8
    assert qps == pytest.approx(200.0)
    assert ips == pytest.approx(1600.0)


def test_noise_warning_when_cv_exceeds_threshold():
    noisy = summarize([10, 10, 10, 10, 10, 10, 10, 10, 10, 20])  # cv ~ 0.29
    stable = summarize([10.0, 10.1, 9.9, 10.0, 10.05, 9.95, 10.0, 10.0, 10.1, 9.9])
    warnings = noise_warnings("ort @ batch 8", noisy, cv_warn=0.10)
    assert len(warnings) == 1 and "coefficient of variation" in warnings[0] and "ort @ batch 8" in warnings[0]
    assert noise_warnings("ort @ batch 8", stable, cv_warn=0.10) == []
    assert noise_warnings("x", noisy, cv_warn=0.5) == []  # the threshold is honoured


def test_few_iterations_are_flagged_once():
    assert few_iterations_warning(10) == []
    assert "only 2 timed iteration" in few_iterations_warning(2)[0]


# --------------------------------------------------------------------------------------------
# runner: interleaving, duration, TensorRT-style split timings
# --------------------------------------------------------------------------------------------


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


def _inputs(batches, size=4):
    return {b: np.zeros((b, 3, size, size), np.float32) for b in batches}


def test_interleaved_order_rotates_each_round():
    cases = make_cases(["a", "b"], [1, 8])
    order = [(c.backend, c.batch) for c in interleaved_order(cases, 3)]
    assert order == [
        ("a", 1), ("a", 8), ("b", 1), ("b", 8),
        ("a", 8), ("b", 1), ("b", 8), ("a", 1),
        ("b", 1), ("b", 8), ("a", 1), ("a", 8),
    ]


def test_runner_interleaves_backends_and_batches_every_round():
    log: list = []
    backends = {"a": FakeBackend("a", log), "b": FakeBackend("b", log)}
    results = run_profile(backends, [1, 8], _inputs([1, 8]), warmup=1, iters=3)
    # warmup round, then 3 timed rounds: every round runs every case exactly once
    assert len(log) == 4 * 4
    for r in range(4):
        assert sorted(log[4 * r : 4 * r + 4]) == [("a", 1), ("a", 8), ("b", 1), ("b", 8)]
    # no backend runs all its iterations in a block: a and b alternate within the timed part
    timed = [name for name, _ in log[4:]]
    assert timed != sorted(timed)
    assert [(r.backend, r.batch, len(r.samples_ms)) for r in results] == [
        ("a", 1, 3), ("a", 8, 3), ("b", 1, 3), ("b", 8, 3)
    ]
    assert all(r.peak_rss_mb and r.peak_rss_mb > 0 for r in results)
    assert all(r.peak_gpu_mb is None for r in results)


def test_runner_measures_with_the_given_clock():
    clock = FakeClock()
    log: list = []
    backends = {"fast": FakeBackend("fast", log, clock, cost_ms=2.0), "slow": FakeBackend("slow", log, clock, cost_ms=5.0)}
    results = run_profile(backends, [1], _inputs([1]), warmup=0, iters=4, clock=clock)
    by_name = {r.backend: r for r in results}
    assert by_name["fast"].samples_ms == pytest.approx([2.0] * 4)
    assert by_name["slow"].samples_ms == pytest.approx([5.0] * 4)


def test_runner_pauses_untimed_between_backends_only():
    clock = FakeClock()
    log: list = []
    backends = {"a": FakeBackend("a", log, clock, cost_ms=2.0), "b": FakeBackend("b", log, clock, cost_ms=5.0)}
    pauses_at: list[int] = []

    def sleep(seconds):
        pauses_at.append(len(log))
        clock.sleep(seconds)

    results = run_profile(backends, [1, 8], _inputs([1, 8]), warmup=1, iters=3, clock=clock, settle_s=0.25,
                          sleep=sleep)
    switches = [i for i in range(1, len(log)) if log[i][0] != log[i - 1][0]]
    assert switches and pauses_at == switches  # before every change of backend, never between its batches
    assert clock.sleeps == [0.25] * len(switches)
    by_case = {(r.backend, r.batch): r.samples_ms for r in results}
    assert by_case[("a", 1)] == pytest.approx([2.0] * 3)  # the pause is not in the samples
    assert by_case[("b", 8)] == pytest.approx([5.0] * 3)


def test_runner_with_duration_stops_after_full_rounds():
    clock = FakeClock()
    log: list = []
    backends = {"a": FakeBackend("a", log, clock, cost_ms=10.0), "b": FakeBackend("b", log, clock, cost_ms=10.0)}
    results = run_profile(backends, [1, 2], _inputs([1, 2]), warmup=0, iters=None, duration_s=0.1, clock=clock)
    counts = {len(r.samples_ms) for r in results}
    assert counts == {3}  # a round costs 40 ms: 40, 80, 120 >= 100 ms -> three rounds, equal for all cases


def test_runner_keeps_transfer_compute_split_when_backend_offers_it():
    log: list = []
    backends = {"trt": FakeBackend("trt", log, cost_ms=3.0, splits=True), "ort": FakeBackend("ort", log)}
    results = run_profile(backends, [2], _inputs([2]), warmup=0, iters=5)
    trt, ort = results
    assert trt.split_ms["h2d_ms"] == pytest.approx([0.2] * 5)
    assert trt.split_ms["compute_ms"] == pytest.approx([3.0] * 5)
    assert len(trt.split_ms["d2h_ms"]) == 5
    assert ort.split_ms == {}


def _growth_in_fresh_process(use_hwm: bool, free_before_end: bool) -> float:
    """Allocate 80 MiB inside a PeakRss case in a new interpreter: in the long-lived pytest process
    the allocator may hand back pages that are already resident, and RSS would not grow at all."""
    code = f"""
import numpy as np
from dat_deploy.profiling.memory import PeakRss
with PeakRss(use_hwm={use_hwm}) as rss:
    rss.begin("case")
    block = np.ones(80 * 2**20 // 8)
    if {free_before_end}:
        del block
    rss.end()
assert rss.peak_mb("other") is None
print(rss.growth_mb("case"))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return float(done.stdout.strip())


@pytest.mark.skipif(not _hwm_resettable(), reason="needs Linux /proc/self/clear_refs to reset VmHWM")
def test_peak_rss_sees_memory_freed_before_the_run_ends():
    assert _growth_in_fresh_process(use_hwm=True, free_before_end=True) >= 0.9 * 80


def test_peak_rss_sampled_fallback():
    assert _growth_in_fresh_process(use_hwm=False, free_before_end=False) >= 0.9 * 80


def test_runner_rejects_bad_settings():
    backends = {"a": FakeBackend("a", [])}
    with pytest.raises(ValueError):
        run_profile(backends, [1], _inputs([1]), iters=None, duration_s=None)
    with pytest.raises(ValueError):
        run_profile(backends, [1], _inputs([1]), iters=0)


# --------------------------------------------------------------------------------------------
# report: JSON schema, CSV columns
# --------------------------------------------------------------------------------------------

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


def _fake_report(cv_warn=0.10):
    results = [
        CaseResult("torch", 1, [10.0, 11.0, 9.0, 10.0], peak_rss_mb=500.0, rss_growth_mb=3.0),
        CaseResult("torch", 8, [80.0, 82.0, 78.0, 80.0], peak_rss_mb=520.0, rss_growth_mb=20.0),
        CaseResult("trt", 1, [5.0, 5.0, 5.0, 5.0], split_ms={"h2d_ms": [0.1] * 4, "compute_ms": [4.0] * 4,
                                                              "d2h_ms": [0.05] * 4}, peak_gpu_mb=300.0),
        CaseResult("trt", 8, [20.0, 60.0, 20.0, 20.0]),
    ]
    backends = [
        PreparedBackend("torch", None, "PyTorch eager", load_s=0.5).info(),
        PreparedBackend("trt", None, "TensorRT engine", artifact="m.plan", load_s=1.0, compile_s={"1": 3.5}).info(),
    ]
    return report_mod.build_report(
        results, variant="dat_t", input_size=224, settings={"warmup": 1, "iters": 4}, backends=backends,
        cv_warn=cv_warn, notes=["seeded random weights"], env={"cpu": "test"},
        contention={"wall_s": 10.0, "cores": 2, "own_cpu_s": 19.0, "others_cpu_s": 1.0, "others_share": 0.05},
    )


def test_report_follows_the_schema_and_survives_json():
    report = _fake_report()
    check_schema(report, REPORT_SCHEMA)
    again = json.loads(report_mod.to_json(report))
    check_schema(again, REPORT_SCHEMA)
    assert again["schema"] == "dat-deploy/profile/v1"
    assert again["settings"]["baseline"] == "torch" and again["settings"]["interleaved"] is True


def test_report_values_ratios_and_warnings():
    report = _fake_report()
    rows = {(r["backend"], r["batch"]): r for r in report["results"]}
    assert rows[("torch", 1)]["latency_ms"]["mean"] == pytest.approx(10.0)
    assert rows[("torch", 8)]["throughput_ips"] == pytest.approx(8 * 1000 / 80.0)
    assert rows[("trt", 1)]["speedup_vs_baseline"] == pytest.approx(10.0 / 5.0)
    assert rows[("trt", 8)]["speedup_vs_baseline"] == pytest.approx(80.0 / 30.0)
    assert rows[("torch", 1)]["speedup_vs_baseline"] == pytest.approx(1.0)
    assert rows[("trt", 1)]["compute_ms"]["mean"] == pytest.approx(4.0)
    assert rows[("torch", 1)]["h2d_ms"] is None
    assert rows[("trt", 1)]["compile_s"] == 3.5 and rows[("trt", 8)]["compile_s"] is None
    # trt @ 8 (20, 60, 20, 20) is noisy; the others are not
    assert [k for k, r in rows.items() if r["noisy"]] == [("trt", 8)]
    assert any("trt @ batch 8" in w and "coefficient of variation" in w for w in report["warnings"])


EXPECTED_CSV_COLUMNS = [
    "backend", "batch", "iterations",
    "latency_min_ms", "latency_mean_ms", "latency_median_ms", "latency_p90_ms", "latency_p95_ms",
    "latency_p99_ms", "latency_max_ms", "latency_std_ms", "latency_cv",
    "throughput_qps", "throughput_ips", "speedup_vs_baseline",
    "peak_rss_mb", "rss_growth_mb", "peak_gpu_mb",
    "h2d_mean_ms", "compute_mean_ms", "d2h_mean_ms", "compile_s", "noisy",
]


def test_csv_has_the_documented_columns_and_one_row_per_case():
    report = _fake_report()
    rows = list(csv.DictReader(io.StringIO(report_mod.to_csv(report))))
    assert list(rows[0].keys()) == EXPECTED_CSV_COLUMNS
    assert [(r["backend"], r["batch"]) for r in rows] == [("torch", "1"), ("torch", "8"), ("trt", "1"), ("trt", "8")]
    assert float(rows[1]["latency_mean_ms"]) == pytest.approx(80.0)
    assert float(rows[2]["compute_mean_ms"]) == pytest.approx(4.0)
    assert rows[0]["compute_mean_ms"] == "" and rows[0]["peak_gpu_mb"] == ""
    assert [r["noisy"] for r in rows] == ["0", "0", "0", "1"]


def test_summary_renders_trtexec_fields(capsys):
    from rich.console import Console

    console = Console(file=io.StringIO(), width=200)
    report_mod.render_summary(_fake_report(), console)
    text = console.file.getvalue()
    assert "GPU Compute Time: min = 4.0000 ms" in text and "percentile(99%)" in text
    assert "[W] * trt @ batch 8" in text
    assert "compile time" in text


def test_contention_meter_sees_another_process_burning_cpu():
    import subprocess
    import sys
    import time

    import psutil

    with ContentionMeter() as meter:
        child = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"])
        proc = psutil.Process(child.pid)
        child_cpu = 0.0
        while child.poll() is None:
            t = proc.cpu_times() if proc.is_running() else None
            child_cpu = (t.user + t.system) if t else child_cpu
            time.sleep(0.05)
    result = meter.result
    assert result.others_cpu_s >= 0.8 * child_cpu > 0
    assert result.own_cpu_s < 0.5 * result.others_cpu_s
    assert 0 < result.others_share <= 1.0


def test_contention_warning_threshold():
    assert contention_warning({"others_share": 0.05, "cores": 2}) == []
    assert "other processes used 40%" in contention_warning({"others_share": 0.4, "cores": 2})[0]
    assert contention_warning(None) == []
    assert "--threads 1" not in contention_warning({"others_share": 0.4, "cores": 2}, threads=1)[0]


# --------------------------------------------------------------------------------------------
# CLI parsing
# --------------------------------------------------------------------------------------------


def test_backend_and_batch_lists_are_checked():
    assert parse_backend_list("torch, ort") == ["torch", "ort"]
    assert parse_batch_list("8,1,8") == [1, 8]
    for bad in ("torch,onnx", "", "ort,ort"):
        with pytest.raises(UserError):
            parse_backend_list(bad)
    for bad in ("1,x", "0", ""):
        with pytest.raises(UserError):
            parse_batch_list(bad)


def test_cli_refuses_iters_with_duration(tmp_path):
    from dat_deploy.cli import main  # noqa: F401  (registers every command)

    result = CliRunner().invoke(app, ["profile", "--iters", "2", "--duration", "1", "--output", str(tmp_path / "r")])
    assert result.exit_code != 0
    assert isinstance(result.exception, UserError)


def test_cli_trt_without_engine_is_a_user_error(tmp_path):
    from dat_deploy.cli import main  # noqa: F401

    result = CliRunner().invoke(app, ["profile", "--backend", "trt", "--iters", "1", "--output", str(tmp_path / "r")])
    assert isinstance(result.exception, UserError) and "--engine" in str(result.exception)
    assert not (tmp_path / "r").exists()  # nothing written when nothing was measured


def test_cli_onnx_of_another_variant_is_a_user_error(tmp_path):
    from dat_deploy.cli import main  # noqa: F401

    path = _grid_sample_graph(tmp_path / "gs.onnx")
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"variant": "dat_s", "flavor": "standard"})
    onnx.save(model, str(path))
    result = CliRunner().invoke(app, ["profile", "--variant", "dat_t", "--backend", "ort", "--onnx", str(path),
                                      "--iters", "1", "--output", str(tmp_path / "r")])
    assert isinstance(result.exception, UserError) and "--variant dat_s" in str(result.exception)


# --------------------------------------------------------------------------------------------
# op profiles
# --------------------------------------------------------------------------------------------


def test_given_onnx_serves_only_the_backend_of_its_layout(tmp_path):
    """A standard export in the official layout is ort-official's file; timing it as `ort` (the fast
    layout) would report one graph under two names."""
    from dat_deploy.profiling.backends import BackendFactory

    path = _grid_sample_graph(tmp_path / "gs.onnx")
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"variant": "dat_t", "flavor": "standard", "layout": "official"})
    onnx.save(model, str(path))
    factory = BackendFactory("dat_t", onnx=path, cache_dir=tmp_path / "cache")
    assert factory.onnx_for("ort-official") == (path, None)
    with pytest.raises(UserError, match="official layout.*backend ort times the fast layout"):
        factory.onnx_for("ort")


def _grid_sample_graph(path: Path) -> Path:
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


def test_ort_op_profile_of_a_real_trace(tmp_path):
    path = _grid_sample_graph(tmp_path / "gs.onnx")
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal((2, 4, 16, 16), dtype=np.float32),
             "g_raw": rng.standard_normal((2, 32, 32, 2), dtype=np.float32)}
    prof = ort_op_profile(path, feeds, runs=4, warmup=2)
    by_type = {op.op_type: op for op in prof.ops}
    assert set(by_type) == {"MatMul", "Tanh", "GridSample", "Relu"}
    assert prof.runs == 4
    assert all(op.calls_per_run == 1.0 for op in prof.ops)  # warmup runs left out
    assert sum(op.share for op in prof.ops) == pytest.approx(1.0)
    assert by_type["GridSample"].sampling and not by_type["MatMul"].sampling
    assert prof.sampling_share == pytest.approx(by_type["GridSample"].share)
    assert prof.kernel_ms_per_run == pytest.approx(sum(op.ms_per_run for op in prof.ops))
    assert prof.run_ms_per_run >= prof.kernel_ms_per_run
    assert [op.ms_per_run for op in prof.ops] == sorted((op.ms_per_run for op in prof.ops), reverse=True)


def test_ort_trace_parser_skips_warmup_runs_by_time_window():
    def node(op, ts, dur):
        return {"cat": "Node", "name": f"{op}_0_kernel_time", "ts": ts, "dur": dur, "args": {"op_name": op}}

    events = [
        {"cat": "Session", "name": "model_run", "ts": 0, "dur": 100},
        node("GridSample", 10, 50), node("MatMul", 60, 30),
        {"cat": "Session", "name": "model_run", "ts": 200, "dur": 100},
        node("GridSample", 210, 20), node("MatMul", 240, 60),
        node("DATRelPosBias", 1000, 5),  # outside every run: ignored
    ]
    prof = parse_ort_profile(events, skip_runs=1)
    by_type = {op.op_type: op for op in prof.ops}
    assert prof.runs == 1
    assert by_type["GridSample"].ms_per_run == pytest.approx(0.020)
    assert by_type["MatMul"].ms_per_run == pytest.approx(0.060)
    assert by_type["MatMul"].share == pytest.approx(0.75)
    assert prof.sampling_share == pytest.approx(0.25)
    assert "DATRelPosBias" not in by_type
    with pytest.raises(ValueError):
        parse_ort_profile(events, skip_runs=2)


def test_tensorrt_layer_names_map_to_op_types():
    assert layer_type_from_name("/stages.2/attn/MatMul_2") == "MatMul"
    assert layer_type_from_name("/stages.2/attn/DATRelPosBias_1") == "DATRelPosBias"
    assert layer_type_from_name("{ForeignNode[/a/MatMul.../b/Add]}") == "{ForeignNode[/a/MatMul.../b/Add]}"


def test_tensorrt_layer_profile_aggregates_layer_records():
    class LayerTimedBackend:
        def layer_profile(self, batch, runs):
            return [("/s/MatMul_1", 2.0), ("/s/attn/DATRelPosBias_0", 1.0), ("/s/MatMul_2", 1.0)] * runs

    prof = trt_layer_profile(LayerTimedBackend(), np.zeros((1, 3, 4, 4), np.float32), runs=2)
    by_type = {op.op_type: op for op in prof.ops}
    assert prof.source == "tensorrt" and prof.runs == 2
    assert by_type["MatMul"].ms_per_run == pytest.approx(3.0) and by_type["MatMul"].calls_per_run == 2
    assert prof.sampling_share == pytest.approx(0.25)
    assert trt_layer_profile(FakeBackend("ort", []), np.zeros((1, 3, 4, 4), np.float32)) is None


# --------------------------------------------------------------------------------------------
# end to end through the CLI
# --------------------------------------------------------------------------------------------


def test_cli_profile_with_fake_backends_writes_every_artifact(tmp_path, monkeypatch):
    """The CLI path (options, progress, report, plots) without the cost of a real model."""
    from dat_deploy.cli import main  # noqa: F401
    from dat_deploy.profiling import backends as backends_mod

    log: list = []

    def fake_prepare(self, name, inputs):
        return PreparedBackend(name, FakeBackend(name, log), f"fake {name}")

    monkeypatch.setattr(backends_mod.BackendFactory, "prepare", fake_prepare)
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["profile", "--backend", "torch,ort", "--batch", "1,2", "--warmup", "1",
                                      "--iters", "3", "--output", str(out)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {"profile.json", "profile.csv", "throughput.png", "latency.png"}
    report = json.loads((out / "profile.json").read_text())
    check_schema(report, REPORT_SCHEMA)
    assert [(r["backend"], r["batch"], r["iterations"]) for r in report["results"]] == [
        ("torch", 1, 3), ("torch", 2, 3), ("ort", 1, 3), ("ort", 2, 3)
    ]
    assert len(log) == (1 + 3) * 4
    for png in ("throughput.png", "latency.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "images/s" in result.output and "vs torch" in result.output
    # a second run into the same folder never overwrites silently
    again = CliRunner().invoke(app, ["profile", "--iters", "1", "--output", str(out)])
    assert again.exit_code != 0 and isinstance(again.exception, UserError)


@pytest.mark.slow
def test_cli_smoke_profile_of_dat_t(tmp_path, monkeypatch, dat_t_onnx):
    """dat_t at batch 1, two iterations, PyTorch and onnxruntime (the session's dat_t export)."""
    from dat_deploy.cli import main  # noqa: F401

    monkeypatch.setenv("DAT_DEPLOY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "report"
    result = CliRunner().invoke(app, ["profile", "--variant", "dat_t", "--backend", "torch,ort", "--batch", "1",
                                      "--warmup", "1", "--iters", "2", "--ops", "--onnx", str(dat_t_onnx),
                                      "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "profile.json").read_text())
    check_schema(report, REPORT_SCHEMA)
    assert [(r["backend"], r["batch"], r["iterations"]) for r in report["results"]] == [("torch", 1, 2), ("ort", 1, 2)]
    assert all(r["latency_ms"]["min"] > 0 for r in report["results"])
    ort_ops = report["ops"]["ort @ batch 1"]
    assert any(op["op_type"] == "GridSample" and op["sampling"] for op in ort_ops["ops"])
    assert 0 < ort_ops["sampling_share"] < 1
    rows = list(csv.DictReader((out / "profile.csv").open()))
    assert len(rows) == 2
    assert (out / "throughput.png").stat().st_size > 0 and (out / "latency.png").stat().st_size > 0


def _matrix_graph(path: Path) -> Path:
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


def _profile_matrix_graph(tmp_path):
    rng = np.random.default_rng(2)
    feeds = {"x": rng.standard_normal((30, 40), dtype=np.float32),
             "at": rng.standard_normal((3, 16, 20), dtype=np.float32),
             "m": rng.standard_normal((3, 16, 12), dtype=np.float32),
             "img": rng.standard_normal((2, 16, 15, 15), dtype=np.float32)}
    return ort_op_profile(_matrix_graph(tmp_path / "m.onnx"), feeds, runs=2, warmup=1)


def test_matrix_products_are_counted_from_a_real_trace(tmp_path):
    prof = _profile_matrix_graph(tmp_path)
    macs = {op.op_type: op.gmac_per_run for op in prof.ops}
    gemm = 30 * 40 * 24
    matmul = 3 * 20 * 12 * 16  # batch * M * N * K, whichever transposition onnxruntime fused in
    conv = 2 * 32 * 8 * 8 * (8 * 3 * 3)  # N * Cout * Hout * Wout * (Cin/groups * kh * kw)
    counted = sum(v for v in macs.values() if v is not None) * 1e9
    assert counted == pytest.approx(gemm + matmul + conv)
    assert macs[next(op for op in macs if "Gemm" in op)] * 1e9 == pytest.approx(gemm)
    assert macs[next(op for op in macs if "MatMul" in op)] * 1e9 == pytest.approx(matmul)
    assert macs[next(op for op in macs if "Conv" in op)] * 1e9 == pytest.approx(conv)
    assert all(v is None for op, v in macs.items() if op not in MATRIX_OPS)
    assert prof.matrix_share == pytest.approx(sum(op.share for op in prof.ops if op.op_type in MATRIX_OPS))
    assert 0 < prof.matrix_share < 1
    assert matrix_gmac_s(prof.as_dict()) == pytest.approx(prof.matrix_gmac_per_run
                                                          / (prof.matrix_share * prof.kernel_ms_per_run / 1000))


def test_matrix_macs_cover_transposed_and_blocked_layouts():
    assert matrix_macs("Gemm", [[40, 30]], [[30, 24]]) == 30 * 40 * 24  # transA: A is K x M
    assert matrix_macs("DATGemm", [[25088, 96], [288, 96], [288]], [[25088, 288]]) == 25088 * 96 * 288
    assert matrix_macs("FusedMatMul", [[4, 3, 32, 49], [4, 3, 32, 49]], [[4, 3, 49, 49]]) == 4 * 3 * 49 * 49 * 32
    assert matrix_macs("MatMul", [[8, 49, 32], [32, 49]], [[8, 49, 49]]) == 8 * 49 * 49 * 32
    # NCHWc: the output is blocked by 8 channels, the element count stays N * Cout * H * W
    assert matrix_macs("Conv", [[8, 96, 56, 56], [192, 96, 2, 2]], [[8, 24, 28, 28, 8]]) == 8 * 192 * 28 * 28 * 96 * 4
    assert matrix_macs("Conv", [[8, 96, 56, 56]], [[8, 192, 28, 28]]) is None  # weight shape not recorded
    assert matrix_macs("Gelu", [[8, 10]], [[8, 10]]) is None


def test_speed_ceiling_is_the_matrix_time_of_the_timed_mean():
    profile = {"matrix_share": 0.75, "kernel_ms_per_run": 1000.0, "matrix_gmac_per_run": 30.0}
    ceiling = speed_ceiling("ort-plugin", 8, 1200.0, profile, {"torch": (1800.0, 1.5), "ort-official": (1700.0, 2.0)},
                            machine_gmac_s=50.0)
    assert ceiling.matrix_ms == pytest.approx(900.0)
    assert ceiling.other_ms == pytest.approx(300.0)
    assert ceiling.matrix_gmac_s == pytest.approx(30.0 / 0.75)  # rate from the profiled kernel time
    assert ceiling.best_speedup == pytest.approx({"torch": 2.0, "ort-official": 1700.0 / 900.0})
    assert ceiling.peak_speedup == pytest.approx({"torch": 1800.0 / 600.0, "ort-official": 1700.0 / 600.0})  # 30 GMAC at 50
    assert ceiling.other_budget_ms == pytest.approx({"torch": 300.0, "ort-official": -50.0})
    line = describe_ceiling("dat_t", ceiling)
    assert "75%" in line and "80% of this machine's 50.0 GMAC/s" in line
    assert "as fast as one large SGEMM: 3.00x, 2.83x" in line
    assert "300 ms against torch" in line and "none against ort-official (the matrix products alone are 50 ms over)" in line


def test_sgemm_rate_is_measured_and_a_ceiling_without_it_names_no_rate():
    assert 0.05 < sgemm_rate_gmac_s(threads=1, size=256, runs=2) < 10_000
    without_rate = speed_ceiling("ort-plugin", 1, 10.0, {"matrix_share": 0.5, "kernel_ms_per_run": 10.0,
                                                         "matrix_gmac_per_run": None}, {"torch": (15.0, 1.5)})
    assert without_rate.matrix_gmac_s is None and without_rate.peak_speedup == {}
    assert "GMAC/s" not in describe_ceiling("dat_t", without_rate)


def test_op_table_shows_each_matrix_product_rate(tmp_path):
    from rich.console import Console

    prof = _profile_matrix_graph(tmp_path).as_dict()
    console = Console(record=True, width=200)
    report_mod.render_ops({"ort @ batch 1": prof}, console)
    text = console.export_text()
    title = " ".join(text.split())  # the title wraps at the table's width
    assert f"matrix products {prof['matrix_share']:.1%} at {matrix_gmac_s(prof):.1f} GMAC/s" in title
    for op in prof["ops"]:
        row = next(line for line in text.splitlines() if line.strip().lstrip("│┃ ").startswith(op["op_type"] + " "))
        if op["gmac_per_run"]:
            assert f"{op['gmac_per_run'] / (op['ms_per_run'] / 1000):.1f}" in row
    old = {k: v for k, v in prof.items() if k not in ("matrix_share", "matrix_gmac_per_run")}  # a pre-MAC report
    report_mod.render_ops({"old": {**old, "ops": [{k: v for k, v in o.items() if k != "gmac_per_run"} for o in old["ops"]]}},
                          console)
