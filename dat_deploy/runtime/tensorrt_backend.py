"""TensorRT engine behind the Backend protocol: name-based I/O with torch CUDA tensors as buffers.

    backend = TensorRTBackend("models/dat_t_trt_fp16/1/model.plan")
    logits = backend.run(batch)["logits"]          # batch: float32 NCHW numpy
    backend.timings()                              # H2D / GPU compute / D2H of that call, ms

The plugin library is registered before the plan is deserialised (TensorRT looks the plugin
creators up while deserialising). The sidecar JSON that build-trt writes next to the plan names
the TensorRT version and the plugin library (path and sha256) the engine was built with; a
mismatch is reported as what it is instead of TensorRT's serialization assertion.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dat_deploy.artifacts import ENGINE_SUFFIXES, find_model_file, read_sidecar
from dat_deploy.errors import UserError


@dataclass(frozen=True)
class Timings:
    """One call's split, in milliseconds (trtexec's H2D Latency / GPU Compute Time / D2H Latency)."""

    h2d_ms: float
    compute_ms: float
    d2h_ms: float

    @property
    def total_ms(self) -> float:
        return self.h2d_ms + self.compute_ms + self.d2h_ms


def _torch_dtype(trt, torch, trt_dtype):
    table = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32, trt.int8: torch.int8}
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if trt_dtype not in table:
        raise UserError(f"engine tensor type {trt_dtype} is not supported by dat-deploy's TensorRT backend.")
    return table[trt_dtype]


def _check_versions(trt, engine_path: Path, sidecar: dict[str, Any] | None) -> None:
    if not sidecar:
        return
    built_with = sidecar.get("tensorrt_version")
    if built_with and built_with != trt.__version__:
        raise UserError(
            f"{engine_path} was built by TensorRT {built_with}, but this is TensorRT {trt.__version__}; "
            "engines only load in the version that built them. Rebuild it here with `dat-deploy build-trt`."
        )


def _plugin_library(engine_path: Path, plugin_lib: Path | None, sidecar: dict[str, Any] | None) -> Path | None:
    """The library to load, checked against the sidecar's sha256 when the engine used one."""
    from dat_deploy.hashing import sha256_file  # noqa: PLC0415

    recorded = (sidecar or {}).get("plugin_library")
    if plugin_lib is None and recorded:
        plugin_lib = Path(recorded["path"])
        if not plugin_lib.is_file():
            raise UserError(
                f"{engine_path} needs the DAT plugin library {plugin_lib}, which does not exist here. "
                "Pass the library it was built with (plugin_lib=... / --plugin-lib), or rebuild the engine."
            )
    if plugin_lib is None:
        return None
    plugin_lib = Path(plugin_lib)
    if not plugin_lib.is_file():
        raise UserError(f"plugin library {plugin_lib} does not exist; pass the library {engine_path} was built with.")
    if recorded and recorded.get("sha256"):
        actual = sha256_file(plugin_lib)
        if actual != recorded["sha256"]:
            raise UserError(
                f"plugin library {plugin_lib} (sha256 {actual[:12]}…) is not the one {engine_path} was built with "
                f"({recorded['path']}, sha256 {recorded['sha256'][:12]}…). Use that library or rebuild the engine."
            )
    return plugin_lib


