"""Each DAT sampling op alone: our onnxruntime custom op against onnxruntime's GridSample graph of the same op.

The standard graph is what the standard export flavour computes (reshape, flip to (x, y), GridSample;
for the bias also the displacement grid and the table expanded over the batch). Shapes: the deformable
stages of DAT-T and DAT-T++ at 224. One run, one machine; ratios are standard / plugin.

    python benchmarks/bench_ops.py [--batches 1 8] [--repeat 20] [--threads N]
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

from dat_deploy.model import sampling
from dat_deploy.native import ort_library_path


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
OPSET = 18
FLOAT = TensorProto.FLOAT


def _model(nodes, inputs, initializers=(), custom=False):
    graph = helper.make_graph(nodes, "op", [helper.make_tensor_value_info(n, FLOAT, s) for n, s in inputs],
                              [helper.make_tensor_value_info("y", FLOAT, None)], initializer=list(initializers))
    opsets = [helper.make_opsetid("", OPSET)] + ([helper.make_opsetid("dat", 1)] if custom else [])
    model = helper.make_model(graph, opset_imports=opsets)
    model.ir_version = 10
    return model.SerializeToString()


def _const(name, array):
    return numpy_helper.from_array(np.asarray(array), name)


def deform_models(s: Stage, batch: int) -> tuple[bytes, bytes]:
    x_shape = [batch, s.channels, s.size, s.size]
    pos_shape = [batch * s.groups, s.keys, s.keys, 2]
    inputs = [("x", x_shape), ("pos", pos_shape)]
    plugin = _model([helper.make_node("DATDeformSample", ["x", "pos"], ["y"], domain="dat", groups=s.groups)],
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
    plugin = _model([helper.make_node("DATRelPosBias", ["table", "pos", "x"], ["y"], domain="dat", groups=s.groups,
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


def session(model: bytes, library: str | None, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    if library:
        options.register_custom_ops_library(library)
    return ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])


def median_ms(fn, repeat: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0 = its default)")
    parser.add_argument("--ops", nargs="+", default=["DATDeformSample", "DATRelPosBias"])
    parser.add_argument("--stages", nargs="+", default=None, help="stage names to run, e.g. 'DAT-T s3'")
    args = parser.parse_args()
    library = str(ort_library_path(build=True))
    rng = np.random.default_rng(0)

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"DAT sampling ops alone, onnxruntime {ort.__version__} CPU, median of {args.repeat} (ms)")
    for column in ("op", "stage", "batch", "GridSample graph", "dat custom op", "speed-up", "max |diff|"):
        table.add_column(column, justify="right" if column not in ("op", "stage") else "left")
    stages = [s for s in STAGES if args.stages is None or s.name in args.stages]
    for op in args.ops:
        for stage in stages:
            for batch in args.batches:
                feeds = {
                    "x": rng.standard_normal((batch, stage.channels, stage.size, stage.size), dtype=np.float32),
                    "pos": rng.uniform(-1, 1, (batch * stage.groups, stage.keys, stage.keys, 2)).astype(np.float32),
                    "table": rng.standard_normal((stage.heads, stage.table, stage.table), dtype=np.float32),
                }
                plugin, standard = (deform_models if op == "DATDeformSample" else bias_models)(stage, batch)
                runs = {}
                outputs = {}
                for name, model, lib in (("standard", standard, None), ("plugin", plugin, library)):
                    sess = session(model, lib, args.threads)
                    names = {i.name for i in sess.get_inputs()}
                    inputs = {k: v for k, v in feeds.items() if k in names}
                    outputs[name] = sess.run(None, inputs)[0]
                    runs[name] = median_ms(lambda: sess.run(None, inputs), args.repeat)
                diff = float(np.abs(outputs["standard"] - outputs["plugin"]).max())
                table.add_row(op, stage.name, str(batch), f"{runs['standard']:.3f}", f"{runs['plugin']:.3f}",
                              f"{runs['standard'] / runs['plugin']:.2f}x", f"{diff:.1e}")
    Console().print(table)


if __name__ == "__main__":
    main()
