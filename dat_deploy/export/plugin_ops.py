"""The plugin export flavour: DAT's sampling ops and attention cores as torch custom ops that export to
`dat` ONNX nodes.

* `dat::deform_sample(x, pos, groups)`, `dat::rel_pos_bias(table, pos, x, groups, convention)`,
  `dat::window_attention(qkv, bias, heads, window, shift, scale)` and
  `dat::deformable_attention(q, k, v, table, pos, heads, groups, convention, scale)` are torch custom ops;
  their eager implementation is the reference in dat_deploy.model.sampling / .windows / .deformable, their
  fake (meta) implementation gives the output shape, so torch.export traces through them.
* `custom_translation_table()` maps them to `dat::DATDeformSample` / `DATRelPosBias` / `DATWindowAttention` /
  `DATDeformAttention` nodes for the dynamo exporter (onnxscript), with `plugin_version="1"` and
  `plugin_namespace="dat"` so TensorRT's ONNX parser finds our IPluginV3 plugins by op_type;
  onnxruntime runs them with libdat_ort_ops.
* Importing this module registers the ops' ONNX schemas (with type and shape inference), so
  onnx.checker and onnx.shape_inference accept plugin graphs.
* `plugin_flavour()` routes a model's sampling calls (sampling.use_impl) and, in the channels-last
  forward, its window attention and deformable attention cores (fused_ops.use_fused) through the custom ops.

The written contract (shapes, conventions, edge behaviour) is plugins/README.md.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import onnx
import torch
from onnx import defs

from dat_deploy.graph.dat_graph import DAT_DOMAIN, DAT_DOMAIN_VERSION
from dat_deploy.model import deformable, fused_ops, sampling, windows

PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "dat"
DEFORM_SAMPLE = "DATDeformSample"
REL_POS_BIAS = "DATRelPosBias"
WINDOW_ATTENTION = "DATWindowAttention"
DEFORM_ATTENTION = "DATDeformAttention"
# `convention` attribute of DATRelPosBias.
CONVENTION_CODES = {sampling.CONVENTION_DAT: 0, sampling.CONVENTION_DAT_PP: 1}
CONVENTION_NAMES = {code: name for name, code in CONVENTION_CODES.items()}


# ---- torch custom ops -----------------------------------------------------------------------------------------------

@torch.library.custom_op("dat::deform_sample", mutates_args=())
def deform_sample_op(x: torch.Tensor, pos: torch.Tensor, groups: int) -> torch.Tensor:
    return sampling.deform_sample_reference(x, pos, groups).contiguous()


@deform_sample_op.register_fake
def _deform_sample_fake(x: torch.Tensor, pos: torch.Tensor, groups: int) -> torch.Tensor:
    return x.new_empty((x.shape[0], x.shape[1], pos.shape[1], pos.shape[2]))


@torch.library.custom_op("dat::rel_pos_bias", mutates_args=())
def rel_pos_bias_op(table: torch.Tensor, pos: torch.Tensor, x: torch.Tensor, groups: int, convention: int) -> torch.Tensor:
    return sampling.rel_pos_bias_reference(table, pos, x, groups, CONVENTION_NAMES[convention]).contiguous()


@rel_pos_bias_op.register_fake
def _rel_pos_bias_fake(table: torch.Tensor, pos: torch.Tensor, x: torch.Tensor, groups: int, convention: int) -> torch.Tensor:
    return table.new_empty((x.shape[0] * table.shape[0], x.shape[2] * x.shape[3], pos.shape[1] * pos.shape[2]))


@torch.library.custom_op("dat::window_attention", mutates_args=())
def window_attention_op(qkv: torch.Tensor, bias: torch.Tensor, heads: int, window: int, shift: int,
                        scale: float) -> torch.Tensor:
    return windows.window_attention_reference(qkv, bias, heads, window, shift, scale).contiguous()


@window_attention_op.register_fake
def _window_attention_fake(qkv: torch.Tensor, bias: torch.Tensor, heads: int, window: int, shift: int,
                           scale: float) -> torch.Tensor:
    return qkv.new_empty((qkv.shape[0], qkv.shape[1], qkv.shape[2], qkv.shape[3] // 3))


@torch.library.custom_op("dat::deformable_attention", mutates_args=())
def deformable_attention_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor, pos: torch.Tensor,
                            heads: int, groups: int, convention: int, scale: float) -> torch.Tensor:
    return deformable.deformable_attention_reference(
        q, k, v, table, pos, heads, groups, CONVENTION_NAMES[convention], scale).contiguous()


@deformable_attention_op.register_fake
def _deformable_attention_fake(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor,
                               pos: torch.Tensor, heads: int, groups: int, convention: int,
                               scale: float) -> torch.Tensor:
    return q.new_empty(q.shape)


def deform_sample(x: torch.Tensor, pos: torch.Tensor, groups: int) -> torch.Tensor:
    """sampling.deform_sample's signature, through the custom op."""
    return deform_sample_op(x, pos, groups)


