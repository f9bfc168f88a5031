"""fp32 ONNX graph -> fp16 graph with fp32 islands, for strongly typed TensorRT builds and onnxruntime.

TensorRT 11 has no `BuilderFlag.FP16`: a strongly typed network computes in the types the graph
spells out. This module writes those types into the graph:

* most nodes compute in fp16 and most initializers are stored in fp16;
* fp32 islands: LayerNormalization and Softmax (fp16 overflow in their reductions is the classic
  transformer failure), the sampling coordinates (everything between the offset network's last
  conv and a GridSample `grid` / a `dat` op's `pos` input, including the reference and query grid
  constants: fp16 has ~1e-3 resolution on [-1, 1], a tenth of a pixel on a 100-pixel map),
  the standard GridSample node itself (TensorRT wants its input and grid in one type), and the
  classifier head that produces the logits;
* graph inputs and outputs stay fp32, so callers never see the change;
* Casts sit only where a tensor crosses an island boundary, one per tensor and direction, and
  there are no back-and-forth Cast pairs.

Type information comes from onnx's shape inference; outputs of the custom `dat` ops (which it does
not know) take the type of the op's data input.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from dat_deploy.errors import UserError
from dat_deploy.graph.dat_graph import GraphIndex, is_dat_node, is_onnx_node

FLOAT = TensorProto.FLOAT
FLOAT16 = TensorProto.FLOAT16
FP16_MAX = float(np.finfo(np.float16).max)

# Input slots of the `dat` custom ops that carry sampling coordinates (always fp32).
DAT_POSITION_INPUTS = {"DATDeformSample": (1,), "DATRelPosBias": (1,), "DATDeformAttention": (4,)}

# Ops that stay fp32 wherever they appear.
DEFAULT_FP32_OP_TYPES = ("LayerNormalization", "Softmax", "GridSample")

# Ops that end the backward walk from a sampling-coordinate input: the real computation upstream
# of them (the offset network's convs, attention, norms) runs in the usual precision.
_COORDINATE_WALK_BARRIERS = frozenset(
    {
        "Conv",
        "ConvTranspose",
        "MatMul",
        "Gemm",
        "Einsum",
        "LayerNormalization",
        "BatchNormalization",
        "InstanceNormalization",
        "GroupNormalization",
        "Softmax",
        "GridSample",
    }
)
_HEAD_OPS = frozenset({"MatMul", "Gemm"})
_HEAD_WALK_LIMIT = 6  # output <- Add(bias) <- Reshape/Flatten ... <- MatMul: a handful of nodes at most

# Input slots that the ONNX schema types as tensor(float) only, whatever the node computes in.
_FP32_ONLY_INPUTS = {"Resize": (2,), "Upsample": (1,)}
# Ops whose inputs accept any type: never insert a Cast in front of them.
_TYPE_AGNOSTIC_INPUT_OPS = frozenset({"Cast", "Shape", "Size"})


@dataclass
class PrecisionSummary:
    """Where a graph computes in which precision (from the types shape inference assigns)."""

    fp16_nodes: dict[str, int] = field(default_factory=dict)  # op type -> count
    fp32_nodes: dict[str, int] = field(default_factory=dict)
    casts_to_fp16: int = 0
    casts_to_fp32: int = 0
    back_and_forth_casts: list[str] = field(default_factory=list)  # names of offending Cast nodes
    fp16_initializers: int = 0
    fp32_initializers: int = 0
    inputs: dict[str, str] = field(default_factory=dict)  # name -> element type name
    outputs: dict[str, str] = field(default_factory=dict)
    # The position input of every `dat` op: node name -> element type name.
    dat_position_inputs: dict[str, str] = field(default_factory=dict)
    grid_sample_grids: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "fp16_nodes": dict(sorted(self.fp16_nodes.items())),
            "fp32_nodes": dict(sorted(self.fp32_nodes.items())),
            "casts": {"to_fp16": self.casts_to_fp16, "to_fp32": self.casts_to_fp32},
            "back_and_forth_casts": list(self.back_and_forth_casts),
            "initializers": {"fp16": self.fp16_initializers, "fp32": self.fp32_initializers},
            "inputs": dict(self.inputs),
            "outputs": dict(self.outputs),
            "dat_position_inputs": dict(self.dat_position_inputs),
            "grid_sample_grids": dict(self.grid_sample_grids),
        }


# ---------------------------------------------------------------------------------------------
# Type information
# ---------------------------------------------------------------------------------------------


def infer_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor name, via onnx shape inference plus the `dat` op rule."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    known: dict[str, int] = {}
    for _ in range(8):  # each round lets inference see past one more layer of custom ops
        try:
            inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False, data_prop=False)
        except Exception as exc:  # a graph onnx itself rejects
            raise UserError(f"onnx shape inference failed on the graph: {exc}. Check the model with onnx.checker.") from exc
        known = _collect_types(inferred)
        added = False
        for node in inferred.graph.node:
            if not is_dat_node(node) or not node.input:
                continue
            source = known.get(node.input[0])
            for name in node.output:
                if name and source and name not in known:
                    known[name] = source
                    model.graph.value_info.append(helper.make_tensor_value_info(name, source, None))
                    added = True
        if not added:
            break
    return known


def _collect_types(model: onnx.ModelProto) -> dict[str, int]:
    graph = model.graph
    index = GraphIndex(graph)
    types = {name: tensor.elem_type for name, tensor in index.value_info.items() if tensor.elem_type}
    types.update((name, init.data_type) for name, init in index.initializers.items())
    for node in graph.node:
        if is_onnx_node(node, "Constant"):
            for attr in node.attribute:
                if attr.name == "value":
                    types[node.output[0]] = attr.t.data_type
                elif attr.name in ("value_float", "value_floats"):
                    types[node.output[0]] = FLOAT
    return types


# ---------------------------------------------------------------------------------------------
# Choosing the fp32 islands
# ---------------------------------------------------------------------------------------------


def coordinate_sources(graph: onnx.GraphProto) -> list[str]:
    """Tensor names that carry sampling coordinates: GridSample grids and `dat` ops' `pos` inputs."""
    names = []
    for node in graph.node:
        if is_onnx_node(node, "GridSample") and len(node.input) > 1:
            names.append(node.input[1])
        elif is_dat_node(node) and node.op_type in DAT_POSITION_INPUTS:
            names.extend(node.input[slot] for slot in DAT_POSITION_INPUTS[node.op_type] if slot < len(node.input))
    return names


