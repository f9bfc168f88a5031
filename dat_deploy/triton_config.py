"""Triton model configurations, built with Triton's own ModelConfig protobuf (from tritonclient).

Written as protobuf text (config.pbtxt) so that what we write is exactly what Triton parses.
"""

from __future__ import annotations

from pathlib import Path

from dat_deploy.errors import UserError


def _pb():
    try:
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UserError("writing Triton configs needs tritonclient: pip install 'tritonclient[grpc]' (or 'dat-deploy[triton]').") from None
    return model_config_pb2


def tensor_config(name: str, dims: list[int]):
    pb = _pb()
    return dict(name=name, data_type=pb.TYPE_FP32, dims=dims)


def model_config(
    name: str,
    platform: str,  # "onnxruntime_onnx" or "tensorrt_plan"
    inputs: list[dict],
    outputs: list[dict],
    max_batch_size: int,
    op_library: str | None = None,
    preferred_batch_sizes: list[int] | None = None,
):
    """A ModelConfig message. dims exclude the batch dimension when max_batch_size > 0 (Triton's rule)."""
    pb = _pb()
    config = pb.ModelConfig(name=name, platform=platform, max_batch_size=max_batch_size)
    config.backend = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}.get(platform, "")
    for spec in inputs:
        config.input.add(**spec)
    for spec in outputs:
        config.output.add(**spec)
    if max_batch_size > 0:
        config.dynamic_batching.max_queue_delay_microseconds = 100
        config.dynamic_batching.preferred_batch_size.extend(
            [b for b in (preferred_batch_sizes or []) if b <= max_batch_size])
    if op_library:
        config.model_operations.op_library_filename.append(op_library)
        # Our onnxruntime custom ops are CPU kernels: on a GPU instance onnxruntime would copy every tensor
        # to and from each of them. (Triton picks a GPU instance by default where it sees one.)
        config.instance_group.add(kind=pb.ModelInstanceGroup.KIND_CPU, count=1)
    return config


def to_text(config) -> str:
    from google.protobuf import text_format

    return text_format.MessageToString(config)


def parse_config(path: str | Path):
    """Parse a config.pbtxt with Triton's schema; a UserError names the file and the problem."""
    from google.protobuf import text_format

    path = Path(path)
    try:
        return text_format.Parse(path.read_text(), _pb().ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise UserError(f"{path} is not a valid Triton model config: {exc}") from exc