def rel_pos_bias(table: torch.Tensor, pos: torch.Tensor, x: torch.Tensor, groups: int, convention: str) -> torch.Tensor:
    """sampling.rel_pos_bias's signature (convention "dat" / "dat_pp"), through the custom op."""
    if convention not in CONVENTION_CODES:
        raise ValueError(f"unknown query-grid convention {convention!r}; expected one of {sampling.CONVENTIONS}")
    return rel_pos_bias_op(table, pos, x, groups, CONVENTION_CODES[convention])


def window_attention(qkv: torch.Tensor, bias: torch.Tensor, heads: int, window: int, shift: int,
                     scale: float) -> torch.Tensor:
    """windows.window_attention_reference's signature, through the custom op."""
    return window_attention_op(qkv, bias, heads, window, shift, float(scale))


def deformable_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, table: torch.Tensor, pos: torch.Tensor,
                         heads: int, groups: int, convention: str, scale: float) -> torch.Tensor:
    """deformable.deformable_attention_reference's signature, through the custom op."""
    return deformable_attention_op(q, k, v, table, pos, heads, groups, CONVENTION_CODES[convention], float(scale))


@contextlib.contextmanager
def plugin_flavour() -> Iterator[None]:
    """Route every deformable block's two sampling calls, and in the channels-last forward the window
    attention and the deformable attention core, through the `dat` custom ops."""
    with sampling.use_impl(deform_sample, rel_pos_bias), fused_ops.use_fused(
            window_attention=window_attention, deformable_attention=deformable_attention):
        yield


# ---- ONNX schemas (checker + shape inference) -----------------------------------------------------------------------

_DATA_TYPES = ["tensor(float)", "tensor(float16)"]


def _dims(type_proto: onnx.TypeProto) -> list[onnx.TensorShapeProto.Dimension] | None:
    tensor = type_proto.tensor_type
    return list(tensor.shape.dim) if tensor.HasField("shape") else None


def _output_type(elem_type: int, dims: list[onnx.TensorShapeProto.Dimension | int | None] | None) -> onnx.TypeProto:
    out = onnx.TypeProto()
    out.tensor_type.elem_type = elem_type
    if dims is not None:
        shape = out.tensor_type.shape
        shape.SetInParent()
        for dim in dims:
            new = shape.dim.add()
            if isinstance(dim, int):
                new.dim_value = dim
            elif dim is not None:
                new.CopyFrom(dim)
    return out


def _product(*dims: onnx.TensorShapeProto.Dimension) -> int | None:
    value = 1
    for dim in dims:
        if not dim.HasField("dim_value"):
            return None  # symbolic: the product has no name of its own
        value *= dim.dim_value
    return value


def _infer_deform_sample(ctx) -> None:
    x_type = ctx.get_input_type(0)
    x, pos = _dims(x_type), _dims(ctx.get_input_type(1))
    dims = None
    if x is not None and pos is not None and len(x) == 4 and len(pos) == 4:
        dims = [x[0], x[1], pos[1], pos[2]]
    ctx.set_output_type(0, _output_type(x_type.tensor_type.elem_type, dims))


