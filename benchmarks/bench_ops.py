"""Each DAT op alone: our onnxruntime custom op against onnxruntime's standard graph of the same op.

For the sampling ops the standard graph is what the standard export flavour computes (reshape, flip to
(x, y), GridSample; for the bias also the displacement grid and the table expanded over the batch);
shapes: the deformable stages of DAT-T and DAT-T++ at 224. For DATWindowAttention it is
`window_attention_reference` exported by torch.onnx (roll, partition, MatMul, Softmax, MatMul, reverse
partition, roll back); shapes: DAT-T's L and S blocks at 224 (window 7, head dim 32, S shift 4).
For DATDeformAttention it is the graph the plugin flavour exported before that op existed:
`deformable_attention_reference` with its bias as a DATRelPosBias node (our op too) and the rest in plain
ops (Transposes, MatMul, Mul, Add, Softmax, MatMul); shapes: the deformable stages above (head dim 32).
One run, one machine, the two graphs called in turn; ratios are standard / plugin.

    python benchmarks/bench_ops.py [--batches 1 8] [--repeat 20] [--threads N] [--ops DATWindowAttention]

--threads sets onnxruntime's intra-op threads, which our custom ops run on as well.
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort
import torch
from onnx import TensorProto, helper, numpy_helper

from dat_deploy.graph.dat_graph import DAT_DOMAIN, DAT_DOMAIN_VERSION
from dat_deploy.model import deformable, sampling
from dat_deploy.model.attention import shift_window_mask
from dat_deploy.model.windows import window_attention_reference
from dat_deploy.native import ort_library_path
from dat_deploy.profiling.runner import SETTLE_S


@dataclass(frozen=True)
class Stage:
    name: str
    channels: int
    groups: int
    size: int  # H = W
    keys: int  # Hk = Wk
    heads: int
    table: int  # Th = Tw
    convention: str


STAGES = [
    Stage("DAT-T s3", 384, 3, 14, 14, 12, 27, "dat"),
    Stage("DAT-T s4", 768, 6, 7, 7, 24, 13, "dat"),
    Stage("DAT-T++ s1", 64, 1, 56, 7, 2, 111, "dat_pp"),
    Stage("DAT-T++ s2", 128, 2, 28, 7, 4, 55, "dat_pp"),
    Stage("DAT-T++ s3", 256, 4, 14, 7, 8, 27, "dat_pp"),
    Stage("DAT-T++ s4", 512, 8, 7, 7, 16, 13, "dat_pp"),
]


@dataclass(frozen=True)
class WindowStage:
    name: str
    size: int  # H = W
    channels: int
    heads: int
    shift: int  # 0: L block (one bias for all windows); > 0: S block (bias with the shift mask per window)
    window: int = 7


# DAT-T: stages 1-2 are L,S pairs, stages 3-4 hold only L blocks among their window-attention blocks.
WINDOW_STAGES = [
    WindowStage("DAT-T s1 L", 56, 96, 3, 0),
    WindowStage("DAT-T s1 S", 56, 96, 3, 4),
    WindowStage("DAT-T s2 L", 28, 192, 6, 0),
    WindowStage("DAT-T s2 S", 28, 192, 6, 4),
    WindowStage("DAT-T s3 L", 14, 384, 12, 0),
    WindowStage("DAT-T s4 L", 7, 768, 24, 0),
]
OPSET = 18
FLOAT = TensorProto.FLOAT


def _model(nodes, inputs, initializers=(), custom=False):
    graph = helper.make_graph(nodes, "op", [helper.make_tensor_value_info(n, FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info("y", FLOAT, None)], initializer=list(initializers))
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid(DAT_DOMAIN, DAT_DOMAIN_VERSION)] if custom else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return model.SerializeToString()


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def deform_models(s: Stage, batch: int) -> tuple[bytes, bytes]:
    x_shape = [batch, s.channels, s.size, s.size]
    pos_shape = [batch * s.groups, s.keys, s.keys, 2]
    inputs = [("x", x_shape), ("pos", pos_shape)]
    plugin = _model([helper.make_node("DATDeformSample", ["x", "pos"], ["y"], domain=DAT_DOMAIN, groups=s.groups)],
                    inputs, custom=True)
    standard = _model([
        helper.make_node("Reshape", ["x", "grouped_shape"], ["xg"]),
        helper.make_node("Gather", ["pos", "flip"], ["grid"], axis=-1),
        helper.make_node("GridSample", ["xg", "grid"], ["sampled"], align_corners=1, mode="bilinear", padding_mode="zeros"),
        helper.make_node("Reshape", ["sampled", "out_shape"], ["y"]),
    ], inputs, [
        _const("grouped_shape", np.array([batch * s.groups, s.channels // s.groups, s.size, s.size], np.int64)),
        _const("flip", np.array([1, 0], np.int64)),
        _const("out_shape", np.array([batch, s.channels, s.keys, s.keys], np.int64)),
    ])
    return plugin, standard


def bias_models(s: Stage, batch: int) -> tuple[bytes, bytes]:
    inputs = [("table", [s.heads, s.table, s.table]), ("pos", [batch * s.groups, s.keys, s.keys, 2]),
              ("x", [batch, s.channels, s.size, s.size])]
    code = {"dat": 0, "dat_pp": 1}[s.convention]
    plugin = _model([helper.make_node("DATRelPosBias", ["table", "pos", "x"], ["y"], domain=DAT_DOMAIN, groups=s.groups,
                                      convention=code)], inputs, custom=True)
    queries = sampling.query_grid(s.size, s.size, s.convention, torch.float32, torch.device("cpu"))
    hpg, keys = s.heads // s.groups, s.keys * s.keys
    standard = _model([
        helper.make_node("Reshape", ["pos", "pos_shape"], ["pos_flat"]),
        helper.make_node("Sub", ["queries", "pos_flat"], ["delta"]),
        helper.make_node("Mul", ["delta", "half"], ["disp"]),
        helper.make_node("Gather", ["disp", "flip"], ["grid"], axis=-1),
        helper.make_node("Reshape", ["table", "table5"], ["t5"]),
        helper.make_node("Expand", ["t5", "expand_shape"], ["te"]),
        helper.make_node("Reshape", ["te", "table4"], ["t4"]),
        helper.make_node("GridSample", ["t4", "grid"], ["sampled"], align_corners=1, mode="bilinear", padding_mode="zeros"),
        helper.make_node("Reshape", ["sampled", "out_shape"], ["y"]),
    ], inputs, [
        _const("queries", queries.reshape(1, s.size * s.size, 1, 2).numpy()),
        _const("pos_shape", np.array([batch * s.groups, 1, keys, 2], np.int64)),
        _const("half", np.array(0.5, np.float32)),
        _const("flip", np.array([1, 0], np.int64)),
        _const("table5", np.array([1, s.groups, hpg, s.table, s.table], np.int64)),
        _const("expand_shape", np.array([batch, s.groups, hpg, s.table, s.table], np.int64)),
        _const("table4", np.array([batch * s.groups, hpg, s.table, s.table], np.int64)),
        _const("out_shape", np.array([batch * s.heads, s.size * s.size, keys], np.int64)),
    ])
    return plugin, standard


class _WindowAttention(torch.nn.Module):
    def __init__(self, s: WindowStage):
        super().__init__()
        self.s = s

    def forward(self, qkv: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        s = self.s
        return window_attention_reference(qkv, bias, s.heads, s.window, s.shift, (s.channels // s.heads) ** -0.5)


def window_feeds(s: WindowStage, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    tokens = s.window * s.window
    bias = rng.standard_normal((1, s.heads, tokens, tokens), dtype=np.float32)
    if s.shift:
        bias = bias + shift_window_mask(s.size, s.window, s.shift).numpy()[:, None]
    return {"qkv": rng.standard_normal((batch, s.size, s.size, 3 * s.channels), dtype=np.float32),
            "bias": np.ascontiguousarray(bias, dtype=np.float32)}


def window_models(s: WindowStage, feeds: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    import warnings

    plugin = _model([helper.make_node("DATWindowAttention", ["qkv", "bias"], ["y"], domain=DAT_DOMAIN, heads=s.heads,
                                      window=s.window, shift=s.shift, scale=(s.channels // s.heads) ** -0.5)],
                    [(k, list(v.shape)) for k, v in feeds.items()], custom=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(_WindowAttention(s), (torch.from_numpy(feeds["qkv"]), torch.from_numpy(feeds["bias"])),
                                    input_names=["qkv", "bias"], output_names=["y"], opset_version=OPSET, dynamo=True,
                                    verbose=False)
    program.model_proto.ir_version = 10
    return plugin, program.model_proto.SerializeToString()


class _DeformAttention(torch.nn.Module):
    """deformable_attention_reference; under sampling.use_impl(plugin ops) its bias exports as DATRelPosBias."""

    def __init__(self, s: Stage):
        super().__init__()
        self.s = s

    def forward(self, q, k, v, table, pos):
        s = self.s
        return deformable.deformable_attention_reference(q, k, v, table, pos, s.heads, s.groups, s.convention,
                                                         (s.channels // s.heads) ** -0.5)


def deform_attention_feeds(s: Stage, batch: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    keys = s.keys * s.keys
    return {
        "q": rng.standard_normal((batch, s.size, s.size, s.channels), dtype=np.float32),
        "k": rng.standard_normal((batch, keys, s.channels), dtype=np.float32),
        "v": rng.standard_normal((batch, keys, s.channels), dtype=np.float32),
        "table": rng.standard_normal((s.heads, s.table, s.table), dtype=np.float32),
        "pos": rng.uniform(-1, 1, (batch * s.groups, s.keys, s.keys, 2)).astype(np.float32),
    }


def deform_attention_models(s: Stage, feeds: dict[str, np.ndarray]) -> tuple[bytes, bytes]:
    import warnings

    from dat_deploy.export import plugin_ops

    scale = (s.channels // s.heads) ** -0.5
    names = ["q", "k", "v", "table", "pos"]
    plugin = _model([helper.make_node("DATDeformAttention", names, ["y"], domain=DAT_DOMAIN, heads=s.heads, groups=s.groups,
                                      convention=plugin_ops.CONVENTION_CODES[s.convention], scale=scale)],
                    [(k, list(v.shape)) for k, v in feeds.items()], custom=True)
    args = tuple(torch.from_numpy(feeds[n]) for n in names)
    with warnings.catch_warnings(), sampling.use_impl(plugin_ops.deform_sample, plugin_ops.rel_pos_bias):
        warnings.simplefilter("ignore")
        program = torch.onnx.export(_DeformAttention(s), args, input_names=names, output_names=["y"],
                                    opset_version=OPSET, dynamo=True, verbose=False,
                                    custom_translation_table=plugin_ops.custom_translation_table())
    program.model_proto.ir_version = 10
    ops = [node.op_type for node in program.model_proto.graph.node]
    assert "DATRelPosBias" in ops and "Softmax" in ops, ops
    return plugin, program.model_proto.SerializeToString()


def session(model: bytes, library: str | None, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if library:
        options.register_custom_ops_library(library)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def interleaved_median_ms(fns: dict, repeat: int, warmup: int = 3) -> dict[str, float]:
    """Median ms of each callable, called in turn round by round: a machine whose speed drifts (shared
    cores, frequency) then slows every contender alike, and their ratio holds. Each timed call follows an
    untimed pause (SETTLE_S), so the previous session's spinning workers are idle (profiling/runner.py)."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            time.sleep(SETTLE_S)
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) * 1e3)
    return {name: statistics.median(values) for name, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = its default)")
    parser.add_argument("--ops", nargs="+",
                        default=["DATDeformSample", "DATRelPosBias", "DATWindowAttention", "DATDeformAttention"])
    parser.add_argument("--stages", nargs="+", default=None, help="stage names to run, e.g. 'DAT-T s3'")
    args = parser.parse_args()
    library = str(ort_library_path(build=True))
    rng = np.random.default_rng(0)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"DAT ops alone, onnxruntime {ort.__version__} CPU, median of {args.repeat} (ms)")
    for column in ("op", "stage", "batch", "standard graph", "dat custom op", "speed-up", "max |diff|"):
        table.add_column(column, justify="right" if column not in ("op", "stage") else "left")
    for op in args.ops:
        stages = [s for s in (WINDOW_STAGES if op == "DATWindowAttention" else STAGES)
                  if args.stages is None or s.name in args.stages]
        for stage in stages:
            for batch in args.batches:
                if op == "DATWindowAttention":
                    feeds = window_feeds(stage, batch, rng)
                    plugin, standard = window_models(stage, feeds)
                    _time_pair(table, op, stage, batch, feeds, plugin, standard, library, args)
                    continue
                if op == "DATDeformAttention":
                    feeds = deform_attention_feeds(stage, batch, rng)
                    plugin, standard = deform_attention_models(stage, feeds)
                    # the baseline's DATRelPosBias node needs the library too
                    _time_pair(table, op, stage, batch, feeds, plugin, standard, library, args, standard_library=True)
                    continue
                feeds = {
                    "x": rng.standard_normal((batch, stage.channels, stage.size, stage.size), dtype=np.float32),
                    "pos": rng.uniform(-1, 1, (batch * stage.groups, stage.keys, stage.keys, 2)).astype(np.float32),
                    "table": rng.standard_normal((stage.heads, stage.table, stage.table), dtype=np.float32),
                }
                plugin, standard = (deform_models if op == "DATDeformSample" else bias_models)(stage, batch)
                _time_pair(table, op, stage, batch, feeds, plugin, standard, library, args)
    Console().print(table)


def _time_pair(table, op, stage, batch, feeds, plugin, standard, library, args, standard_library=False) -> None:
    calls = {}
    outputs = {}
    for name, model, lib in (("standard", standard, library if standard_library else None), ("plugin", plugin, library)):
        sess = session(model, lib, args.threads)
        names = {i.name for i in sess.get_inputs()}
        inputs = {k: v for k, v in feeds.items() if k in names}
        outputs[name] = sess.run(None, inputs)[0]
        calls[name] = lambda sess=sess, inputs=inputs: sess.run(None, inputs)
    runs = interleaved_median_ms(calls, args.repeat)
    diff = float(np.abs(outputs["standard"] - outputs["plugin"]).max())
    table.add_row(op, stage.name, str(batch), f"{runs['standard']:.3f}", f"{runs['plugin']:.3f}",
                  f"{runs['standard'] / runs['plugin']:.2f}x", f"{diff:.1e}")


if __name__ == "__main__":
    main()