def coordinate_nodes(graph: onnx.GraphProto, types: dict[str, int]) -> set[int]:
    """Nodes between the offset network's last conv and the sampling ops (plus the grid constants).

    Walk backwards from each coordinate tensor through float tensors, stopping at a barrier op
    (a conv, matmul, norm, ...) whose output is the raw offset.
    """
    producers = GraphIndex(graph).producers
    island: set[int] = set()
    stack = list(coordinate_sources(graph))
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen:
            continue
        seen.add(name)
        index = producers.get(name)
        if index is None:
            continue  # graph input or initializer
        node = graph.node[index]
        if node.op_type in _COORDINATE_WALK_BARRIERS or is_dat_node(node):
            continue
        island.add(index)
        for upstream in node.input:
            if upstream and types.get(upstream) == FLOAT:
                stack.append(upstream)
    return island


def head_nodes(graph: onnx.GraphProto) -> set[int]:
    """The classifier head behind each graph output: output <- (bias Add, Reshape, ...) <- MatMul/Gemm.

    Follows a single chain of nodes with one non-constant input; gives up (empty) at a branch such
    as a residual Add, so feature-map outputs simply get a Cast at the end.
    """
    lookup = GraphIndex(graph)
    island: set[int] = set()
    for output in graph.output:
        chain: list[int] = []
        name = output.name
        for _ in range(_HEAD_WALK_LIMIT):
            index = lookup.producers.get(name)
            if index is None:
                chain = []
                break
            node = graph.node[index]
            chain.append(index)
            if node.op_type in _HEAD_OPS:
                break
            dynamic_inputs = [
                i for i in node.input if i and not lookup.is_constant(i) and i in lookup.producers
            ]
            if len(dynamic_inputs) != 1:
                chain = []
                break
            name = dynamic_inputs[0]
        else:
            chain = []
        if chain and graph.node[chain[-1]].op_type in _HEAD_OPS:
            island.update(chain)
    return island