def _infer_rel_pos_bias(ctx) -> None:
    table_type = ctx.get_input_type(0)
    table, pos, x = _dims(table_type), _dims(ctx.get_input_type(1)), _dims(ctx.get_input_type(2))
    dims = None
    if table is not None and pos is not None and x is not None and len(table) == 3 and len(pos) == 4 and len(x) == 4:
        dims = [_product(x[0], table[0]), _product(x[2], x[3]), _product(pos[1], pos[2])]
    ctx.set_output_type(0, _output_type(table_type.tensor_type.elem_type, dims))


def _infer_window_attention(ctx) -> None:
    qkv_type = ctx.get_input_type(0)
    qkv = _dims(qkv_type)
    dims = None
    if qkv is not None and len(qkv) == 4:
        channels = qkv[3].dim_value // 3 if qkv[3].HasField("dim_value") else None
        dims = [qkv[0], qkv[1], qkv[2], channels]
    ctx.set_output_type(0, _output_type(qkv_type.tensor_type.elem_type, dims))


def _infer_deform_attention(ctx) -> None:
    q_type = ctx.get_input_type(0)
    ctx.set_output_type(0, _output_type(q_type.tensor_type.elem_type, _dims(q_type)))


def _version_attributes() -> list[defs.OpSchema.Attribute]:
    return [
        defs.OpSchema.Attribute("plugin_version", onnx.helper.make_attribute("plugin_version", PLUGIN_VERSION),
                                "TensorRT plugin version"),
        defs.OpSchema.Attribute("plugin_namespace", onnx.helper.make_attribute("plugin_namespace", PLUGIN_NAMESPACE),
                                "TensorRT plugin namespace"),
    ]


def _plugin_attributes() -> list[defs.OpSchema.Attribute]:
    return [
        defs.OpSchema.Attribute("groups", defs.OpSchema.AttrType.INT, "offset groups g", required=True),
        *_version_attributes(),
    ]


def _schemas() -> list[defs.OpSchema]:
    param = defs.OpSchema.FormalParameter
    deform = defs.OpSchema(
        DEFORM_SAMPLE, DAT_DOMAIN, DAT_DOMAIN_VERSION,
        "Bilinear sampling of x at pos ((y, x) in [-1, 1], align_corners=True, zero padding); see plugins/README.md.",
        inputs=[param("x", "T", "(B, C, H, W)"), param("pos", "P", "(B*groups, Hk, Wk, 2), (y, x) order")],
        outputs=[param("y", "T", "(B, C, Hk, Wk)")],
        type_constraints=[("T", _DATA_TYPES, "data"), ("P", _DATA_TYPES, "coordinates")],
        attributes=_plugin_attributes(),
    )
    deform.set_type_and_shape_inference_function(_infer_deform_sample)
    bias = defs.OpSchema(
        REL_POS_BIAS, DAT_DOMAIN, DAT_DOMAIN_VERSION,
        "Relative-position bias: table sampled at (q_grid - pos) * 0.5 for every query of x's (H, W); "
        "see plugins/README.md.",
        inputs=[
            param("table", "T", "(heads, Th, Tw)"),
            param("pos", "P", "(B*groups, Hk, Wk, 2), (y, x) order"),
            param("x", "X", "(B, C, H, W); only its shape is read"),
        ],
        outputs=[param("bias", "T", "(B*heads, H*W, Hk*Wk)")],
        type_constraints=[("T", _DATA_TYPES, "data"), ("P", _DATA_TYPES, "coordinates"), ("X", _DATA_TYPES, "shape source")],
        attributes=[
            *_plugin_attributes(),
            defs.OpSchema.Attribute("convention", defs.OpSchema.AttrType.INT,
                                    "query grid: 0 = DAT pixel centres, 1 = DAT++ align corners", required=True),
        ],
    )
    bias.set_type_and_shape_inference_function(_infer_rel_pos_bias)
    attribute = defs.OpSchema.Attribute
    window = defs.OpSchema(
        WINDOW_ATTENTION, DAT_DOMAIN, DAT_DOMAIN_VERSION,
        "Swin window attention (shift, partition, q.k*scale + bias, softmax, P v, reverse) on channels-last "
        "tokens; see plugins/README.md.",
        inputs=[param("qkv", "T", "(B, H, W, 3C)"), param("bias", "B", "(Nb, heads, T, T), Nb = 1 or windows per image")],
        outputs=[param("y", "T", "(B, H, W, C)")],
        type_constraints=[("T", _DATA_TYPES, "data"), ("B", _DATA_TYPES, "bias")],
        attributes=[
            attribute("heads", defs.OpSchema.AttrType.INT, "attention heads, divide C", required=True),
            attribute("window", defs.OpSchema.AttrType.INT, "window side, divides H and W", required=True),
            attribute("shift", defs.OpSchema.AttrType.INT, "cyclic shift, 0 <= shift < window", required=True),
            attribute("scale", defs.OpSchema.AttrType.FLOAT, "multiplies q . k", required=True),
            *_version_attributes(),
        ],
    )
    window.set_type_and_shape_inference_function(_infer_window_attention)
    core = defs.OpSchema(
        DEFORM_ATTENTION, DAT_DOMAIN, DAT_DOMAIN_VERSION,
        "Deformable attention core: q.k*scale + the DATRelPosBias bias (sampled on the fly), softmax, P v; "
        "see plugins/README.md.",
        inputs=[
            param("q", "T", "(B, H, W, C)"), param("k", "T", "(B, Hk*Wk, C)"), param("v", "T", "(B, Hk*Wk, C)"),
            param("table", "B", "(heads, Th, Tw)"), param("pos", "P", "(B*groups, Hk, Wk, 2), (y, x) order"),
        ],
        outputs=[param("y", "T", "(B, H, W, C)")],
        type_constraints=[("T", _DATA_TYPES, "data"), ("B", _DATA_TYPES, "bias table"), ("P", _DATA_TYPES, "coordinates")],
        attributes=[
            attribute("heads", defs.OpSchema.AttrType.INT, "attention heads, divide C", required=True),
            *_plugin_attributes(),
            attribute("convention", defs.OpSchema.AttrType.INT,
                      "query grid: 0 = DAT pixel centres, 1 = DAT++ align corners", required=True),
            attribute("scale", defs.OpSchema.AttrType.FLOAT, "multiplies q . k", required=True),
        ],
    )
    core.set_type_and_shape_inference_function(_infer_deform_attention)
    return [deform, bias, window, core]


