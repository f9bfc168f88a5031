"""dat_deploy.profiling.runner: interleaving, the pause between backends, duration, TensorRT-style split timings."""

from __future__ import annotations

import pytest

from dat_deploy.profiling.runner import interleaved_order, make_cases, run_profile
from profiling_helpers import FakeBackend, FakeClock, zero_inputs


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
    results = run_profile(backends, [1, 8], zero_inputs([1, 8]), warmup=1, iters=3)
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
    results = run_profile(backends, [1], zero_inputs([1]), warmup=0, iters=4, clock=clock)
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

    results = run_profile(backends, [1, 8], zero_inputs([1, 8]), warmup=1, iters=3, clock=clock, settle_s=0.25,
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
    results = run_profile(backends, [1, 2], zero_inputs([1, 2]), warmup=0, iters=None, duration_s=0.1, clock=clock)
    counts = {len(r.samples_ms) for r in results}
    assert counts == {3}  # a round costs 40 ms: 40, 80, 120 >= 100 ms -> three rounds, equal for all cases


def test_runner_keeps_transfer_compute_split_when_backend_offers_it():
    log: list = []
    backends = {"trt": FakeBackend("trt", log, cost_ms=3.0, splits=True), "ort": FakeBackend("ort", log)}
    results = run_profile(backends, [2], zero_inputs([2]), warmup=0, iters=5)
    trt, ort = results
    assert trt.split_ms["h2d_ms"] == pytest.approx([0.2] * 5)
    assert trt.split_ms["compute_ms"] == pytest.approx([3.0] * 5)
    assert len(trt.split_ms["d2h_ms"]) == 5
    assert ort.split_ms == {}


def test_runner_rejects_bad_settings():
    backends = {"a": FakeBackend("a", [])}
    with pytest.raises(ValueError):
        run_profile(backends, [1], zero_inputs([1]), iters=None, duration_s=None)
    with pytest.raises(ValueError):
        run_profile(backends, [1], zero_inputs([1]), iters=0)
