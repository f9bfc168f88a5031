"""--bisect: when the logits disagree, find the first stage map or sampling position that does.

The model is exported again with every stage output and every deformable block's positions as
extra graph outputs; both sides run the same inputs and the outputs are compared in execution order.
"""

from __future__ import annotations

import dataclasses

import tempfile
from pathlib import Path

from dat_deploy.export.onnx_export import BisectOutputs, TraceOptions, export_model, output_names
from dat_deploy.parity.compare import Tolerance, compare_output
from dat_deploy.parity.inputs import InputCase
from dat_deploy.runtime.onnxruntime_backend import OrtBackend
from dat_deploy.runtime.torch_backend import TorchBackend


def execution_order(model) -> list[str]:
    """Output names in the order the model computes them: each stage's positions, then its map."""
    order: list[str] = []
    block = 0
    for s, stage in enumerate(model.stages):
        for attn in stage.attns:
            if type(attn).__name__ == "DeformableAttention":
                order.append(f"positions{block}")
                block += 1
        order.append(f"stage{s + 1}")
    return order + ["logits"]


def bisect_model(model, variant: str, options: TraceOptions, case: InputCase, tol: Tolerance) -> dict:
    proto = export_model(model, variant, dataclasses.replace(options, bisect=True))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bisect.onnx"
        path.write_bytes(proto.SerializeToString())
        candidate = OrtBackend(path).run(case.batch)
    reference = TorchBackend(BisectOutputs(model), output_names=output_names(model, bisect=True)).run(case.batch)
    rows = []
    first = None
    for name in execution_order(model):
        comparison = compare_output(name, reference[name], candidate[name], tol, is_logits=(name == "logits"))
        rows.append({"output": name, "max_abs": comparison.max_abs, "cosine": comparison.cosine,
                     "passed": comparison.passed})
        if first is None and not comparison.passed:
            first = name
    summary = (f"first divergence at {first} (max abs {next(r['max_abs'] for r in rows if r['output'] == first):.3g})"
               if first else "every intermediate output matches; the difference is below the tolerance resolution")
    return {"input": case.name, "first_divergence": first, "outputs": rows, "summary": summary}
