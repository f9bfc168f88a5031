"""The Python API for services: one `Classifier` per model, shared by every thread of the service.

    clf = Classifier.from_artifact("models/dat_t_onnx")      # ONNX or TensorRT engine + its metadata
    preds = clf.predict(["cat.jpg", "dog.png"], topk=5)      # labels, indices, probabilities
    logits = clf.predict_batch(batch)                         # (N, 3, S, S) float32 -> (N, classes)

Concurrency model: a Classifier holds ONE inference session. With onnxruntime, concurrent
`predict` / `predict_batch` calls from many threads run in parallel on that session
(`InferenceSession.run` is thread-safe; each call gets its own inputs and outputs), so a threaded
web server shares one Classifier and nothing else. Preprocessing is pure and runs in the calling
thread. The PyTorch and TensorRT backends are called under a lock (a TensorRT execution context
must not run two batches at once): still safe to share, but calls are serialised. For more
throughput than one session gives, run several processes or Triton with instance groups.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from dat_deploy.artifacts import Artifact, open_artifact
from dat_deploy.errors import UserError
from dat_deploy.labels import class_names
from dat_deploy.preprocess import ImageLike, as_rgb_image, preprocess, validate_batch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RANDOM_LABELS_NOTICE = (
    "this model has seeded random weights (no checkpoint): its labels are meaningless. "
    "Export or load an official checkpoint (--weights) for real predictions."
)


@dataclass(frozen=True)
class ModelInfo:
    """What a Classifier needs to know about its model: preprocessing, head size, provenance."""

    variant: str | None
    input_size: int
    resize_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    num_classes: int
    random_weights: bool
    weights_sha256: str | None = None
    random_init_seed: int | None = None
    source: str = ""
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Prediction:
    """Top-k classes of one image, best first."""

    source: str
    indices: tuple[int, ...]
    labels: tuple[str, ...]
    probabilities: tuple[float, ...]
    random_weights: bool = False
    notice: str | None = field(default=None, repr=False)

    @property
    def label(self) -> str:
        return self.labels[0]

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["top"] = [
            {"index": i, "label": label, "probability": p}
            for i, label, p in zip(self.indices, self.labels, self.probabilities)
        ]
        for key in ("indices", "labels", "probabilities"):
            data.pop(key)
        if data["notice"] is None:
            data.pop("notice")
        return data


class Classifier:
    """A model plus its preprocessing and class names; safe to share between threads (see module doc)."""

    def __init__(self, backend: Any, info: ModelInfo, keepalive: Any = None):
        self.backend = backend
        self.info = info
        self.labels = class_names(info.num_classes)
        self._keepalive = keepalive  # e.g. the temporary folder of an on-the-fly export
        self._lock = contextlib.nullcontext() if backend.thread_safe else threading.Lock()

    # ---- construction -------------------------------------------------------------------------

    @classmethod
    def from_artifact(cls, path: str | os.PathLike, providers: Sequence[str] | None = None) -> "Classifier":
        """Load an ONNX model or a TensorRT engine (file, or a Triton model folder) with its metadata."""
        artifact = open_artifact(path)
        if artifact.is_onnx:
            from dat_deploy.runtime import OrtBackend  # registers the dat custom-op library when needed

            backend = OrtBackend(artifact.path, providers=list(providers) if providers else None)
        else:
            from dat_deploy.runtime.tensorrt_backend import TensorRTBackend  # imports tensorrt lazily

            backend = TensorRTBackend(artifact.path)
        return cls(backend, model_info(artifact))

    @classmethod
    def from_variant(
        cls,
        variant: str,
        weights: str | os.PathLike | None = None,
        backend: str = "torch",
        seed: int | None = None,
    ) -> "Classifier":
        """A registered variant in PyTorch (`backend="torch"`) or exported on the fly to onnxruntime ("ort")."""
        from dat_deploy.model import create_model, get_variant

        spec = get_variant(variant)
        kwargs = {} if seed is None else {"seed": seed}
        if backend == "torch":
            from dat_deploy.runtime import TorchBackend

            model = create_model(variant, weights=weights, **kwargs)
            provenance = getattr(model, "provenance", {}) or {}
            info = ModelInfo(
                variant=variant, input_size=spec.input_size, resize_size=spec.resize_size,
                mean=tuple(spec.mean), std=tuple(spec.std), num_classes=spec.num_classes,
                random_weights=weights is None,
                weights_sha256=provenance.get("weights_sha256"),
                random_init_seed=provenance.get("random_init_seed"),
                source=f"{variant} (PyTorch)",
            )
            return cls(TorchBackend(model), info)
        if backend == "ort":
            from dat_deploy.export import export_onnx

            folder = tempfile.TemporaryDirectory(prefix=f"dat-deploy-{variant}-")
            result = export_onnx(variant, output_dir=folder.name, weights=weights, **kwargs)
            classifier = cls.from_artifact(result.onnx_path)
            classifier._keepalive = folder
            return classifier
        raise UserError(f"unknown backend {backend!r} for --variant: choose torch or ort (engines load with --model).")

    # ---- inference ----------------------------------------------------------------------------

    @property
    def notice(self) -> str | None:
        return RANDOM_LABELS_NOTICE if self.info.random_weights else None

    def preprocess(self, images: Iterable[ImageLike]) -> np.ndarray:
        info = self.info
        return preprocess(images, info.input_size, info.resize_size, info.mean, info.std)

    def predict_batch(self, batch: np.ndarray) -> np.ndarray:
        """Logits (N, num_classes) float32 for a preprocessed (N, 3, S, S) float32 batch."""
        batch = validate_batch(batch, self.info.input_size)
        with self._lock:
            outputs = self.backend.run(batch)
        logits = outputs[self.backend.output_names[0]] if isinstance(outputs, dict) else outputs
        return np.asarray(logits, dtype=np.float32)

    def predict(self, images: ImageLike | Sequence[Any], topk: int = 5, batch_size: int = 16) -> list[Prediction]:
        """Top-k classes for images: paths, encoded bytes, PIL images, uint8 arrays, or (name, image) pairs."""
        items = _as_list(images)
        if not items:
            raise UserError("no images given to predict.")
        if topk < 1:
            raise UserError(f"topk must be at least 1, got {topk}.")
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}.")
        topk = min(topk, self.info.num_classes)
        results: list[Prediction] = []
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            names = [_source_name(item, start + i) for i, item in enumerate(chunk)]
            images_rgb = [as_rgb_image(item[1] if isinstance(item, tuple) else item) for item in chunk]
            probabilities = softmax(self.predict_batch(self.preprocess(images_rgb)))
            for name, probs in zip(names, probabilities):
                order = np.argsort(-probs, kind="stable")[:topk]
                results.append(Prediction(
                    source=name,
                    indices=tuple(int(i) for i in order),
                    labels=tuple(self.labels[i] for i in order),
                    probabilities=tuple(float(probs[i]) for i in order),
                    random_weights=self.info.random_weights,
                    notice=self.notice,
                ))
        return results


def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def _as_list(images: Any) -> list:
    if isinstance(images, (str, os.PathLike, bytes, np.ndarray)) or hasattr(images, "getpixel"):
        return [images]
    return list(images)


def _source_name(item: Any, index: int) -> str:
    if isinstance(item, tuple):
        return str(item[0])
    if isinstance(item, (str, os.PathLike)):
        return str(item)
    return getattr(item, "filename", "") or f"image[{index}]"  # bytes and arrays: their position


# ---- artifacts and their metadata ---------------------------------------------------------------


def model_info(artifact: Artifact) -> ModelInfo:
    """Preprocessing and provenance from the artifact's metadata (an engine's comes from its sidecar);
    the input size and class count fall back to the ONNX graph's static dims, then to the variant's."""
    graph_size = graph_classes = None
    if artifact.inputs:
        graph_size = _static(next(iter(artifact.inputs.values())), 2)
    if artifact.outputs:
        graph_classes = _static(next(iter(artifact.outputs.values())), 1)
    return _model_info(dict(artifact.metadata), artifact.path, graph_size, graph_classes)


def _model_info(meta: dict[str, Any], artifact: Path, graph_size: int | None, graph_classes: int | None) -> ModelInfo:
    warnings: list[str] = []
    variant = str(meta["variant"]) if meta.get("variant") else None
    spec = None
    if variant is not None:
        from dat_deploy.model.variants import VARIANTS

        spec = VARIANTS.get(variant)

    input_size = _as_int(meta.get("input_size")) or graph_size or (spec.input_size if spec else None)
    if input_size is None:
        raise UserError(
            f"{artifact} says nothing about its input size (no input_size metadata, dynamic spatial dims). "
            "Re-export it with `dat-deploy export`, which records the preprocessing."
        )
    resize_size = _as_int(meta.get("resize_size"))
    if resize_size is None:
        resize_size = spec.resize_size if spec and spec.input_size == input_size else int(256 / 224 * input_size)
        warnings.append(f"no resize_size in the metadata; using {resize_size}")
    mean = _as_floats(meta.get("mean"), 3)
    std = _as_floats(meta.get("std"), 3)
    if mean is None or std is None:
        warnings.append("no mean/std in the metadata; using the ImageNet defaults")
    if meta.get("outputs") == "features":
        raise UserError(f"{artifact} is a feature-map export (backbone); predict needs a classifier export "
                        "(dat-deploy export without --features).")
    num_classes = _as_int(meta.get("num_classes")) or graph_classes or (spec.num_classes if spec else 1000)
    sha = meta.get("weights_sha256") or None
    seed = _as_int(meta.get("random_init_seed"))
    return ModelInfo(
        variant=variant,
        input_size=input_size,
        resize_size=resize_size,
        mean=mean or IMAGENET_MEAN,
        std=std or IMAGENET_STD,
        num_classes=num_classes,
        random_weights=sha is None and seed is not None,
        weights_sha256=str(sha) if sha else None,
        random_init_seed=seed,
        source=str(artifact),
        warnings=tuple(warnings),
    )


def _as_int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _as_floats(value: Any, count: int) -> tuple[float, ...] | None:
    """Accepts a list, a JSON list string, or "a,b,c" / "a b c"."""
    if value is None:
        return None
    if isinstance(value, str):
        text = value.strip().strip("[]()")
        parts = [p for p in text.replace(",", " ").split() if p]
    else:
        parts = list(value)
    try:
        floats = tuple(float(p) for p in parts)
    except (TypeError, ValueError):
        return None
    return floats if len(floats) == count else None


def _static(shape: Sequence[Any], axis: int) -> int | None:
    return shape[axis] if len(shape) > axis and isinstance(shape[axis], int) and shape[axis] > 0 else None