def register_onnx_schemas() -> None:
    """Register the `dat` schemas with onnx (idempotent)."""
    for schema in _schemas():
        if not defs.has(schema.name, schema.domain):
            defs.register_schema(schema)


register_onnx_schemas()


# ---- ONNX translation (dynamo exporter) -----------------------------------------------------------------------------

def custom_translation_table() -> dict:
    """{torch op overload: onnxscript function} for torch.onnx.export(..., dynamo=True, custom_translation_table=...)."""
    import onnxscript

    dat_opset = onnxscript.values.Opset(DAT_DOMAIN, DAT_DOMAIN_VERSION)

    def deform_sample_onnx(x, pos, groups: int):
        return dat_opset.DATDeformSample(
            x, pos, groups=groups, plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE
        )

    def rel_pos_bias_onnx(table, pos, x, groups: int, convention: int):
        return dat_opset.DATRelPosBias(
            table, pos, x, groups=groups, convention=convention,
            plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE,
        )

    def window_attention_onnx(qkv, bias, heads: int, window: int, shift: int, scale: float):
        return dat_opset.DATWindowAttention(
            qkv, bias, heads=heads, window=window, shift=shift, scale=scale,
            plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE,
        )

    def deformable_attention_onnx(q, k, v, table, pos, heads: int, groups: int, convention: int, scale: float):
        return dat_opset.DATDeformAttention(
            q, k, v, table, pos, heads=heads, groups=groups, convention=convention, scale=scale,
            plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE,
        )

    return {
        torch.ops.dat.deformable_attention.default: deformable_attention_onnx,
        torch.ops.dat.deform_sample.default: deform_sample_onnx,
        torch.ops.dat.rel_pos_bias.default: rel_pos_bias_onnx,
        torch.ops.dat.window_attention.default: window_attention_onnx,
    }


def opset_imports() -> dict[str, int]:
    return {DAT_DOMAIN: DAT_DOMAIN_VERSION}
