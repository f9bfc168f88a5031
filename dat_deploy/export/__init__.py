"""Export a DAT checkpoint to ONNX, prove it against PyTorch, and write it into the model repository.

    result = export_onnx("dat_t", output_dir="models")      # models/dat_t/1/model.onnx + config.pbtxt
"""

from __future__ import annotations

import json
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import onnx

from dat_deploy.artifacts import SIDECAR_NAME, onnx_metadata
from dat_deploy.atomic import check_creatable_dir, check_folder_name
from dat_deploy.errors import UserError
from dat_deploy.export.onnx_export import DEFAULT_OPSET, TraceOptions, check_trace_options, export_model
from dat_deploy.export.repository import write_model_folder
from dat_deploy.model import create_model, get_variant
from dat_deploy.parity.compare import TOLERANCES
from dat_deploy.parity.inputs import random_case
from dat_deploy.parity.report import ParityReport, run_parity
from dat_deploy.runtime.names import INPUT_NAME
from dat_deploy.runtime.onnxruntime_backend import OrtBackend
from dat_deploy.runtime.torch_backend import TorchBackend
from dat_deploy.triton.config import CONFIG_NAME, config_text, model_config, tensor_config

DEFAULT_MAX_BATCH = 32


@dataclass
class ExportResult:
    folder: Path
    onnx_path: Path
    name: str
    parity: ParityReport
    seconds: float
    metadata: dict


def default_name(variant: str, flavor: str, features: bool, dynamic_hw: bool, layout: str = "fast") -> str:
    parts = [variant]
    if flavor != "standard":
        parts.append(flavor)
    if layout != "fast":
        parts.append(layout)
    if features:
        parts.append("features")
    if dynamic_hw:
        parts.append("dynhw")
    return "_".join(parts)


def _triton_config(name: str, model_proto: onnx.ModelProto, batch: int | None, op_library: str | None):
    def dims(value_info) -> list[int]:
        shape = [d.dim_value if d.dim_value else -1 for d in value_info.type.tensor_type.shape.dim]
        return shape[1:] if batch is None else shape

    inputs = [tensor_config(i.name, dims(i)) for i in model_proto.graph.input]
    outputs = [tensor_config(o.name, dims(o)) for o in model_proto.graph.output]
    return model_config(
        name, "onnxruntime_onnx", inputs, outputs,
        max_batch_size=DEFAULT_MAX_BATCH if batch is None else 0,
        op_library=op_library, preferred_batch_sizes=[8, 16, 32],
    )


def verify_against_torch(model, onnx_bytes: bytes, batches: list[int], hw_sizes: list[tuple[int, int]],
                         tolerance_name: str = "fp32") -> ParityReport:
    """Run the fresh graph in onnxruntime CPU against PyTorch on seeded random inputs."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "candidate.onnx"
        path.write_bytes(onnx_bytes)
        candidate = OrtBackend(path)
        cases = [random_case(b, h, w, seed=17) for b in batches for (h, w) in hw_sizes]
        return run_parity(TorchBackend(model), [candidate], cases, TOLERANCES[tolerance_name])


def export_onnx(
    variant: str,
    output_dir: str | Path = "models",
    name: str | None = None,
    weights: str | Path | None = None,
    seed: int = 0,
    opset: int = DEFAULT_OPSET,
    batch: int | None = None,
    flavor: str = "standard",
    features: bool = False,
    dynamic_hw: bool = False,
    layout: str = "fast",
    overwrite: bool = False,
    check: bool = True,
    on_step: Callable[[str], None] = lambda _msg: None,
) -> ExportResult:
    """Export, verify against PyTorch, then write models/<name>/ atomically. Raises UserError on failure."""
    start = time.perf_counter()
    spec = get_variant(variant)
    options = TraceOptions(opset=opset, batch=batch, flavor=flavor, dynamic_hw=dynamic_hw, layout=layout)
    check_trace_options(variant, options)
    name = check_folder_name(name if name is not None else default_name(variant, flavor, features, dynamic_hw, layout))
    final_folder = Path(output_dir) / name
    if final_folder.exists() and not overwrite:  # write_model_folder checks too; this fails before minutes of tracing
        raise UserError(f"{final_folder} already exists. Pass --overwrite to replace it, or choose another --name.")
    check_creatable_dir(Path(output_dir))  # likewise: a bad --output fails before the tracing
    on_step("building the PyTorch model")
    model = create_model(variant, weights=weights, seed=seed, features_only=features)
    on_step(f"tracing with torch.onnx (dynamo, opset {opset}, {flavor} flavour, {layout} layout; about half a minute)")
    proto = export_model(model, variant, options, on_step=on_step)
    data = proto.SerializeToString()

    on_step("checking the graph against PyTorch in onnxruntime")
    batches = [batch] if batch else [1, 3]
    size = spec.input_size
    hw_sizes = [(size, size)] + ([(256, 320)] if dynamic_hw else [])
    parity = verify_against_torch(model, data, batches, hw_sizes)
    if check and not parity.passed:
        worst = max((o.max_abs for r in parity.results for o in r.outputs), default=float("nan"))
        raise UserError(f"the exported graph of {variant} does not match PyTorch (max abs {worst:.3g}); nothing was written. "
                        f"Export with --no-check and run `dat-deploy validate --bisect` on it to find where it diverges.")

    metadata = onnx_metadata(proto)
    op_library = None
    if flavor == "plugin":
        op_library = "libdat_ort_ops.so"  # resolved by Triton relative to its LD_LIBRARY_PATH; see `dat-deploy triton`
    config = _triton_config(name, proto, batch, op_library)
    sidecar = {
        "name": name,
        "variant": variant,
        "format": "onnx",
        "input": INPUT_NAME,
        "outputs": [o.name for o in proto.graph.output],
        "metadata": metadata,
        "export_seconds": round(time.perf_counter() - start, 2),  # in the sidecar only: the ONNX stays byte-identical
        "parity": parity.to_dict(),
    }
    on_step(f"writing {final_folder}")
    folder = write_model_folder(Path(output_dir), name, {
        "1/model.onnx": data,
        CONFIG_NAME: config_text(config).encode(),
        SIDECAR_NAME: json.dumps(sidecar, indent=2, default=float).encode(),
    }, overwrite=overwrite)
    return ExportResult(folder, folder / "1" / "model.onnx", name, parity, sidecar["export_seconds"], metadata)


__all__ = ["ExportResult", "export_onnx", "verify_against_torch", "DEFAULT_OPSET"]
