"""Peak memory per profiled case: process RSS sampled in a background thread, GPU memory via torch.

Backends share one process, so RSS is the whole process (every loaded backend counts); the growth
above the RSS at the start of the case is what running that case added (activations, arenas).
"""

from __future__ import annotations

import sys
import threading
from typing import Hashable

import psutil

MB = 1024.0 * 1024.0


class RssSampler:
    """Samples this process's RSS every `interval_s` and keeps the peak per active key.

    `activate(key)` says which case runs now; inference releases the GIL, so the sampler sees the
    memory while the backend is computing. The caller also samples directly around each run so
    that runs shorter than the interval are not missed.
    """

    def __init__(self, interval_s: float = 0.005):
        self._process = psutil.Process()
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._active: Hashable | None = None
        self.peak_bytes: dict[Hashable, int] = {}
        self.start_bytes: dict[Hashable, int] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def rss(self) -> int:
        return self._process.memory_info().rss

    def activate(self, key: Hashable | None) -> None:
        rss = self.rss()
        with self._lock:
            self._active = key
            if key is not None:
                self.start_bytes.setdefault(key, rss)
                self._record(key, rss)

    def sample(self) -> None:
        rss = self.rss()
        with self._lock:
            if self._active is not None:
                self._record(self._active, rss)

    def _record(self, key: Hashable, rss: int) -> None:
        if rss > self.peak_bytes.get(key, 0):
            self.peak_bytes[key] = rss

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.sample()

    def peak_mb(self, key: Hashable) -> float | None:
        value = self.peak_bytes.get(key)
        return None if value is None else value / MB

    def growth_mb(self, key: Hashable) -> float | None:
        if key not in self.peak_bytes:
            return None
        return max(0, self.peak_bytes[key] - self.start_bytes[key]) / MB


class GpuPeak:
    """Peak GPU memory of one backend, where one applies.

    A backend may report its own device memory (`peak_device_memory_bytes()`, e.g. TensorRT's
    engine + context memory); otherwise a backend that runs on CUDA through torch is measured with
    torch.cuda.max_memory_allocated. CPU backends get None.
    """

    def __init__(self, backend):
        self._backend = backend
        self._own = getattr(backend, "peak_device_memory_bytes", None)
        self._torch_cuda = self._own is None and _runs_on_cuda(backend)
        self.peak_bytes: int | None = None

    @property
    def applies(self) -> bool:
        return self._own is not None or self._torch_cuda

    def before_run(self) -> None:
        if self._torch_cuda:
            import torch

            torch.cuda.reset_peak_memory_stats()

    def after_run(self) -> None:
        if self._own is not None:
            value = int(self._own())
        elif self._torch_cuda:
            import torch

            value = int(torch.cuda.max_memory_allocated())
        else:
            return
        self.peak_bytes = value if self.peak_bytes is None else max(self.peak_bytes, value)

    def peak_mb(self) -> float | None:
        return None if self.peak_bytes is None else self.peak_bytes / MB


def _runs_on_cuda(backend) -> bool:
    device = str(getattr(backend, "device", "cpu"))
    if not device.startswith("cuda") or "torch" not in sys.modules:
        return False
    import torch

    return torch.cuda.is_available()
