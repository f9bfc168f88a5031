"""int8 for onnxruntime (CPU) and TensorRT: calibration on images, Q/DQ on matrix-product and conv inputs,
validation against PyTorch fp32. Entry point: `dat_deploy.quantize.pipeline.quantize_folder`.

Nothing is imported here: the onnxruntime backend reads `cpu_int8` without pulling in the pipeline."""
