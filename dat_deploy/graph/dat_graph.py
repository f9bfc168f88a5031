"""What makes an ONNX graph a dat graph, and one index over a graph's tensors for the rewrites.

A plugin-flavour graph holds nodes of the `dat` domain (DATDeformSample, DATRelPosBias, ...): onnxruntime
runs them with our custom-op library, TensorRT with our plugins (found by op_type). The rewrites
(fp16 conversion, the CPU fusions) walk graphs through `GraphIndex`.
"""

from __future__ import annotations

import math

import numpy as np

DAT_DOMAIN = "dat"
DAT_DOMAIN_VERSION = 1
ONNX_DOMAINS = ("", "ai.onnx")  # the default domain's two spellings


def has_dat_nodes(model) -> bool:
    """Whether an ONNX model (or graph) has nodes of the `dat` domain: the plugin flavour."""
    graph = getattr(model, "graph", model)
    return any(node.domain == DAT_DOMAIN for node in graph.node)


def onnx_opset(model) -> int:
    """The opset version a model imports for the default ONNX domain (0: none)."""
    return max((o.version for o in model.opset_import if o.domain in ONNX_DOMAINS), default=0)


def is_dat_node(node, op_type: str | None = None) -> bool:
    return node.domain == DAT_DOMAIN and (op_type is None or node.op_type == op_type)


def is_onnx_node(node, op_type: str | None = None) -> bool:
    """A node of the default ONNX domain (of `op_type`, if given)."""
    return node.domain in ONNX_DOMAINS and (op_type is None or node.op_type == op_type)


def ensure_dat_opset(model) -> None:
    """Declare the `dat` domain in the model's opset imports, once."""
    from onnx import helper

    if not any(op.domain == DAT_DOMAIN for op in model.opset_import):
        model.opset_import.append(helper.make_opsetid(DAT_DOMAIN, DAT_DOMAIN_VERSION))


class GraphIndex:
    """Who produces and who reads each tensor of one graph, its initializers and declared tensor types.

    Built once over `graph.node` as it is; node indices refer to that order. A rewrite that moves or
    renames nodes builds a new index. `nodes` holds the node objects themselves, so that a rewrite may
    tell nodes apart by id() while the index lives.
    """

    def __init__(self, graph):
        self.graph = graph
        self.nodes = list(graph.node)
        self.producers: dict[str, int] = {}  # tensor -> index of the node writing it
        self.consumers: dict[str, list[tuple[int, int]]] = {}  # tensor -> [(node index, input slot)], in order
        for index, node in enumerate(graph.node):
            for name in node.output:
                if name:
                    self.producers[name] = index
            for slot, name in enumerate(node.input):
                if name:
                    self.consumers.setdefault(name, []).append((index, slot))
        self.inputs = {i.name for i in graph.input}
        self.outputs = {o.name for o in graph.output}
        self.initializers = {init.name: init for init in graph.initializer}
        # Declared types (value_info, then graph inputs and outputs): name -> TypeProto.Tensor.
        self.value_info = {v.name: v.type.tensor_type for v in (*graph.value_info, *graph.input, *graph.output)
                           if v.type.HasField("tensor_type")}

    def producer(self, name: str):
        """The node that writes `name`, or None (a graph input, an initializer, or no such tensor)."""
        index = self.producers.get(name)
        return None if index is None else self.nodes[index]

    def readers(self, name: str) -> list:
        """The nodes reading `name`, once per input slot that reads it."""
        return [self.nodes[index] for index, _ in self.consumers.get(name, [])]

    def is_constant(self, name: str) -> bool:
        """An initializer or a Constant node's output."""
        producer = self.producer(name)
        return name in self.initializers or (producer is not None and producer.op_type == "Constant")

    def constant(self, name: str) -> np.ndarray | None:
        """The value of an initializer or of a Constant node's `value`, else None."""
        from onnx import numpy_helper

        if name in self.initializers:
            return numpy_helper.to_array(self.initializers[name])
        node = self.producer(name)
        if node is not None and node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            return numpy_helper.to_array(node.attribute[0].t)
        return None

    def is_scalar(self, name: str, value: float, dtype=None) -> bool:
        array = self.constant(name)
        return (array is not None and array.size == 1 and (dtype is None or array.dtype == dtype)
                and math.isclose(float(array.ravel()[0]), value, rel_tol=1e-6))

    def shape_and_type(self, name: str) -> tuple[tuple, int] | None:
        """(dims as values or symbols, element type) from the declared types, or None unless every dim is known."""
        tensor = self.value_info.get(name)
        if tensor is None or not tensor.HasField("shape"):
            return None
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim)
        return None if None in dims else (dims, tensor.elem_type)

    def only_consumer(self, name: str, op_type: str):
        """The single node reading `name`, if it is a default-domain `op_type` and `name` is not a graph output."""
        readers = self.readers(name)
        if len(readers) != 1 or name in self.outputs or not is_onnx_node(readers[0], op_type):
            return None
        return readers[0]

    @staticmethod
    def other_input(node, name: str) -> str | None:
        """The input of a two-input node that is not `name`."""
        if len(node.input) != 2 or name not in node.input:
            return None
        return node.input[1] if node.input[0] == name else node.input[0]


__all__ = ["DAT_DOMAIN", "DAT_DOMAIN_VERSION", "GraphIndex", "ONNX_DOMAINS", "ensure_dat_opset", "has_dat_nodes",
           "is_dat_node", "is_onnx_node", "onnx_opset"]
