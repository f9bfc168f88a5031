"""dat_deploy.profiling.contention: other processes' CPU share while timing, and when it warns."""

from __future__ import annotations

from dat_deploy.profiling.contention import ContentionMeter, contention_warning


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
