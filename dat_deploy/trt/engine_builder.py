"""ONNX -> serialized TensorRT engine (the part that needs TensorRT and a GPU).

Strongly typed: the graph's types are the engine's precision (TensorRT 11 has no BuilderFlag.FP16;
TensorRT 10 gets NetworkDefinitionCreationFlag.STRONGLY_TYPED). The plugin library is registered
before parsing so the parser finds the `dat` op types as plugin creators.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from dat_deploy.errors import UserError
from dat_deploy.trt.loader import import_tensorrt, load_plugin_library


@dataclass
class Profile:
    """Batch range of the one optimisation profile; the image dims are fixed."""

    input_name: str
    image_dims: tuple[int, int, int]  # (C, H, W)
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise UserError(
                f"batch profile must satisfy 1 <= min <= opt <= max; got min={self.min_batch}, "
                f"opt={self.opt_batch}, max={self.max_batch}."
            )

    def shapes(self) -> dict[str, list[int]]:
        return {
            "min": [self.min_batch, *self.image_dims],
            "opt": [self.opt_batch, *self.image_dims],
            "max": [self.max_batch, *self.image_dims],
        }


@dataclass
class EngineBuild:
    plan: bytes
    seconds: float
    tensorrt_version: str
    device: dict[str, Any] = field(default_factory=dict)
    timing_cache_saved: bool = False


def device_description() -> dict[str, Any]:
    """GPU name and compute capability (via torch, a dependency anyway)."""
    try:
        import torch  # noqa: PLC0415

        if torch.cuda.is_available():
            index = torch.cuda.current_device()
            major, minor = torch.cuda.get_device_capability(index)
            return {
                "gpu": torch.cuda.get_device_name(index),
                "compute_capability": f"{major}.{minor}",
                "cuda_runtime": torch.version.cuda,
            }
    except Exception:  # noqa: BLE001 - description only
        pass
    return {"gpu": "unknown", "compute_capability": "unknown"}


def _network_flags(trt: ModuleType) -> int:
    flags = 0
    creation = trt.NetworkDefinitionCreationFlag
    # TensorRT 10: opt in to strong typing; TensorRT 11: always on, the flag is accepted and ignored.
    if hasattr(creation, "STRONGLY_TYPED"):
        flags |= 1 << int(creation.STRONGLY_TYPED)
    return flags


def _parse(trt: ModuleType, network, logger, onnx_path: Path) -> None:
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = []
        for i in range(parser.num_errors):
            error = parser.get_error(i)
            where = ""
            try:
                where = f" (node {error.node_name()!r}, op {error.node_operator()!r})"
            except Exception:  # noqa: BLE001 - older bindings lack these accessors
                pass
            errors.append(f"{error.desc()}{where}")
        hint = ""
        if any("Plugin not found" in e or "DAT" in e for e in errors):
            hint = " Is the plugin library the right one (--plugin-lib), built for this TensorRT version?"
        raise UserError(f"TensorRT could not parse {onnx_path}: {'; '.join(errors) or 'unknown error'}.{hint}")


def build_engine(
    onnx_path: Path,
    profile: Profile,
    plugin_library: Path | None = None,
    workspace_gb: float | None = None,
    timing_cache: Path | None = None,
    fp32_strict: bool = True,
    show_progress: bool = True,
    verbose: bool = False,
) -> EngineBuild:
    """Parse and build; returns the serialized plan. Writes nothing except the timing cache."""
    trt = import_tensorrt()
    logger = trt.Logger(trt.Logger.INFO if verbose else trt.Logger.WARNING)
    if plugin_library is not None:
        load_plugin_library(trt, plugin_library)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt))
    _parse(trt, network, logger, onnx_path)

    config = builder.create_builder_config()
    if workspace_gb is not None:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if fp32_strict and hasattr(trt.BuilderFlag, "TF32"):
        # TF32 matmuls would blur the fp32 parity contract (1e-3 on logits); fp32 means fp32 here.
        config.clear_flag(trt.BuilderFlag.TF32)
    shapes = profile.shapes()
    optimisation_profile = builder.create_optimization_profile()
    optimisation_profile.set_shape(profile.input_name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(optimisation_profile)

    cache_bytes = b""
    if timing_cache is not None and Path(timing_cache).is_file():
        cache_bytes = Path(timing_cache).read_bytes()
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)

    monitor = None
    if show_progress:
        from dat_deploy.trt.progress import make_progress_monitor  # noqa: PLC0415

        monitor = make_progress_monitor(trt)  # per-phase bars, or a spinner before TensorRT 10
        if hasattr(trt, "IProgressMonitor"):
            config.progress_monitor = monitor
    start = time.perf_counter()
    try:
        plan = builder.build_serialized_network(network, config)
    finally:
        if monitor is not None:
            monitor.close()
    seconds = time.perf_counter() - start
    if plan is None:
        raise UserError(
            f"TensorRT failed to build an engine from {onnx_path} (see the TensorRT log above). "
            "Try a larger --workspace or --verbose."
        )
    saved = False
    if timing_cache is not None:
        from dat_deploy.atomic import write_bytes  # noqa: PLC0415

        write_bytes(Path(timing_cache), bytes(config.get_timing_cache().serialize()), overwrite=True)
        saved = True
    return EngineBuild(
        plan=bytes(plan),
        seconds=seconds,
        tensorrt_version=trt.__version__,
        device=device_description(),
        timing_cache_saved=saved,
    )
