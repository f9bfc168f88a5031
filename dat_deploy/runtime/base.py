"""The one protocol every backend follows, so parity and profiling never special-case an engine."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Backend(Protocol):
    """An inference engine that maps one input batch to named outputs.

    `run` takes a float32 NCHW batch and returns numpy arrays keyed by output name
    (the first name in `output_names` is the logits, or the first feature map).
    """

    name: str  # e.g. "torch-cpu", "ort-cpu", "ort-plugin-cpu", "trt-fp16"
    output_names: list[str]
    # Whether concurrent `run` calls from several threads are safe (onnxruntime sessions are; a PyTorch
    # module or a TensorRT execution context is not): callers that share a backend lock when it is False.
    thread_safe: bool

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]: ...
