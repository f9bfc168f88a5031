"""int8 for onnxruntime (CPU) and TensorRT: calibration on images, Q/DQ on matrix-product and conv inputs,
validation against PyTorch fp32. Entry point: `quantize_folder`."""

from dat_deploy.quantize.pipeline import QuantizeResult, quantize_folder

__all__ = ["QuantizeResult", "quantize_folder"]
