"""The plugin export flavour: both sampling ops as torch custom ops that export to `dat` ONNX nodes.

* `dat::deform_sample(x, pos, groups)` and `dat::rel_pos_bias(table, pos, x, groups, convention)` are
  torch custom ops; their eager implementation is the reference in dat_deploy.model.sampling, their
  fake (meta) implementation gives the output shape, so torch.export traces through them.
* `custom_translation_table()` maps them to `dat::DATDeformSample` / `dat::DATRelPosBias` nodes for the
  dynamo exporter (onnxscript), with `plugin_version="1"` and `plugin_namespace="dat"` so TensorRT's
  ONNX parser finds our IPluginV3 plugins by op_type; onnxruntime runs them with libdat_ort_ops.
* Importing this module registers the ops' ONNX schemas (with type and shape inference), so
  onnx.checker and onnx.shape_inference accept plugin graphs.
* `plugin_sampling()` routes a model's sampling calls through the custom ops (sampling.use_impl).

The written contract (shapes, conventions, edge behaviour) is plugins/README.md.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import onnx
import torch
from onnx import defs

from dat_deploy.model import sampling

DOMAIN = "dat"
DOMAIN_VERSION = 1
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "dat"
DEFORM_SAMPLE = "DATDeformSample"
REL_POS_BIAS = "DATRelPosBias"
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


def deform_sample(x: torch.Tensor, pos: torch.Tensor, groups: int) -> torch.Tensor:
    """sampling.deform_sample's signature, through the custom op."""
    return deform_sample_op(x, pos, groups)


def rel_pos_bias(table: torch.Tensor, pos: torch.Tensor, x: torch.Tensor, groups: int, convention: str) -> torch.Tensor:
    """sampling.rel_pos_bias's signature (convention "dat" / "dat_pp"), through the custom op."""
    if convention not in CONVENTION_CODES:
        raise ValueError(f"unknown query-grid convention {convention!r}; expected one of {sampling.CONVENTIONS}")
    return rel_pos_bias_op(table, pos, x, groups, CONVENTION_CODES[convention])


@contextlib.contextmanager
def plugin_sampling() -> Iterator[None]:
    """Route every deformable block's two sampling calls through the `dat` custom ops."""
    with sampling.use_impl(deform_sample, rel_pos_bias):
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


def _plugin_attributes() -> list[defs.OpSchema.Attribute]:
    return [
        defs.OpSchema.Attribute("groups", defs.OpSchema.AttrType.INT, "offset groups g", required=True),
        defs.OpSchema.Attribute("plugin_version", onnx.helper.make_attribute("plugin_version", PLUGIN_VERSION),
                                "TensorRT plugin version"),
        defs.OpSchema.Attribute("plugin_namespace", onnx.helper.make_attribute("plugin_namespace", PLUGIN_NAMESPACE),
                                "TensorRT plugin namespace"),
    ]


def _schemas() -> list[defs.OpSchema]:
    param = defs.OpSchema.FormalParameter
    deform = defs.OpSchema(
        DEFORM_SAMPLE, DOMAIN, DOMAIN_VERSION,
        "Bilinear sampling of x at pos ((y, x) in [-1, 1], align_corners=True, zero padding); see plugins/README.md.",
        inputs=[param("x", "T", "(B, C, H, W)"), param("pos", "P", "(B*groups, Hk, Wk, 2), (y, x) order")],
        outputs=[param("y", "T", "(B, C, Hk, Wk)")],
        type_constraints=[("T", _DATA_TYPES, "data"), ("P", _DATA_TYPES, "coordinates")],
        attributes=_plugin_attributes(),
    )
    deform.set_type_and_shape_inference_function(_infer_deform_sample)
    bias = defs.OpSchema(
        REL_POS_BIAS, DOMAIN, DOMAIN_VERSION,
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
    return [deform, bias]


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

    dat_opset = onnxscript.values.Opset(DOMAIN, DOMAIN_VERSION)

    def deform_sample_onnx(x, pos, groups: int):
        return dat_opset.DATDeformSample(
            x, pos, groups=groups, plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE
        )

    def rel_pos_bias_onnx(table, pos, x, groups: int, convention: int):
        return dat_opset.DATRelPosBias(
            table, pos, x, groups=groups, convention=convention,
            plugin_version=PLUGIN_VERSION, plugin_namespace=PLUGIN_NAMESPACE,
        )

    return {
        torch.ops.dat.deform_sample.default: deform_sample_onnx,
        torch.ops.dat.rel_pos_bias.default: rel_pos_bias_onnx,
    }


def opset_imports() -> dict[str, int]:
    return {DOMAIN: DOMAIN_VERSION}