# ---------------------------------------------------------------------------------------------
# The conversion
# ---------------------------------------------------------------------------------------------


class _Names:
    """Fresh tensor and node names that collide with nothing in the graph."""

    def __init__(self, graph: onnx.GraphProto):
        self.taken = {n for node in graph.node for n in list(node.input) + list(node.output)}
        self.taken |= {i.name for i in graph.input} | {o.name for o in graph.output} | {i.name for i in graph.initializer}
        self.taken |= {node.name for node in graph.node}

    def fresh(self, base: str) -> str:
        name, n = base, 0
        while name in self.taken:
            n += 1
            name = f"{base}_{n}"
        self.taken.add(name)
        return name


def _to_fp16_array(array: np.ndarray) -> np.ndarray:
    # Large-magnitude fp32 values (e.g. -1e9 attention masks) saturate instead of becoming inf.
    return np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16)


def _fp16_tensor(tensor: onnx.TensorProto, name: str) -> onnx.TensorProto:
    return numpy_helper.from_array(_to_fp16_array(numpy_helper.to_array(tensor)), name)


def _constant_value_to_fp16(node: onnx.NodeProto) -> bool:
    for attr in node.attribute:
        if attr.name == "value" and attr.t.data_type == FLOAT:
            attr.t.CopyFrom(_fp16_tensor(attr.t, attr.t.name))
            return True
    return False  # value_float(s): stays an fp32 source


