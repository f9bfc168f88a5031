"""Inference backends behind one protocol (`Backend.run(batch) -> {name: array}`).

    TorchBackend(model)            PyTorch eager (CPU, CUDA); the fp32 reference
    OrtBackend(path)               onnxruntime (CPU; CUDA/TensorRT providers where installed)
    TensorRTBackend(engine)        dat_deploy.runtime.tensorrt_backend (imports tensorrt lazily)
    load_backend(path_or_variant)  picks one from an artifact path
"""

from __future__ import annotations

from pathlib import Path

from dat_deploy.artifacts import ENGINE_SUFFIXES, find_model_file
from dat_deploy.runtime.base import Backend
from dat_deploy.runtime.onnxruntime_backend import OrtBackend
from dat_deploy.runtime.torch_backend import TorchBackend


def load_backend(artifact: str | Path, providers: list[str] | None = None, threads: int | None = None) -> Backend:
    """A backend for an ONNX file or a TensorRT engine (or a model folder holding one), chosen by file suffix."""
    path = find_model_file(artifact)
    if path.suffix in ENGINE_SUFFIXES:
        from dat_deploy.runtime.tensorrt_backend import TensorRTBackend

        return TensorRTBackend(path)
    return OrtBackend(path, providers=providers, intra_op_threads=threads)


__all__ = ["Backend", "OrtBackend", "TorchBackend", "load_backend"]
