"""Latency and throughput profiling across backends and batch sizes (`dat-deploy profile`).

One module per job: `stats` (percentiles, noise), `runner` (interleaved timing loop),
`memory` (peak RSS / GPU memory), `machine` (the CPU model every report names), `contention`
(other processes' CPU share while timing), `backends` (backend names -> Backend objects, cached
exports), `ops` (per-op breakdowns from onnxruntime's and TensorRT's profilers), `report`
(terminal table, JSON, CSV), `plots` (PNG; matplotlib imported only there) and `pipeline` (the
whole command as one call).
"""

from dat_deploy.profiling.stats import LatencyStats, summarize

__all__ = ["LatencyStats", "summarize"]
