"""PyTorch -> ONNX: trace with torch's dynamo exporter, simplify with onnxslim, check, stamp metadata.

Facts that shape this module (measured with torch 2.13 and onnxruntime 1.32):
* the example batch is >= 2, otherwise torch.export silently freezes the batch dimension;
* the standard flavour defaults to opset 18: TensorRT's parser maps opset-20 GridSample
  `linear` to nearest, and the dynamo exporter has no implementations below 18 (17 is
  down-converted by onnx);
* the plugin flavour routes both sampling ops through torch custom ops that become `dat` nodes, and
  in the fast layout the attention cores too (DATWindowAttention, DATDeformAttention);
* the `fast` layout (default) traces `ChannelsLastDAT`, the same weights run channels-last with
  tiled neighborhood attention; `official` traces the official module forward op for op.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import re
import warnings
from dataclasses import dataclass
from typing import Callable, Iterator

import onnx
import torch
from torch import nn

import dat_deploy
from dat_deploy.errors import UserError
from dat_deploy.export.graph_checks import check_and_infer, require_symbolic_batch
from dat_deploy.graph.dat_graph import onnx_opset
from dat_deploy.model import get_variant
from dat_deploy.model.channels_last import ChannelsLastDAT
from dat_deploy.model.dat import capture_stage_outputs
from dat_deploy.runtime.names import FEATURE_NAMES, INPUT_NAME, LOGITS_NAME

DEFAULT_OPSET = 18
# torch's dynamo exporter writes opset 18 natively and converts to others with onnx's version
# converter: 17 (LayerNormalization's first opset) up to the newest the installed onnx knows. Below
# 17 and above that, it silently writes 18 instead, so those are refused.
MIN_OPSET = 17
EXAMPLE_BATCH = 2
MAX_DYNAMIC_BATCH = 1024
MIN_DYNAMIC_SIDE = 64  # DAT++ divides by (H - 1) of the smallest maps: below 64 px they degenerate
FLAVORS = ("standard", "plugin")
LAYOUTS = ("fast", "official")


@dataclass(frozen=True)
class TraceOptions:
    opset: int = DEFAULT_OPSET
    batch: int | None = None  # None: dynamic batch
    flavor: str = "standard"
    dynamic_hw: bool = False
    bisect: bool = False  # also output stage maps and deformable positions
    layout: str = "fast"


class BisectOutputs(nn.Module):
    """Logits plus every stage map and every deformable block's sampling positions, for --bisect."""

    def __init__(self, model: nn.Module, fast_layout: ChannelsLastDAT | None = None):
        super().__init__()
        self.model = model
        self.fast_layout = fast_layout

    def forward(self, x: torch.Tensor):
        if self.fast_layout is not None:
            stages: list[torch.Tensor] = []
            logits, positions, _ = self.fast_layout(x, return_positions=True, stage_maps=stages)
        else:
            with capture_stage_outputs(self.model) as stages:
                logits, positions, _ = self.model(x, return_positions=True)
        return (logits, *stages, *positions)


def output_names(model: nn.Module, bisect: bool) -> list[str]:
    if getattr(model, "features_only", False):
        return list(FEATURE_NAMES)
    names = [LOGITS_NAME]
    if bisect:
        deformable = sum(type(a).__name__ == "DeformableAttention" for s in model.stages for a in s.attns)
        names += FEATURE_NAMES + [f"positions{i}" for i in range(deformable)]
    return names


def max_opset() -> int:
    return onnx.defs.onnx_opset_version()


def check_opset(opset: int) -> int:
    if not MIN_OPSET <= opset <= max_opset():
        raise UserError(f"--opset {opset} cannot be exported: torch's exporter writes opsets {MIN_OPSET} to "
                        f"{max_opset()} (with the installed onnx). The default is {DEFAULT_OPSET}.")
    return opset


def _dynamic_shapes(options: TraceOptions) -> dict | None:
    dims: dict[int, torch.export.Dim] = {}
    if options.batch is None:
        dims[0] = torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)
    if options.dynamic_hw:
        dims[2] = torch.export.Dim("height", min=MIN_DYNAMIC_SIDE, max=4096)
        dims[3] = torch.export.Dim("width", min=MIN_DYNAMIC_SIDE, max=4096)
    return {"x": dims} if dims else None


class _ExporterSteps(io.TextIOBase):
    """Stands in for stdout during the export: the exporter's "[torch.onnx] <step>..." lines become
    `on_step` calls (progress through the half-minute trace); everything else it prints is dropped."""

    def __init__(self, on_step: Callable[[str], None] | None):
        self.on_step = on_step
        self.pending = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self.pending += text
        *lines, self.pending = self.pending.split("\n")
        for line in lines:
            if self.on_step and line.startswith("[torch.onnx] ") and not line.rstrip().endswith("\u2705"):
                step = re.sub(r" (for|with) `[^`]*`", "", line[len("[torch.onnx] "):]).rstrip(". ")
                self.on_step(f"torch.onnx: {step[:1].lower()}{step[1:]}")
        return len(text)


