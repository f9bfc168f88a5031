"""benchmarks/ceiling.py (used by bench_backends.py --ops): the matrix-product floor of a graph and the machine's SGEMM rate."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_ceiling():
    """benchmarks/ is a folder of scripts, not a package: load the module from its file."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "ceiling.py"
    spec = importlib.util.spec_from_file_location("benchmarks_ceiling", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


_ceiling = _load_ceiling()
describe_ceiling, sgemm_rate_gmac_s, speed_ceiling = _ceiling.describe_ceiling, _ceiling.sgemm_rate_gmac_s, _ceiling.speed_ceiling


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
