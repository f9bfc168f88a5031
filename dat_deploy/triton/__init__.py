"""Triton Inference Server: model configurations (config), the tensorrt backend's folder (tensorrt), and
gathering model folders into one serving repository (repository). Triton's own ModelConfig protobuf,
from tritonclient, is the schema everywhere; it is imported only when a config is built or read."""
