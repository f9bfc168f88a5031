"""dat_deploy.profiling.report: the JSON schema, CSV columns, ratios and warnings, the terminal tables."""

from __future__ import annotations

import csv
import io
import json

import pytest

from dat_deploy.profiling import report as report_mod
from dat_deploy.profiling.backends import PreparedBackend
from dat_deploy.profiling.ops import matrix_gmac_s
from dat_deploy.profiling.runner import CaseResult
from profiling_helpers import REPORT_SCHEMA, check_schema, profile_matrix_graph


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


def test_op_table_shows_each_matrix_product_rate(tmp_path):
    from rich.console import Console

    prof = profile_matrix_graph(tmp_path).as_dict()
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
