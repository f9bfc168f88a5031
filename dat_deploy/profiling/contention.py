"""How much of the CPU other processes took while we were timing.

Load averages are smoothed over a minute and count our own threads; this measures the timed
window itself: all busy CPU time on the machine minus the CPU time of this process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import psutil

BUSY_WARN = 0.10  # others used more than 10% of the machine's capacity


def _machine_busy_s() -> float:
    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _own_cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


def _cores() -> int:
    return psutil.cpu_count(logical=True) or 1  # machine-wide, like the busy time


@dataclass
class Contention:
    wall_s: float
    cores: int
    own_cpu_s: float
    others_cpu_s: float

    @property
    def others_share(self) -> float:
        """Share of the machine's capacity (cores x wall time) that other processes used."""
        if self.wall_s <= 0:
            return 0.0
        # /proc/stat counts in clock ticks: on a saturated machine the ratio can overshoot 1 by a tick or two
        return min(1.0, self.others_cpu_s / (self.cores * self.wall_s))

    def as_dict(self) -> dict:
        return {"wall_s": self.wall_s, "cores": self.cores, "own_cpu_s": self.own_cpu_s,
                "others_cpu_s": self.others_cpu_s, "others_share": self.others_share}


class ContentionMeter:
    """`with ContentionMeter() as meter: ...` then `meter.result`."""

    def __enter__(self) -> "ContentionMeter":
        self._wall = time.perf_counter()
        self._busy = _machine_busy_s()
        self._own = _own_cpu_s()
        self.result: Contention | None = None
        return self

    def __exit__(self, *exc) -> None:
        own = _own_cpu_s() - self._own
        busy = _machine_busy_s() - self._busy
        self.result = Contention(time.perf_counter() - self._wall, _cores(), own, max(0.0, busy - own))


def contention_warning(contention: dict | None, threshold: float = BUSY_WARN, threads: int | None = None) -> list[str]:
    if not contention or contention["others_share"] <= threshold:
        return []
    advice = "Re-run on an idle machine." if threads == 1 else "Re-run on an idle machine, or pin --threads 1."
    return [f"the machine was busy: other processes used {contention['others_share']:.0%} of its "
            f"{contention['cores']} cores while we timed. Absolute numbers are pessimistic and ratios between "
            "backends are unreliable: multi-threaded backends suffer most, PyTorch's OpenMP threads above all "
            f"(they wait on each other at every op). {advice}"]
