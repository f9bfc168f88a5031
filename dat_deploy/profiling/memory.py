"""Peak memory per profiled case: process RSS (kernel high-water mark or sampled), GPU memory via torch.

Backends share one process, so RSS is the whole process (every loaded backend counts); the growth
above the RSS at the start of the case is what running that case added (activations, arenas).
"""

from __future__ import annotations

import sys
import threading
from typing import Hashable

import psutil

MB = 1024.0 * 1024.0


class PeakRss:
    """Peak RSS of this process per case, keyed by whatever the caller passes to `begin`.

    On Linux the kernel keeps the high-water mark (VmHWM) and resets it when "5" is written to
    /proc/self/clear_refs: exact, and nothing runs beside the backend. Elsewhere a thread samples
    RSS every `interval_s` (inference releases the GIL, so it sees memory mid-run), plus a direct
    sample at the end of each run so that short runs are not missed.
    """

    def __init__(self, interval_s: float = 0.02, use_hwm: bool | None = None):
        self._process = psutil.Process()
        self._interval_s = interval_s
        self._use_hwm = _hwm_resettable() if use_hwm is None else use_hwm
        self._lock = threading.Lock()
        self._active: Hashable | None = None
        self.peak_bytes: dict[Hashable, int] = {}
        self.start_bytes: dict[Hashable, int] = {}
        self._stop = threading.Event()
        self._thread = None if self._use_hwm else threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    @property
    def method(self) -> str:
        return "VmHWM (kernel high-water mark, reset per run)" if self._use_hwm else f"sampled every {self._interval_s * 1000:.0f} ms"

    def __enter__(self) -> "PeakRss":
        if self._thread is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()

    def rss(self) -> int:
        return self._process.memory_info().rss

    def begin(self, key: Hashable) -> None:
        if self._use_hwm:
            _reset_hwm()
        rss = self.rss()
        with self._lock:
            self._active = key
            self.start_bytes.setdefault(key, rss)
            self._record(key, rss)

    def end(self) -> None:
        peak = _read_hwm() if self._use_hwm else self.rss()
        with self._lock:
            if self._active is not None:
                self._record(self._active, peak)
            self._active = None

    def _record(self, key: Hashable, rss: int) -> None:
        if rss > self.peak_bytes.get(key, 0):
            self.peak_bytes[key] = rss

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            rss = self.rss()
            with self._lock:
                if self._active is not None:
                    self._record(self._active, rss)

    def peak_mb(self, key: Hashable) -> float | None:
        value = self.peak_bytes.get(key)
        return None if value is None else value / MB

    def growth_mb(self, key: Hashable) -> float | None:
        if key not in self.peak_bytes:
            return None
        return max(0, self.peak_bytes[key] - self.start_bytes[key]) / MB


_STATUS = "/proc/self/status"
_CLEAR_REFS = "/proc/self/clear_refs"


def _read_hwm() -> int:
    with open(_STATUS) as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM in /proc/self/status")


def _reset_hwm() -> None:
    with open(_CLEAR_REFS, "w") as f:
        f.write("5")


def _hwm_resettable() -> bool:
    """True where writing 5 to clear_refs resets VmHWM (Linux >= 4.0, not forbidden by the sandbox)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        _reset_hwm()
        _read_hwm()
    except OSError:
        return False
    return True


class GpuPeak:
    """Peak GPU memory of one backend, where one applies (None for CPU backends).

    In order of preference: the backend's own count (`peak_device_memory_bytes()`); for a backend
    on a CUDA `device` (PyTorch), torch.cuda.max_memory_allocated; for a backend that offers
    `timed_run` (TensorRT, whose activation memory torch's allocator never sees), the device-wide
    memory in use after each run (cudaMemGetInfo: CUDA context and other processes included).
    """

    def __init__(self, backend):
        self._own = getattr(backend, "peak_device_memory_bytes", None)
        self.method = None
        if self._own is not None:
            self.method = "backend"
        elif _cuda_ready():
            if str(getattr(backend, "device", "cpu")).startswith("cuda"):
                self.method = "torch.cuda.max_memory_allocated"
            elif hasattr(backend, "timed_run"):
                self.method = "device-wide (cudaMemGetInfo)"
        self.peak_bytes: int | None = None

    @property
    def applies(self) -> bool:
        return self.method is not None

    def before_run(self) -> None:
        if self.method == "torch.cuda.max_memory_allocated":
            import torch

            torch.cuda.reset_peak_memory_stats()

    def after_run(self) -> None:
        if self.method is None:
            return
        if self.method == "backend":
            value = int(self._own())
        else:
            import torch

            if self.method == "torch.cuda.max_memory_allocated":
                value = int(torch.cuda.max_memory_allocated())
            else:
                free, total = torch.cuda.mem_get_info()
                value = int(total - free)
        self.peak_bytes = value if self.peak_bytes is None else max(self.peak_bytes, value)

    def peak_mb(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / MB


def _cuda_ready() -> bool:
    """CUDA through torch, without importing torch (or starting CUDA) for CPU-only profiles."""
    torch = sys.modules.get("torch")
    return torch is not None and torch.cuda.is_available()
