"""dat_deploy.profiling.memory: PeakRss sees a case's peak, with VmHWM and with the sampled fallback."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dat_deploy.profiling.memory import _hwm_resettable


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
