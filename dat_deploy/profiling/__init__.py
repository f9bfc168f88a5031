"""Latency and throughput profiling across backends and batch sizes (`dat-deploy profile`).

One module per job: `stats` (percentiles, noise), `runner` (interleaved timing loop),
`memory` (peak RSS / GPU memory), `backends` (backend names -> Backend objects),
`ops` (per-op breakdowns from onnxruntime's and TensorRT's profilers), `report`
(terminal table, JSON, CSV) and `plots` (PNG; matplotlib imported only there).
"""

from dat_deploy.profiling.stats import LatencyStats, summarize

__all__ = ["LatencyStats", "summarize"]