class TensorRTBackend:
    """Runs a serialized TensorRT engine; `run(batch)` follows the Backend protocol."""

    thread_safe = False  # one execution context must not run two batches at once

    def __init__(self, engine_path: Path | str, plugin_lib: Path | str | None = None, use_cuda_graph: bool = False):
        from dat_deploy.trt.loader import import_tensorrt, load_plugin_library  # noqa: PLC0415

        engine_path = find_model_file(engine_path, ENGINE_SUFFIXES)  # an engine file, or its model folder's
        trt = import_tensorrt()
        import torch  # noqa: PLC0415

        if not torch.cuda.is_available():
            raise UserError("the TensorRT backend needs a visible CUDA GPU and a CUDA build of torch; none is available.")
        self._trt, self._torch = trt, torch
        self.engine_path = engine_path
        self.sidecar = read_sidecar(engine_path)  # {} when build-trt's record is missing
        _check_versions(trt, engine_path, self.sidecar)
        library = _plugin_library(engine_path, Path(plugin_lib) if plugin_lib else None, self.sidecar)
        if library is not None:
            load_plugin_library(trt, library)

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        engine = self._runtime.deserialize_cuda_engine(engine_path.read_bytes())
        if engine is None:
            hint = (
                " It may have been built by another TensorRT version or for another GPU, or it needs the DAT plugin "
                "library (pass plugin_lib / --plugin-lib)."
                if not self.sidecar
                else " Check the GPU it was built for (sidecar: "
                f"{self.sidecar.get('gpu')}, sm {self.sidecar.get('compute_capability')}) and the plugin library."
            )
            raise UserError(f"TensorRT could not deserialise {engine_path}.{hint}")
        self._engine = engine
        self._context = engine.create_execution_context()
        self._device = torch.device("cuda", torch.cuda.current_device())
        self._stream = torch.cuda.Stream(device=self._device)

        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        self.output_names = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT]
        if len(self.input_names) != 1:
            raise UserError(f"{engine_path} has inputs {self.input_names}; dat-deploy engines have exactly one.")
        self._input = self.input_names[0]
        self._dtypes = {n: _torch_dtype(trt, torch, engine.get_tensor_dtype(n)) for n in names}
        low, _, high = engine.get_tensor_profile_shape(self._input, 0)
        self.batch_range = (int(low[0]), int(high[0]))
        self.profile_shapes = [tuple(s) for s in engine.get_tensor_profile_shape(self._input, 0)]
        precision = (self.sidecar or {}).get("precision", "")
        self.name = f"trt-{precision}" if precision else "trt"
        self.use_cuda_graph = use_cuda_graph
        self._buffers: dict[tuple, dict[str, Any]] = {}
        self._graphs: dict[tuple, Any] = {}
        self.last_timings: Timings | None = None

    @property
    def context(self):
        """The engine's IExecutionContext, e.g. to attach a TensorRT IProfiler."""
        return self._context

    # -- buffers and execution ------------------------------------------------------------------

    def _check_batch(self, shape: tuple[int, ...]) -> None:
        low, high = self.batch_range
        if not low <= shape[0] <= high:
            raise UserError(
                f"batch {shape[0]} is outside {self.engine_path}'s optimisation profile (batch {low}..{high}). "
                f"Split the batch, or rebuild with --min-batch/--max-batch covering it."
            )
        expected = self.profile_shapes[0][1:]
        if tuple(shape[1:]) != tuple(expected):
            raise UserError(f"input of shape {tuple(shape)} does not fit the engine's input (N, {', '.join(map(str, expected))}).")

    def _bind(self, shape: tuple[int, ...]) -> dict[str, Any]:
        """Device buffers for one input shape, with every tensor address set on the context."""
        if shape in self._buffers:
            buffers = self._buffers[shape]
        else:
            torch = self._torch
            if not self._context.set_input_shape(self._input, shape):
                raise UserError(f"TensorRT refused input shape {shape} for {self.engine_path}.")
            buffers = {self._input: torch.empty(shape, dtype=self._dtypes[self._input], device=self._device)}
            for name in self.output_names:
                out_shape = tuple(self._context.get_tensor_shape(name))
                buffers[name] = torch.empty(out_shape, dtype=self._dtypes[name], device=self._device)
            self._buffers[shape] = buffers
        self._context.set_input_shape(self._input, shape)
        for name, tensor in buffers.items():
            self._context.set_tensor_address(name, tensor.data_ptr())
        return buffers

    def _host_buffers(self, shape: tuple[int, ...], buffers: dict[str, Any]):
        """Pinned host tensors for one input shape (input in the engine's input type, outputs likewise)."""
        key = ("host", shape)
        if key not in self._buffers:
            torch = self._torch
            host_in = torch.empty(shape, dtype=self._dtypes[self._input], pin_memory=True)
            host_out = {
                name: torch.empty(tuple(buffers[name].shape), dtype=self._dtypes[name], pin_memory=True)
                for name in self.output_names
            }
            self._buffers[key] = {"in": host_in, "out": host_out}
        entry = self._buffers[key]
        return entry["in"], entry["out"]

    def _enqueue(self, shape: tuple[int, ...]) -> None:
        stream = self._stream
        if not self.use_cuda_graph:
            if not self._context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError(f"TensorRT execution failed for {self.engine_path} at input shape {shape}")
            return
        graph = self._graphs.get(shape)
        if graph is None:
            torch = self._torch
            # One plain run first: TensorRT allocates per-shape resources on the first enqueue.
            self._context.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=stream):
                self._context.execute_async_v3(stream.cuda_stream)
            self._graphs[shape] = graph
        graph.replay()

    def run_timed(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], Timings]:
        torch = self._torch
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if batch.ndim != 4:
            raise UserError(f"expected an NCHW batch, got an array of shape {batch.shape}.")
        shape = tuple(int(d) for d in batch.shape)
        self._check_batch(shape)
        buffers = self._bind(shape)
        host_in, host_out = self._host_buffers(shape, buffers)
        host_in.copy_(torch.from_numpy(batch))  # pinned staging: H2D below is a pure DMA, as in trtexec
        events = [torch.cuda.Event(enable_timing=True) for _ in range(4)]
        stream = self._stream
        with torch.cuda.stream(stream):
            events[0].record(stream)
            buffers[self._input].copy_(host_in, non_blocking=True)
            events[1].record(stream)
            self._enqueue(shape)
            events[2].record(stream)
            for name in self.output_names:
                host_out[name].copy_(buffers[name], non_blocking=True)
            events[3].record(stream)
        stream.synchronize()
        outputs = host_out
        timings = Timings(
            h2d_ms=events[0].elapsed_time(events[1]),
            compute_ms=events[1].elapsed_time(events[2]),
            d2h_ms=events[2].elapsed_time(events[3]),
        )
        self.last_timings = timings
        return {name: tensor.float().numpy().copy() for name, tensor in outputs.items()}, timings

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs, _ = self.run_timed(batch)
        return outputs

    def timed_run(self, batch: np.ndarray) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """The profiler's hook (dat_deploy.profiling.runner): outputs and the trtexec-style split in ms."""
        outputs, timings = self.run_timed(batch)
        return outputs, {"h2d_ms": timings.h2d_ms, "compute_ms": timings.compute_ms, "d2h_ms": timings.d2h_ms}

    def run_device(self, batch) -> dict[str, Any]:
        """Inference on a CUDA tensor already on the device; returns device tensors (no copies timed)."""
        shape = tuple(int(d) for d in batch.shape)
        self._check_batch(shape)
        buffers = self._bind(shape)
        with self._torch.cuda.stream(self._stream):
            buffers[self._input].copy_(batch.to(self._dtypes[self._input]), non_blocking=True)
            self._enqueue(shape)
        self._stream.synchronize()
        return {name: buffers[name].clone() for name in self.output_names}

    def timings(self) -> Timings | None:
        """The H2D / GPU compute / D2H split of the last `run`, in ms."""
        return self.last_timings
