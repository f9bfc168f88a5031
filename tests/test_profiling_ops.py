"""dat_deploy.profiling.ops: per-op breakdowns from onnxruntime's trace and TensorRT's layer records, matrix MACs."""

from __future__ import annotations

import numpy as np
import pytest

from dat_deploy.profiling.ops import (MATRIX_OPS, layer_type_from_name, matrix_gmac_s, matrix_macs, ort_op_profile,
                                     parse_ort_profile, trt_layer_profile)
from profiling_helpers import FakeBackend, grid_sample_graph, profile_matrix_graph


def test_ort_op_profile_of_a_real_trace(tmp_path):
    path = grid_sample_graph(tmp_path / "gs.onnx")
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


def test_matrix_products_are_counted_from_a_real_trace(tmp_path):
    prof = profile_matrix_graph(tmp_path)
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
