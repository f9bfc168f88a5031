"""Rewrites the onnxruntime backend applies to a plugin-flavour graph before a CPU session is made.

They replace subgraphs with ops of our custom-op library that onnxruntime's CPU kernels run slower, and
stay out of the exported ONNX: TensorRT fuses the same subgraphs itself, and an exported custom node would
only stop it. The exported file is never changed; the session gets the rewritten copy.

- `fuse_bias_gelu`: Add(x, 1-D fp32 bias) then the exact GELU as the exporter writes it (Div by sqrt 2, Erf,
  Add 1, Mul, Mul 0.5) becomes one dat::DATBiasGelu. onnxruntime fuses the same pattern into its BiasGelu,
  whose erf runs four lanes at a time: ours was 1.8-2.2x faster per call on DAT-T's MLP shapes (one thread,
  AMD EPYC, AVX2), within 1.2e-6 of GELU in fp64. GELUs without such a bias (DAT++'s convolutional MLPs,
  the offset networks) are left alone: between two Convs onnxruntime keeps its blocked NCHWc layout
  through its own Gelu, and a custom node there costs two layout reorders (DAT-T++ was 0.93x with them).
- `fuse_add_layer_norm`: a residual Add of two same-shape fp32 tensors whose sum feeds a LayerNormalization
  over the last axis becomes one dat::DATAddLayerNorm with both outputs (the sum still feeds the next
  residual Add): four passes over memory instead of five.
- `fuse_small_gemms`: a Gemm x W^T + b whose fp32 initializer weight W (N, K) is small (N * K <= 600K and
  min(N, K) <= 384) becomes dat::DATGemm, whose kernel packs W once and runs 6-row bands of x past it.
  onnxruntime's SGEMM is slower there on AVX2. Alternating single-node runs on DAT-T's shapes, one thread:
  DATGemm 1.0-1.36x faster (stages 1-3). Past those limits onnxruntime's own blocking wins (0.68-0.90x on
  stage 4's and DAT-T++ stage 4's weights), so those stay Gemms. Only on x86-64 CPUs with AVX2 and without
  AVX-512 (`small_gemms_pay`): that is where it was measured; with AVX-512 the kernel uses 12 of 32 vector
  registers against MLAS's AVX-512 kernels, and elsewhere it would be the portable 4-lane layer.
- `fuse_gemm_gelu`: a DATBiasGelu that alone reads a bias-free DATGemm (through the exporter's Reshape back to
  3-D, if any) is folded into it (attribute gelu = 1, the GELU's bias as the Gemm's): the MLP's widest tensor
  makes one trip to memory instead of three. Bit-identical; DAT-T batch 8 1.00x with one thread and about
  1.01x with two, where both cores share the memory bandwidth (plugins/README.md).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from dat_deploy.graph.dat_graph import DAT_DOMAIN, GraphIndex, ensure_dat_opset, is_dat_node, is_onnx_node

_SQRT2 = math.sqrt(2.0)


def _match_bias_gelu(g: GraphIndex, erf):
    """The nodes of Add(x, bias) -> GELU around `erf`, and (x, bias, output), or None."""
    div = g.producer(erf.input[0])
    # An fp32 constant makes Div's other input fp32 too (ONNX Div takes one type): our kernels are fp32 only.
    if div is None or not is_onnx_node(div, "Div") or not g.is_scalar(div.input[1], _SQRT2, np.float32):
        return None
    pre = div.input[0]  # x + bias
    add_one = g.only_consumer(erf.output[0], "Add")
    if add_one is None or not g.is_scalar(g.other_input(add_one, erf.output[0]) or "", 1.0):
        return None
    times_pre = g.only_consumer(add_one.output[0], "Mul")
    if times_pre is None or g.other_input(times_pre, add_one.output[0]) != pre:
        return None
    half = g.only_consumer(times_pre.output[0], "Mul")
    if half is None or not g.is_scalar(g.other_input(half, times_pre.output[0]) or "", 0.5):
        return None
    if pre in g.outputs or {id(n) for n in g.readers(pre)} != {id(div), id(times_pre)}:
        return None
    if div.output[0] in g.outputs or len(g.readers(div.output[0])) != 1:
        return None
    add_bias = g.producer(pre)
    if add_bias is None or not is_onnx_node(add_bias, "Add"):
        return None
    for x, bias in (add_bias.input, reversed(add_bias.input)):
        array = g.constant(bias)
        if array is not None and array.ndim == 1 and array.dtype == np.float32 and g.constant(x) is None:
            return [add_bias, div, erf, add_one, times_pre, half], x, bias, half.output[0]
    return None


def fuse_bias_gelu(model) -> int:
    """Rewrite every Add(x, bias) + exact GELU of `model`'s main graph into dat::DATBiasGelu, in place.

    Only 1-D fp32 biases (the last axis of x: the kernel's contract) on fp32 data match. Returns the count.
    """
    from onnx import helper

    g = GraphIndex(model.graph)
    replaced: dict[int, object] = {}  # id(last node of a match) -> the new node
    removed: set[int] = set()
    for node in list(model.graph.node):
        if not is_onnx_node(node, "Erf"):
            continue
        match = _match_bias_gelu(g, node)
        if match is None:
            continue
        nodes, x, bias, output = match
        removed.update(id(n) for n in nodes)
        replaced[id(nodes[-1])] = helper.make_node(
            "DATBiasGelu", [x, bias], [output], name=f"{nodes[-1].name or output}_DATBiasGelu", domain=DAT_DOMAIN)
    if not replaced:
        return 0
    # The new node takes the place of the pattern's last node, after its inputs' producers.
    _replace_nodes(model.graph, removed, replaced)
    ensure_dat_opset(model)
    _drop_unused_initializers(model.graph)
    return len(replaced)


def _replace_nodes(graph, removed: set[int], replacements: dict[int, object]) -> None:
    """Graph nodes in order without those in `removed` (by id), each in `replacements` swapped for its new node."""
    kept = [replacements.get(id(n), n) for n in graph.node if id(n) not in removed or id(n) in replacements]
    del graph.node[:]
    graph.node.extend(kept)


def _drop_unused_initializers(graph) -> None:
    """The pattern's constants (sqrt 2, 1, 0.5) when nothing else reads them; onnxruntime warns about each."""
    used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
    kept = [init for init in graph.initializer if init.name in used]
    if len(kept) != len(graph.initializer):
        del graph.initializer[:]
        graph.initializer.extend(kept)


def _match_add_layer_norm(g: GraphIndex, norm):
    """(Add node, DATAddLayerNorm node) for Add -> LayerNormalization(axis -1) at `norm`, or None."""
    from onnx import TensorProto, helper

    attributes = {a.name: helper.get_attribute_value(a) for a in norm.attribute}
    if attributes.get("axis", -1) != -1 or attributes.get("stash_type", 1) != 1 or len(norm.input) != 3:
        return None
    if any(name and (name in g.outputs or g.consumers.get(name)) for name in norm.output[1:]):
        return None  # Mean / InvStdDev are used: not ours to drop
    add = g.producer(norm.input[0])
    if add is None or not is_onnx_node(add, "Add") or len(add.input) != 2:
        return None
    shapes = [g.shape_and_type(name) for name in (*add.input, add.output[0])]
    if any(s is None or s[1] != TensorProto.FLOAT for s in shapes) or len({s[0] for s in shapes}) != 1:
        return None  # a broadcast, a non-fp32 or an unknown shape
    if any(name not in g.initializers for name in norm.input[1:]):
        return None  # the fused node takes the Add's place: a Constant node later in the graph would come too late
    gamma, beta = (g.constant(name) for name in norm.input[1:])
    columns = shapes[0][0][-1]
    if any(c is None or c.shape != (columns,) or c.dtype != np.float32 for c in (gamma, beta)):
        return None
    fused = helper.make_node(
        "DATAddLayerNorm", [*add.input, *norm.input[1:]], [add.output[0], norm.output[0]],
        name=f"{norm.name or norm.output[0]}_DATAddLayerNorm", domain=DAT_DOMAIN,
        epsilon=float(attributes.get("epsilon", 1e-5)))
    return add, fused


def fuse_add_layer_norm(model) -> int:
    """Rewrite every Add + LayerNormalization of `model`'s main graph into dat::DATAddLayerNorm, in place.

    Needs value_info shapes (the exporter writes them): both Add inputs fp32 and of one shape. Returns the count.
    """
    g = GraphIndex(model.graph)
    at_add: dict[int, object] = {}  # id(Add) -> the new node, which takes the Add's place in the order
    removed: set[int] = set()
    for node in list(model.graph.node):
        if not is_onnx_node(node, "LayerNormalization"):
            continue
        match = _match_add_layer_norm(g, node)
        if match is not None and id(match[0]) not in at_add:  # an Add feeding two LayerNorms fuses with one
            add, fused = match
            at_add[id(add)] = fused
            removed.add(id(node))
    _replace_nodes(model.graph, removed, at_add)
    ensure_dat_opset(model)
    return len(at_add)


GEMM_MAX_WEIGHTS = 600_000  # N * K: DAT-T's (384, 1536) = 589,824 still wins (1.12x)
GEMM_MAX_SHORT_SIDE = 384  # min(N, K): DAT-T's (768, 768) at 392 rows lost (0.89x), as did (512, 1536)
GEMM_MIN_SIDE = 32  # N and K: the kernel's column panels are 16 or 32 wide


def _gemm_replacement(g: GraphIndex, node):
    """The DATGemm node (and a zero bias initializer, if one is needed) for an ONNX Gemm, or None."""
    from onnx import TensorProto, helper, numpy_helper

    attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    if (attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0 or attributes.get("transA", 0)
            or attributes.get("transB", 0) != 1 or len(node.input) < 2):
        return None
    x = g.shape_and_type(node.input[0])
    weight = g.initializers.get(node.input[1])
    if x is None or x[1] != TensorProto.FLOAT or len(x[0]) != 2 or weight is None or node.input[1] in g.inputs:
        return None  # an initializer that is also a graph input can be overridden: DATGemm packs it at load
    if weight.data_type != TensorProto.FLOAT or len(weight.dims) != 2:
        return None
    n, k = weight.dims
    if not GEMM_MIN_SIDE <= min(n, k) <= GEMM_MAX_SHORT_SIDE or n * k > GEMM_MAX_WEIGHTS:
        return None
    bias_name = node.input[2] if len(node.input) > 2 and node.input[2] else None
    zero = None
    if bias_name is None:
        zero = numpy_helper.from_array(np.zeros(n, np.float32), f"{node.input[1]}_DATGemm_zero_bias")
        bias_name = zero.name
    else:
        bias = g.initializers.get(bias_name)
        if bias is None or bias.data_type != TensorProto.FLOAT or list(bias.dims) != [n]:
            return None  # a broadcast or computed bias: Gemm's business
    fused = helper.make_node("DATGemm", [node.input[0], node.input[1], bias_name], list(node.output),
                             name=f"{node.name or node.output[0]}_DATGemm", domain=DAT_DOMAIN)
    return fused, zero


def small_gemms_pay(layer=None) -> bool:
    """Whether this CPU is one DATGemm was measured faster on: x86-64 with AVX2 + FMA and no AVX-512.

    `layer` (a dat_deploy.native.cpu_layer.CpuLayer): what the op library chose where the session runs; DATGemm pays
    when that is the avx2 layer on a CPU without AVX-512. Without it, this machine's /proc/cpuinfo flags decide.
    """
    if layer is not None:
        return layer.layer == "avx2" and "avx512" not in layer.supported
    import platform

    if platform.machine() not in ("x86_64", "AMD64"):
        return False
    try:
        flags = next((line.split(":", 1)[1].split() for line in Path("/proc/cpuinfo").read_text().splitlines()
                      if line.startswith("flags")), [])
    except OSError:
        return False
    return {"avx2", "fma"} <= set(flags) and "avx512f" not in flags


def fuse_small_gemms(model) -> int:
    """Rewrite every Gemm of `model`'s main graph that DATGemm runs faster into dat::DATGemm, in place.

    Matches x (2-D fp32, shape from value_info) times a transposed fp32 initializer W (N, K) with
    GEMM_MIN_SIDE <= min(N, K) <= GEMM_MAX_SHORT_SIDE and N * K <= GEMM_MAX_WEIGHTS, alpha = beta = 1, and a
    1-D initializer bias of N or none (a zero bias is added). Returns the count.
    """
    g = GraphIndex(model.graph)
    count = 0
    for index, node in enumerate(model.graph.node):
        if not is_onnx_node(node, "Gemm"):
            continue
        replacement = _gemm_replacement(g, node)
        if replacement is None:
            continue
        fused, zero = replacement
        model.graph.node[index].CopyFrom(fused)
        if zero is not None and zero.name not in g.initializers:
            model.graph.initializer.append(zero)
            g.initializers[zero.name] = zero
        count += 1
    if count:
        ensure_dat_opset(model)
    return count


def _gemm_gelu(g: GraphIndex, gemm):
    """(DATBiasGelu, the Reshape between them or None) when `gemm`'s output goes, alone, to a DATBiasGelu whose
    bias can become the DATGemm's: directly or through one Reshape that keeps the last axis (how the exporter
    flattens nn.Linear's leading axes around its Gemm)."""
    from onnx import TensorProto

    n = g.initializers[gemm.input[1]].dims[0]
    zero = g.constant(gemm.input[2])
    if zero is None or np.any(zero):
        return None  # a DATGemm with a bias of its own
    reshape = g.only_consumer(gemm.output[0], "Reshape")
    value = gemm.output[0]
    if reshape is not None:
        shape = g.shape_and_type(reshape.output[0])
        if reshape.input[0] != value or shape is None or shape[0][-1] != n:
            return None
        value = reshape.output[0]
    readers = g.readers(value)
    if len(readers) != 1 or value in g.outputs:
        return None
    gelu = readers[0]
    bias = g.initializers.get(gelu.input[1]) if len(gelu.input) > 1 else None
    if (not is_dat_node(gelu, "DATBiasGelu") or gelu.input[0] != value or bias is None
            or bias.data_type != TensorProto.FLOAT or list(bias.dims) != [n]):
        return None
    return gelu, reshape


def fuse_gemm_gelu(model) -> int:
    """Fold each DATBiasGelu that alone reads a bias-free DATGemm into that DATGemm (attribute gelu = 1), in place.

    The DATGemm's bias must be an all-zero initializer (what `fuse_small_gemms` adds to a Gemm without one) and
    the DATBiasGelu's a 1-D fp32 initializer of N, which becomes the DATGemm's; a Reshape between the two that
    keeps the last axis stays, now after the GELU. Returns the count.
    """
    from onnx import helper

    g = GraphIndex(model.graph)
    removed: set[int] = set()
    for node in model.graph.node:
        if not is_dat_node(node, "DATGemm") or any(a.name == "gelu" for a in node.attribute):
            continue
        match = _gemm_gelu(g, node)
        if match is None:
            continue
        gelu, reshape = match
        node.input[2] = gelu.input[1]
        node.attribute.append(helper.make_attribute("gelu", 1))
        (reshape or node).output[0] = gelu.output[0]
        removed.add(id(gelu))
    if removed:
        _replace_nodes(model.graph, removed, {})
        _drop_unused_initializers(model.graph)
    return len(removed)


def optimize_for_cpu(model, portable: bool = False, layer=None) -> dict[str, int]:
    """Every rewrite of this module that pays on this CPU, in place; how many nodes of each op they made.

    portable=True: only the rewrites that pay on every CPU, for a graph that ships to other machines (a Triton
    repository); the CPU-dependent DATGemm rewrite is then left to the session that loads it. `layer`: see
    `small_gemms_pay`.
    """
    gemms = not portable and small_gemms_pay(layer)
    counts = {"DATBiasGelu": fuse_bias_gelu(model), "DATAddLayerNorm": fuse_add_layer_norm(model),
              "DATGemm": fuse_small_gemms(model) if gemms else 0}
    folded = fuse_gemm_gelu(model) if counts["DATGemm"] else 0
    counts["DATBiasGelu"] -= folded
    counts["DATGemm+GELU"] = folded
    return counts


def fused_session_model(model, portable: bool = False, layer=None) -> tuple[bytes | None, dict[str, int]]:
    """`model` rewritten in place and serialised for a CPU session (None when nothing matched), and the counts."""
    counts = optimize_for_cpu(model, portable=portable, layer=layer)
    return (model.SerializeToString() if any(counts.values()) else None), counts


__all__ = ["fuse_bias_gelu", "fuse_gemm_gelu", "fuse_small_gemms", "fused_session_model", "optimize_for_cpu", "small_gemms_pay"]
