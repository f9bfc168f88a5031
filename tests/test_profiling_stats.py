"""dat_deploy.profiling.stats: percentiles, spread, throughput and the noise warnings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from dat_deploy.profiling.stats import few_iterations_warning, noise_warnings, summarize, throughput


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