def _retype_attributes(node: onnx.NodeProto) -> None:
    """Attributes that spell out float32 inside a node that now computes in fp16."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
            attr.i = FLOAT16
        elif node.op_type == "ConstantOfShape" and attr.name == "value" and attr.t.data_type == FLOAT:
            attr.t.CopyFrom(_fp16_tensor(attr.t, attr.t.name))
        elif attr.name == "dtype" and attr.i == FLOAT:  # EyeLike, RandomNormal, ...
            attr.i = FLOAT16


def fp32_island_nodes(
    model: onnx.ModelProto,
    types: dict[str, int] | None = None,
    keep_fp32_op_types: Iterable[str] = DEFAULT_FP32_OP_TYPES,
    keep_coordinates_fp32: bool = True,
    keep_head_fp32: bool = True,
    keep_fp32_node_names: Iterable[str] = (),
) -> set[int]:
    """Indices of the nodes that stay fp32."""
    graph = model.graph
    types = infer_types(model) if types is None else types
    op_types, names = set(keep_fp32_op_types), set(keep_fp32_node_names)
    island = {
        i
        for i, node in enumerate(graph.node)
        if (node.op_type in op_types and is_onnx_node(node)) or node.name in names
    }
    if keep_coordinates_fp32:
        island |= coordinate_nodes(graph, types)
    if keep_head_fp32:
        island |= head_nodes(graph)
    island |= _constant_feeders(graph, types, island)
    return island | _movements_between_fp32(graph, types, island)


# Ops that only move or select values: computing them in fp32 costs no precision and no kernel time.
_MOVEMENT_OPS = frozenset(
    {"Transpose", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Identity", "Slice", "Gather", "Expand", "Concat", "Split"}
)


def _movements_between_fp32(graph: onnx.GraphProto, types: dict[str, int], island: set[int]) -> set[int]:
    """Data-movement nodes fed by fp32 and read only by fp32 (or graph outputs): keep them fp32.

    Otherwise e.g. a feature-map output LayerNorm -> Transpose -> output would round-trip
    fp32 -> fp16 -> fp32 around the Transpose, losing precision for nothing.
    """
    lookup = GraphIndex(graph)
    producers, consumers = lookup.producers, lookup.consumers
    outputs = lookup.outputs
    fp32_sources = {i.name for i in graph.input}
    added: set[int] = set()
    changed = True
    while changed:
        changed = False
        for index, node in enumerate(graph.node):
            if index in island or index in added or node.op_type not in _MOVEMENT_OPS:
                continue
            float_inputs = [n for n in node.input if n and types.get(n) == FLOAT]
            float_outputs = [n for n in node.output if n and types.get(n) == FLOAT]
            if not float_inputs or not float_outputs:
                continue
            fed_fp32 = all(
                n in fp32_sources or (n in producers and (producers[n] in island or producers[n] in added))
                for n in float_inputs
            )
            uses = [i for n in float_outputs for i, _ in consumers.get(n, [])
                    if graph.node[i].op_type not in _TYPE_AGNOSTIC_INPUT_OPS]
            read_fp32 = all(i in island or i in added for i in uses) and (uses or outputs & set(float_outputs))
            if fed_fp32 and read_fp32:
                added.add(index)
                changed = True
    return added


def _constant_feeders(graph: onnx.GraphProto, types: dict[str, int], island: set[int]) -> set[int]:
    """Constant-only subgraphs (e.g. Expand/Reshape of a bias table) whose every user is fp32.

    Computing them in fp32 costs nothing at run time and avoids rounding the table to fp16 only
    to Cast it back.
    """
    constants = {init.name for init in graph.initializer}
    derived: set[int] = set()
    for index, node in enumerate(graph.node):
        float_inputs = [n for n in node.input if n and types.get(n) == FLOAT]
        if node.op_type == "Constant" or (float_inputs and all(n in constants for n in float_inputs)):
            derived.add(index)
            constants.update(n for n in node.output if n)
    consumers = GraphIndex(graph).consumers
    outputs = {o.name for o in graph.output}
    added: set[int] = set()
    changed = True
    while changed:
        changed = False
        for index in sorted(derived - island - added, reverse=True):
            node = graph.node[index]
            if node.op_type == "Constant":
                continue
            uses = [
                (i, slot)
                for name in node.output
                if name and types.get(name) == FLOAT
                for i, slot in consumers.get(name, [])
                if graph.node[i].op_type not in _TYPE_AGNOSTIC_INPUT_OPS
            ]
            if uses and all(i in island or i in added for i, _ in uses) and not outputs & set(node.output):
                added.add(index)
                changed = True
    return added


def convert_to_fp16(
    model: onnx.ModelProto,
    keep_fp32_op_types: Iterable[str] = DEFAULT_FP32_OP_TYPES,
    keep_coordinates_fp32: bool = True,
    keep_head_fp32: bool = True,
    keep_fp32_node_names: Iterable[str] = (),
) -> onnx.ModelProto:
    """Return an fp16 copy of `model` with fp32 islands, fp32 inputs/outputs and boundary Casts only."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    if any(node.op_type in ("If", "Loop", "Scan") for node in graph.node):
        raise UserError("the graph has control-flow nodes (If/Loop/Scan); fp16 conversion supports flat graphs only.")
    if any(init.data_type == FLOAT16 for init in graph.initializer) and _is_marked_fp16(model):
        raise UserError("the graph is already fp16 (metadata precision=fp16); convert the fp32 export instead.")
    types = infer_types(model)
    island = fp32_island_nodes(
        model, types, keep_fp32_op_types, keep_coordinates_fp32, keep_head_fp32, keep_fp32_node_names
    )
    names = _Names(graph)

    def is_float(name: str) -> bool:
        return types.get(name) == FLOAT

    fp16_node = [
        i not in island
        and node.op_type != "Constant"
        and any(is_float(n) for n in list(node.input) + list(node.output) if n)
        for i, node in enumerate(graph.node)
    ]

    def required_type(index: int, slot: int) -> int | None:
        """The element type input `slot` of node `index` must get, or None for 'whatever it gets'."""
        node = graph.node[index]
        if not is_float(node.input[slot]) or node.op_type in _TYPE_AGNOSTIC_INPUT_OPS:
            return None
        if not fp16_node[index] or slot in _FP32_ONLY_INPUTS.get(node.op_type, ()):
            return FLOAT
        if is_dat_node(node) and slot in DAT_POSITION_INPUTS.get(node.op_type, ()):
            return FLOAT
        return FLOAT16

    graph_outputs = {o.name for o in graph.output}
    wanted: dict[str, set[int]] = collections.defaultdict(set)
    for name, uses in GraphIndex(graph).consumers.items():
        for index, slot in uses:
            req = required_type(index, slot)
            if req is not None:
                wanted[name].add(req)

    # Initializers: stored in the type their consumers want; a second fp16 copy when both sides use one.
    produced: dict[str, int] = {i.name: FLOAT for i in graph.input if is_float(i.name)}
    fp16_version: dict[str, str] = {}
    initializers = []
    for init in graph.initializer:
        want = wanted.get(init.name, set())
        if init.data_type != FLOAT or FLOAT16 not in want:
            initializers.append(init)
        elif want == {FLOAT16} and init.name not in graph_outputs:
            initializers.append(_fp16_tensor(init, init.name))
        else:
            initializers.append(init)
            copy = names.fresh(f"{init.name}_fp16")
            initializers.append(_fp16_tensor(init, copy))
            fp16_version[init.name] = copy
        produced[init.name] = initializers[-1].data_type if init.name not in fp16_version else FLOAT
    graph.ClearField("initializer")
    graph.initializer.extend(initializers)

    new_nodes: list[onnx.NodeProto] = []
    cast_of: dict[tuple[str, int], str] = {}

    def converted(name: str, to: int) -> str:
        """`name` in type `to`: an fp16 constant copy, or one Cast shared by every consumer."""
        if to == FLOAT16 and name in fp16_version:
            return fp16_version[name]
        if (name, to) not in cast_of:
            out = names.fresh(f"{name}_{'fp16' if to == FLOAT16 else 'fp32'}")
            new_nodes.append(helper.make_node("Cast", [name], [out], name=names.fresh(f"Cast_{out}"), to=to))
            cast_of[(name, to)] = out
        return cast_of[(name, to)]

    internal_name: dict[str, str] = {}  # a graph output computed in fp16 -> the fp16 tensor's name
    for index, node in enumerate(graph.node):
        if node.op_type == "Constant" and is_float(node.output[0]):
            name = node.output[0]
            want = wanted.get(name, set())
            if want == {FLOAT16} and name not in graph_outputs and _constant_value_to_fp16(node):
                produced[name] = FLOAT16
            else:
                produced[name] = FLOAT
                if FLOAT16 in want:
                    copy = onnx.NodeProto.FromString(node.SerializeToString())
                    copy.output[0] = names.fresh(f"{name}_fp16")
                    copy.name = names.fresh(f"{node.name or 'Constant'}_fp16")
                    if _constant_value_to_fp16(copy):
                        new_nodes.append(copy)
                        fp16_version[name] = copy.output[0]
            new_nodes.append(node)
            continue

        for slot, name in enumerate(node.input):
            if not name:
                continue
            name = internal_name.get(name, name)
            node.input[slot] = name
            req, have = required_type(index, slot), produced.get(name)
            if req is not None and have is not None and have != req:
                node.input[slot] = converted(name, req)
        if fp16_node[index]:
            _retype_attributes(node)
        out_type = FLOAT16 if fp16_node[index] else FLOAT
        for slot, name in enumerate(node.output):
            if not name or not is_float(name):
                continue
            if name in graph_outputs and out_type == FLOAT16:
                internal = names.fresh(f"{name}_fp16")
                node.output[slot] = internal
                internal_name[name] = internal
                name = internal
            produced[name] = out_type
        new_nodes.append(node)

    # Graph outputs computed in fp16: one Cast back to fp32 under the original name.
    for out_name, internal in internal_name.items():
        new_nodes.append(helper.make_node("Cast", [internal], [out_name], name=names.fresh(f"Cast_{out_name}"), to=FLOAT))

    graph.ClearField("node")
    graph.node.extend(new_nodes)
    graph.ClearField("value_info")
    _remove_noop_and_paired_casts(model)
    _mark_precision(model)
    try:
        model = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception as exc:  # pragma: no cover - a bug in this module, not a user error
        raise RuntimeError(f"fp16 conversion produced a graph that shape inference rejects: {exc}") from exc
    return model