@contextlib.contextmanager
def _quiet_exporter(on_step: Callable[[str], None] | None = None) -> Iterator[None]:
    """The exporter prints progress and deprecation chatter that would drown our own output."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(_ExporterSteps(on_step)):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _plugin_context(flavor: str):
    if flavor == "standard":
        return contextlib.nullcontext(), None
    from dat_deploy.export import plugin_ops

    return plugin_ops.plugin_flavour(), plugin_ops.custom_translation_table()


def trace_to_onnx(model: nn.Module, input_size: tuple[int, int], options: TraceOptions,
                  on_step: Callable[[str], None] | None = None) -> onnx.ModelProto:
    """Export `model` and return the raw (unsimplified) ONNX model."""
    if options.flavor not in FLAVORS:
        raise UserError(f"unknown flavour {options.flavor!r}; choose one of {', '.join(FLAVORS)}.")
    if options.layout not in LAYOUTS:
        raise UserError(f"unknown layout {options.layout!r}; choose one of {', '.join(LAYOUTS)}.")
    fast = ChannelsLastDAT(model, static_size=not options.dynamic_hw) if options.layout == "fast" else None
    if options.bisect:
        module = BisectOutputs(model, fast)
    else:
        module = fast or model
    batch = options.batch or EXAMPLE_BATCH
    example = torch.randn(batch, 3, *input_size, generator=torch.Generator().manual_seed(0))
    sampling_context, translation = _plugin_context(options.flavor)
    with _quiet_exporter(on_step), sampling_context, torch.no_grad():
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=options.opset,
            input_names=[INPUT_NAME],
            output_names=output_names(model, options.bisect),
            dynamic_shapes=_dynamic_shapes(options),
            custom_translation_table=translation,
            external_data=False,
            optimize=True,
            verify=False,
        )
    written = onnx_opset(program.model_proto)
    if written != options.opset:  # the exporter falls back to its own opset without an error
        raise UserError(f"torch's exporter wrote opset {written} instead of the requested {options.opset}; "
                        f"export with --opset {DEFAULT_OPSET}.")
    return program.model_proto


# onnxslim passes we leave out: FusionGemmAdd folds an Add of a constant after a Gemm back into the
# Gemm's bias, undoing token_linear.linear_bias_apart (whose bias belongs in the activation).
SKIPPED_SLIM_PATTERNS = ["FusionGemmAdd"]


def simplify(model: onnx.ModelProto) -> onnx.ModelProto:
    import onnxslim

    with _quiet_exporter():
        slimmed = onnxslim.slim(model, skip_fusion_patterns=SKIPPED_SLIM_PATTERNS)
    return slimmed if slimmed is not None else model


def stamp_metadata(model: onnx.ModelProto, entries: dict[str, object]) -> None:
    """Replace metadata_props with `entries` (non-strings as JSON), in a fixed order for byte-stable files."""
    del model.metadata_props[:]
    for key in sorted(entries):
        value = entries[key]
        prop = model.metadata_props.add()
        prop.key = key
        prop.value = value if isinstance(value, str) else json.dumps(value)
    model.producer_name = "dat-deploy"
    model.producer_version = dat_deploy.__version__
    model.doc_string = ""


def check_trace_options(variant: str, options: TraceOptions) -> None:
    """Everything about the options that can be refused or warned about before minutes of tracing."""
    spec = get_variant(variant)
    if options.flavor not in FLAVORS:
        raise UserError(f"unknown flavour {options.flavor!r}; choose one of {', '.join(FLAVORS)}.")
    if options.layout not in LAYOUTS:
        raise UserError(f"unknown layout {options.layout!r}; choose one of {', '.join(LAYOUTS)}.")
    check_opset(options.opset)
    if options.dynamic_hw and spec.family != "dat_pp":
        raise UserError(f"--dynamic-hw needs a DAT++ variant: {variant} (DAT) only runs at {spec.input_size}x{spec.input_size}.")
    if options.flavor == "standard" and options.opset >= 20:
        warnings.warn(f"opset {options.opset}: TensorRT's ONNX parser maps GridSample 'linear' to nearest; "
                      "use opset 19 or lower for TensorRT.", stacklevel=2)


def export_model(model: nn.Module, variant: str, options: TraceOptions, input_size: tuple[int, int] | None = None,
                 provenance: dict | None = None, on_step: Callable[[str], None] | None = None) -> onnx.ModelProto:
    """Trace, simplify, check and stamp. The graph is not yet validated numerically."""
    spec = get_variant(variant)
    if options.dynamic_hw and spec.family != "dat_pp":
        raise UserError(f"--dynamic-hw needs a DAT++ variant: {variant} (DAT) only runs at {spec.input_size}x{spec.input_size}.")
    size = input_size or (spec.input_size, spec.input_size)
    raw = trace_to_onnx(model, size, options, on_step)
    slim = simplify(raw)
    checked = check_and_infer(slim)
    if options.batch is None:
        require_symbolic_batch(checked)
    metadata = {
        "variant": variant,
        "family": spec.family,
        "input_size": spec.input_size,
        "resize_size": spec.resize_size,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "num_classes": spec.num_classes,
        "opset": options.opset,
        "flavor": options.flavor,
        "layout": options.layout,
        "outputs": "features" if getattr(model, "features_only", False) else "logits",
        "dynamic_batch": options.batch is None,
        **({"batch": options.batch} if options.batch else {}),  # validate runs a fixed-batch graph at that batch
        "dynamic_hw": options.dynamic_hw,
        "dat_deploy_version": dat_deploy.__version__,
        **(provenance or getattr(model, "provenance", {})),
    }
    metadata.pop("weights", None)  # a local path would make files differ between machines
    stamp_metadata(checked, metadata)
    return checked
