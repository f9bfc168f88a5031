"""onnxruntime as a backend: CPU, CUDA and TensorRT execution providers, and our custom-op library.

A graph that holds nodes of the `dat` domain (the plugin flavour) needs our custom-op library;
it is built on first use and registered on the session automatically. On the CPU provider such a graph
also gets the library's CPU-only ops in place of slower onnxruntime subgraphs (dat_deploy.graph.cpu_fusions;
the file on disk is not changed). An int8 graph on a CPU whose U8S8 kernel can saturate (AVX2 / AVX-512
without VNNI) gets onnxruntime's exact U8U8 kernel instead (dat_deploy.quantize.cpu_int8).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dat_deploy.artifacts import load_onnx, onnx_metadata
from dat_deploy.errors import UserError
from dat_deploy.graph.dat_graph import has_dat_nodes
from dat_deploy.runtime.names import INPUT_NAME

_PROVIDER_ALIASES = {
    "cpu": "CPUExecutionProvider",
    "cuda": "CUDAExecutionProvider",
    "tensorrt": "TensorrtExecutionProvider",
}


def resolve_providers(names: list[str] | None) -> list[str]:
    import onnxruntime as ort

    wanted = [_PROVIDER_ALIASES.get(n, n) for n in (names or ["cpu"])]
    available = ort.get_available_providers()
    missing = [p for p in wanted if p not in available]
    if missing:
        raise UserError(
            f"onnxruntime provider(s) {', '.join(missing)} not available here (available: {', '.join(available)}). "
            f"Install onnxruntime-gpu (pip install 'dat-deploy[gpu]', never together with onnxruntime) for CUDA/TensorRT."
        )
    return wanted


def prepare_session(model, path: str | Path, options, libraries: list, fuse: bool = True):
    """The session setup every onnxruntime session of ours gets (OrtBackend, op profiling, the Triton-served model).

    Registers the op libraries through their CPU-layer check (a refused DAT_DEPLOY_CPU_LAYER: one clear line), sets
    onnxruntime's exact int8 kernel where this CPU's U8S8 kernel can saturate, and, with `fuse` and a library,
    applies the CPU rewrites decided for this CPU at load time (the file on disk is not changed).
    Returns (the graph's bytes or its path, the fusion counts, whether the exact int8 kernel was asked for).
    """
    from dat_deploy.native.cpu_layer import register_ort_ops
    from dat_deploy.quantize.cpu_int8 import set_int8_precision

    layer = None
    for library in libraries:
        layer = register_ort_ops(options, library) or layer
    precision = set_int8_precision(model, options)
    if libraries and fuse:
        from dat_deploy.graph.cpu_fusions import fused_session_model

        fused, fusions = fused_session_model(model, layer=layer)
        return fused or str(path), fusions, precision
    return str(path), {}, precision


class OrtBackend:
    thread_safe = True  # InferenceSession.run may be called from several threads at once

    def __init__(self, onnx_path: str | Path, providers: list[str] | None = None, intra_op_threads: int | None = None,
                 plugin_library: str | Path | None = None, enable_profiling: bool = False, cpu_fusions: bool = True):
        import onnxruntime as ort

        self.path = Path(onnx_path)
        model = load_onnx(self.path)
        self.metadata = onnx_metadata(model)
        options = ort.SessionOptions()
        if intra_op_threads:
            options.intra_op_num_threads = intra_op_threads
        if enable_profiling:
            options.enable_profiling = True
        self.plugin_library = None
        if has_dat_nodes(model):
            if plugin_library is None:
                from dat_deploy.native import ort_library_path

                plugin_library = ort_library_path(build=True)
            self.plugin_library = Path(plugin_library)
            if not self.plugin_library.is_file():
                raise UserError(f"custom-op library {self.plugin_library} does not exist. Run `dat-deploy build-plugins`.")
        self.providers = resolve_providers(providers)
        fuse = cpu_fusions and self.providers[0] == "CPUExecutionProvider"
        libraries = [self.plugin_library] if self.plugin_library else []
        source, self.fusions, self.int8_precision_option = prepare_session(model, self.path, options, libraries, fuse)
        try:
            self.session = ort.InferenceSession(source, options, providers=self.providers)
        except Exception as exc:
            raise UserError(f"onnxruntime cannot load {self.path}: {str(exc).splitlines()[0]}") from exc
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]
        short = self.providers[0].replace("ExecutionProvider", "").lower()
        self.name = f"ort{'-plugin' if self.plugin_library else ''}-{short}"

    def run(self, batch: np.ndarray) -> dict[str, np.ndarray]:
        outputs = self.session.run(None, {self.input_name: np.ascontiguousarray(batch, dtype=np.float32)})
        return dict(zip(self.output_names, outputs))

    def end_profiling(self) -> str:
        return self.session.end_profiling()


__all__ = ["OrtBackend", "INPUT_NAME", "prepare_session", "resolve_providers"]