def _cast_target(node: onnx.NodeProto) -> int:
    return next(attr.i for attr in node.attribute if attr.name == "to")


def back_and_forth_casts(model: onnx.ModelProto, types: dict[str, int] | None = None) -> list[str]:
    """Cast nodes that undo another Cast (x -> Cast -> Cast -> x's type), or cast to the type x already has."""
    graph = model.graph
    types = infer_types(model) if types is None else types
    index = GraphIndex(graph)
    found = []
    for node in graph.node:
        if node.op_type != "Cast":
            continue
        source, target = node.input[0], _cast_target(node)
        inner = index.producer(source)
        if types.get(source) == target:
            found.append(node.name or node.output[0])
        elif inner is not None and inner.op_type == "Cast" and types.get(inner.input[0]) == target:
            found.append(node.name or node.output[0])
    return found


def _remove_noop_and_paired_casts(model: onnx.ModelProto) -> None:
    """Drop Casts to the type a tensor already has, and fold Cast(Cast(x)) back to x."""
    graph = model.graph
    outputs = {o.name for o in graph.output}
    for _ in range(4):
        types = infer_types(model)
        index = GraphIndex(graph)
        replace: dict[str, str] = {}
        for node in graph.node:
            if node.op_type != "Cast" or node.output[0] in outputs:
                continue
            source, target = node.input[0], _cast_target(node)
            inner = index.producer(source)
            if types.get(source) == target:
                replace[node.output[0]] = source
            elif inner is not None and inner.op_type == "Cast" and types.get(inner.input[0]) == target:
                replace[node.output[0]] = inner.input[0]
        if not replace:
            return
        for node in graph.node:
            for slot, name in enumerate(node.input):
                while name in replace:
                    name = replace[name]
                node.input[slot] = name
        _prune_dead_nodes(graph)


