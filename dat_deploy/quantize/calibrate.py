"""Activation ranges of a plugin-flavour graph, measured by onnxruntime's own calibrators in a session that
has our custom-op library registered.

onnxruntime's calibrators build their own InferenceSession and offer no way to register a custom-op
library (github.com/microsoft/onnxruntime/issues/10082), so `quantize_static` fails on the first `dat`
node. Here the calibrator classes (MinMax, Entropy, Percentile; their statistics unchanged) get a
`create_inference_session` that also registers the library; the ranges they compute go to a calibration
cache (`save_tensors_data`), which `quantize_static(..., calibration_cache_path=...)` loads instead of
calibrating: its documented way of reusing ranges, so the quantizer itself runs unmodified.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

METHODS = ("minmax", "entropy", "percentile")
CALIBRATION_BATCH = 8


def calibration_method(name: str):
    from onnxruntime.quantization import CalibrationMethod

    return {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
            "percentile": CalibrationMethod.Percentile}[name]


def _calibrator_class(method: str, library: Path | None):
    from onnxruntime.quantization import calibrate

    base = {"minmax": calibrate.MinMaxCalibrater, "entropy": calibrate.EntropyCalibrater,
            "percentile": calibrate.PercentileCalibrater}[method]

    def create_inference_session(self):  # CalibraterBase's, plus the library
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        if library is not None:
            options.register_custom_ops_library(str(library))
        self.infer_session = ort.InferenceSession(self.augmented_model_path, sess_options=options,
                                                  providers=self.execution_providers)

    return type(f"Dat{base.__name__}", (base,), {"create_inference_session": create_inference_session})


class BatchReader:
    """A CalibrationDataReader over preprocessed images, CALIBRATION_BATCH at a time."""

    def __init__(self, input_name: str, images: np.ndarray, batch: int = CALIBRATION_BATCH):
        self._batches = [{input_name: np.ascontiguousarray(images[i:i + batch])} for i in range(0, len(images), batch)]
        self._next = 0

    def get_next(self):
        if self._next >= len(self._batches):
            return None
        self._next += 1
        return self._batches[self._next - 1]

    def __len__(self) -> int:
        return len(self._batches)

    def __iter__(self):  # qdq_loss_debug iterates; the calibrators call get_next
        return iter(self._batches)


def write_calibration_cache(model_path: Path, images: np.ndarray, method: str, cache_path: Path,
                            library: Path | None, op_types: list[str], symmetric: bool = False) -> None:
    """Calibrate `model_path` on `images` with onnxruntime's calibrator for `method`; ranges to `cache_path`."""
    import onnx
    from onnxruntime.quantization.calibrate import save_tensors_data

    work = cache_path.parent
    cls = _calibrator_class(method, library)
    kwargs = {"symmetric": symmetric} if method != "percentile" else {"symmetric": True}  # ORT's defaults
    calibrator = cls(Path(model_path), op_types, augmented_model_path=str(work / "augmented.onnx"), **kwargs)
    calibrator.augment_graph()
    calibrator.create_inference_session()
    input_name = onnx.load(str(model_path), load_external_data=False).graph.input[0].name
    calibrator.collect_data(BatchReader(input_name, images))
    save_tensors_data(calibrator.compute_data(), cache_path)
