"""Triton model configurations (config.pbtxt), built and read with Triton's own ModelConfig protobuf.

Written as protobuf text so that what we write is exactly what Triton parses, and parsed with the same
schema so that unknown fields and typos are errors. Every protobuf access of dat-deploy (export, trt, triton,
serve) goes through here.
"""

from __future__ import annotations

from pathlib import Path

from dat_deploy.errors import UserError

CONFIG_NAME = "config.pbtxt"
# platform -> backend, for the two kinds of model dat-deploy writes.
PLATFORM_BACKENDS = {"onnxruntime_onnx": "onnxruntime", "tensorrt_plan": "tensorrt"}


def _protobuf():
    """(model_config_pb2, text_format), or a UserError saying what to install."""
    try:
        from google.protobuf import text_format
        from tritonclient.grpc import model_config_pb2
    except ImportError:
        raise UserError(
            "Triton model configs need tritonclient: pip install 'tritonclient[grpc]' (or 'dat-deploy[triton]')."
        ) from None
    return model_config_pb2, text_format


def tensor_config(name: str, dims: list[int], data_type: str = "TYPE_FP32") -> dict:
    """A tensor entry for `model_config` (dims without the batch dim when batching; -1 = dynamic);
    `data_type` is a name of Triton's DataType enum (TYPE_FP32, TYPE_STRING, ...)."""
    pb, _ = _protobuf()
    return dict(name=name, data_type=pb.DataType.Value(data_type), dims=dims)


def model_config(
    name: str,
    platform: str,  # "onnxruntime_onnx" or "tensorrt_plan"; "" with a `backend`
    inputs: list[dict],
    outputs: list[dict],
    max_batch_size: int,
    op_library: str | None = None,
    preferred_batch_sizes: list[int] | None = None,
    backend: str | None = None,  # None: the platform's backend; "python" for a Python model
):
    """A ModelConfig message. dims exclude the batch dimension when max_batch_size > 0 (Triton's rule)."""
    pb, _ = _protobuf()
    config = pb.ModelConfig(name=name, platform=platform, max_batch_size=max_batch_size)
    config.backend = backend if backend is not None else PLATFORM_BACKENDS.get(platform, "")
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
        add_instance_group(config, gpu=False)
    return config


def add_instance_group(config, gpu: bool, count: int = 1) -> None:
    """One instance group of `count` model instances on the GPU or on the CPU."""
    pb, _ = _protobuf()
    kind = pb.ModelInstanceGroup.KIND_GPU if gpu else pb.ModelInstanceGroup.KIND_CPU
    config.instance_group.add(kind=kind, count=count)


def uses_gpu(config) -> bool:
    """Whether any instance group of the config asks for a GPU."""
    return any(group.kind == group.KIND_GPU for group in config.instance_group)


def config_text(config) -> str:
    """The config.pbtxt text of a ModelConfig."""
    _, text_format = _protobuf()
    return text_format.MessageToString(config)


def parse_config_text(text: str, where: str):
    """A ModelConfig from config.pbtxt text; `where` names its source in the UserError."""
    pb, text_format = _protobuf()
    config = pb.ModelConfig()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as exc:
        raise UserError(f"{where} is not a valid Triton ModelConfig: {exc}") from None
    return config


def load_config(path: str | Path):
    """Parse a config.pbtxt with Triton's ModelConfig schema (unknown fields and typos are errors)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist: a Triton model folder needs a {CONFIG_NAME}.")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is unreadable ({exc}): a Triton model folder needs a readable {CONFIG_NAME}.") from None
    return parse_config_text(text, str(path))


__all__ = ["CONFIG_NAME", "PLATFORM_BACKENDS", "add_instance_group", "config_text", "load_config", "model_config",
           "parse_config_text", "tensor_config", "uses_gpu"]