def _prune_dead_nodes(graph: onnx.GraphProto) -> None:
    needed = {o.name for o in graph.output}
    keep = []
    for node in reversed(graph.node):
        if any(name in needed for name in node.output):
            keep.append(node)
            needed.update(name for name in node.input if name)
    keep.reverse()
    graph.ClearField("node")
    graph.node.extend(keep)
    initializers = [init for init in graph.initializer if init.name in needed]
    graph.ClearField("initializer")
    graph.initializer.extend(initializers)


def _is_marked_fp16(model: onnx.ModelProto) -> bool:
    return any(p.key == "precision" and p.value == "fp16" for p in model.metadata_props)


def _mark_precision(model: onnx.ModelProto) -> None:
    for prop in model.metadata_props:
        if prop.key == "precision":
            prop.value = "fp16"
            return
    model.metadata_props.add(key="precision", value="fp16")


# ---------------------------------------------------------------------------------------------
# Inspection and files
# ---------------------------------------------------------------------------------------------

_TYPE_NAMES = {FLOAT: "float32", FLOAT16: "float16", TensorProto.DOUBLE: "float64", TensorProto.BFLOAT16: "bfloat16"}


def type_name(elem_type: int | None) -> str:
    if elem_type is None:
        return "unknown"
    return _TYPE_NAMES.get(elem_type, TensorProto.DataType.Name(elem_type).lower())


def precision_summary(model: onnx.ModelProto) -> PrecisionSummary:
    """Which nodes compute in fp16 / fp32 (by their float inputs and outputs), the Casts, the I/O types."""
    graph = model.graph
    types = infer_types(model)
    summary = PrecisionSummary()
    fp16, fp32 = collections.Counter(), collections.Counter()
    for node in graph.node:
        if node.op_type == "Cast":
            target = _cast_target(node)
            if target == FLOAT16:
                summary.casts_to_fp16 += 1
            elif target == FLOAT and types.get(node.input[0]) in (FLOAT16, TensorProto.BFLOAT16):
                summary.casts_to_fp32 += 1
            continue
        if node.op_type == "Constant" or (
            node.op_type in _TYPE_AGNOSTIC_INPUT_OPS and not any(types.get(n) in (FLOAT, FLOAT16) for n in node.output)
        ):
            continue  # Shape/Size read only a shape
        # The data path decides: a dat op with fp16 x and fp32 pos is an fp16 node.
        float_types = [types.get(n) for n in list(node.input[:1]) + list(node.output) if n]
        if not is_dat_node(node):
            float_types = [types.get(n) for n in list(node.input) + list(node.output) if n]
        label = node.op_type if is_onnx_node(node) else f"{node.domain}.{node.op_type}"
        if FLOAT16 in float_types:
            fp16[label] += 1
        elif FLOAT in float_types:
            fp32[label] += 1
        if is_dat_node(node) and node.op_type in DAT_POSITION_INPUTS:
            for slot in DAT_POSITION_INPUTS[node.op_type]:
                summary.dat_position_inputs[node.name or node.output[0]] = type_name(types.get(node.input[slot]))
        if node.op_type == "GridSample":
            summary.grid_sample_grids[node.name or node.output[0]] = type_name(types.get(node.input[1]))
    summary.fp16_nodes, summary.fp32_nodes = dict(fp16), dict(fp32)
    summary.back_and_forth_casts = back_and_forth_casts(model, types)
    for init in graph.initializer:
        if init.data_type == FLOAT16:
            summary.fp16_initializers += 1
        elif init.data_type == FLOAT:
            summary.fp32_initializers += 1
    summary.inputs = {i.name: type_name(i.type.tensor_type.elem_type) for i in graph.input}
    summary.outputs = {o.name: type_name(o.type.tensor_type.elem_type) for o in graph.output}
    return summary


def convert_file(source: Path, destination: Path, overwrite: bool = False, **options) -> PrecisionSummary:
    """Read an fp32 ONNX file (or a model folder's), write its fp16 version atomically, return the new graph's summary."""
    from dat_deploy.artifacts import ONNX_SUFFIXES, find_model_file, load_onnx
    from dat_deploy.atomic import atomic_path, check_not_exists

    source, destination = find_model_file(source, ONNX_SUFFIXES), Path(destination)
    if source.resolve() == destination.resolve():
        raise UserError(f"the fp16 output {destination} is the source file itself; choose another -o.")
    check_not_exists(destination, overwrite)
    model = load_onnx(source, external_data=True)  # the fp16 copy holds the weights
    converted = convert_to_fp16(model, **options)
    onnx.checker.check_model(converted)
    with atomic_path(destination, overwrite) as tmp:
        onnx.save(converted, str(tmp))
    return precision_summary(converted)
