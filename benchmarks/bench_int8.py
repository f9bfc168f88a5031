"""int8 on the CPU: DAT int8 (onnxruntime) against our fp32 plugin flavour and PyTorch eager.

    python benchmarks/bench_int8.py                          # DAT-T and DAT-T++, batch 1 and 8, 2 threads
    python benchmarks/bench_int8.py --variants dat_t --batch 8 --iters 5 --goal-fp32 1.5 --goal-eager 2.5

Every (variant, backend, batch) case runs in one interleaved loop (a short untimed pause before each, so
the previous session's spinning onnxruntime workers are idle), so a drift of the machine hits all alike.
Backends: torch (eager), ort-plugin (fp32 plugin flavour with the CPU fusions), ort-int8 (the int8 model of
`dat-deploy quantize`, onnxruntime recipe), and with --tensorrt-graph also the symmetric TensorRT-recipe
graph run by onnxruntime (does one graph serve both?). After the timed loop: onnxruntime's per-op shares of
the int8 model, the time share of its int8 matrix products, the ceiling (int8 speed if those cost nothing),
and which MLAS int8 path this CPU gets. Writes a Markdown report (default benchmarks/results/).
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

INT8_MATRIX_OPS = {"QGemm", "QLinearConv", "QLinearMatMul", "MatMulIntegerToFloat", "MatMulInteger", "ConvInteger",
                   "DynamicQuantizeMatMul"}
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="dat_t,dat_pp_t")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--iters", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--images", type=int, default=64, help="calibration images for the int8 models")
    parser.add_argument("--goal-fp32", type=float, default=1.5, help="goal: int8 speed-up over our fp32 plugin flavour")
    parser.add_argument("--goal-eager", type=float, default=2.5, help="goal: int8 speed-up over PyTorch eager")
    parser.add_argument("--goal-batch", type=int, default=8)
    parser.add_argument("--tensorrt-graph", action="store_true", help="also time the symmetric (TensorRT recipe) graph")
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--work", type=Path, default=None, help="where models are exported (default: a temp folder)")
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args(argv)


def prepare(variant: str, work: Path, args, log) -> dict:
    """{backend name: (runner callable(batch) -> None, onnx path or None)} for one variant."""
    import torch

    from dat_deploy.export import export_onnx
    from dat_deploy.model import create_model
    from dat_deploy.quantize.pipeline import quantize_folder
    from dat_deploy.runtime import OrtBackend

    folder = work / f"{variant}_plugin"
    if not folder.exists():
        log(f"{variant}: exporting the plugin flavour")
        export_onnx(variant, output_dir=work, flavor="plugin")
    targets = ["onnxruntime"] + (["tensorrt"] if args.tensorrt_graph else [])
    paths = {"ort-plugin": folder / "1" / "model.onnx"}
    for target in targets:
        out = work / f"{variant}_int8_{target}"
        if not out.exists():
            log(f"{variant}: quantizing for {target} on {args.images} images")
            quantize_folder(folder, output=out, images=args.images, target=target, check=False)
        paths["ort-int8" if target == "onnxruntime" else "ort-int8-symmetric"] = out / "1" / "model.onnx"
    runners = {}
    if not args.no_torch:
        model = create_model(variant, seed=0).eval()

        def eager(batch, model=model):
            with torch.inference_mode():
                model(torch.from_numpy(batch))

        runners["torch"] = (eager, None)
    for name, path in paths.items():
        backend = OrtBackend(path, intra_op_threads=args.threads)
        runners[name] = (backend.run, path)
    return runners


def timed_loop(cases: dict, inputs: dict, iters: int, warmup: int) -> dict:
    """Interleaved rounds over every case; median ms per case."""
    samples = {key: [] for key in cases}
    for round_index in range(warmup + iters):
        order = list(cases) if round_index % 2 == 0 else list(reversed(list(cases)))
        for key in order:
            run = cases[key]
            batch = inputs[key[2]]
            time.sleep(0.1)  # untimed: the previous onnxruntime session's spinning workers go idle
            start = time.perf_counter()
            run(batch)
            elapsed = (time.perf_counter() - start) * 1e3
            if round_index >= warmup:
                samples[key].append(elapsed)
    return {key: {"median": statistics.median(v), "min": min(v), "samples": v} for key, v in samples.items()}


def op_shares(path: Path, batch: np.ndarray, threads: int) -> dict:
    from dat_deploy.native import ort_library_path
    from dat_deploy.profiling.ops import ort_op_profile

    profile = ort_op_profile(path, batch, runs=3, warmup=1, intra_op_threads=threads, custom_op_library=ort_library_path())
    total = profile.kernel_ms_per_run
    ops = {op.op_type: op.ms_per_run for op in profile.ops}
    int8_ms = sum(ms for op, ms in ops.items() if op in INT8_MATRIX_OPS)
    qdq_ms = sum(ms for op, ms in ops.items() if op in QDQ_OPS)
    fp32_matrix = sum(ms for op, ms in ops.items() if op in {"Gemm", "FusedGemm", "DATGemm", "MatMul", "FusedMatMul", "Conv", "FusedConv"})
    return {"kernel_ms": total, "int8_matrix_ms": int8_ms, "qdq_ms": qdq_ms, "fp32_matrix_ms": fp32_matrix,
            "top": sorted(ops.items(), key=lambda kv: -kv[1])[:10]}


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    from dat_deploy.model import get_variant
    from dat_deploy.profiling.contention import ContentionMeter
    from dat_deploy.quantize.cpu_int8 import int8_path

    torch.set_num_threads(args.threads)
    log = lambda msg: print(f"[bench_int8] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    variants = [v for v in args.variants.split(",") if v]
    batches = sorted({int(b) for b in args.batch.split(",")})
    tmp = None
    if args.work is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench-int8-")
        args.work = Path(tmp.name)
    cases, inputs, paths = {}, {}, {}
    for variant in variants:
        size = get_variant(variant).input_size
        for name, (run, path) in prepare(variant, args.work, args, log).items():
            paths[(variant, name)] = path
            for b in batches:
                cases[(variant, name, b)] = run
                inputs.setdefault(b, np.random.default_rng(0).standard_normal((b, 3, size, size), dtype=np.float32))
    log(f"timing {len(cases)} cases, {args.iters} interleaved rounds, {args.threads} threads")
    with ContentionMeter() as meter:
        results = timed_loop(cases, inputs, args.iters, args.warmup)
    contention = (f"other processes used {meter.result.others_share:.0%} of the {meter.result.cores} cores "
                  f"over {meter.result.wall_s:.0f} s")
    shares = {}
    for variant in variants:
        for name in ("ort-int8", "ort-plugin"):
            path = paths.get((variant, name))
            if path is not None:
                log(f"op profile: {variant} {name} batch {max(batches)}")
                shares[(variant, name)] = op_shares(path, inputs[max(batches)], args.threads)
    saturation = {}
    for variant in variants:
        if (variant, "ort-int8") in paths:
            log(f"emulating U8S8 saturation (CPUs without VNNI) on {variant}'s int8 layers")
            saturation[variant] = saturation_summary(variant, paths[(variant, "ort-plugin")], paths[(variant, "ort-int8")])
    report = render(args, variants, batches, results, shares, int8_path(), contention, saturation)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    info = int8_path()
    machine = re.sub(r"[^a-z0-9]+", "_", f"{info['cpu']} {info['path']}".lower()).strip("_")
    out = args.output or Path(__file__).parent / "results" / f"{stamp}-{machine}-int8.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(report)
    print(report)
    log(f"wrote {out}")
    return 0


def saturation_summary(variant: str, float_path: Path, int8_path_: Path) -> dict:
    from dat_deploy.model import get_variant
    from dat_deploy.native import ort_library_path
    from dat_deploy.quantize.images import held_out_images
    from dat_deploy.quantize.saturation import saturation_report

    spec = get_variant(variant)
    prep = {"input_size": spec.input_size, "resize_size": spec.resize_size, "mean": spec.mean, "std": spec.std}
    layers = saturation_report(float_path, int8_path_, held_out_images(2, prep), ort_library_path())
    shares = np.array([layer["saturating_pairs"] for layer in layers])
    sqnr = np.array([layer["sqnr_db"] for layer in layers])
    return {"layers": len(layers), "mean_share": float(shares.mean()), "max_share": float(shares.max()),
            "min_sqnr": float(sqnr.min()), "median_sqnr": float(np.median(sqnr)),
            "affected": int(np.sum(shares > 0))}


def render(args, variants, batches, results, shares, path_info, contention, saturation=None) -> str:
    lines = [f"# int8 on the CPU ({datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC)", "",
             f"CPU: {path_info['cpu']}; MLAS int8 path: **{path_info['path']}** (U8S8 overflow possible: "
             f"{path_info['u8s8_overflow']}); {args.threads} threads; median of {args.iters} interleaved rounds; "
             "seeded random weights; int8 calibrated on the default set "
             f"({args.images} images).", ""]
    if contention:
        lines += [f"Machine load during the run: {contention}", ""]
    lines += ["| variant | batch | backend | median ms | min ms | vs ort-plugin fp32 | vs PyTorch eager |",
              "|---|---|---|---|---|---|---|"]
    for variant in variants:
        for b in batches:
            plugin = results.get((variant, "ort-plugin", b), {}).get("median")
            eager = results.get((variant, "torch", b), {}).get("median")
            for (v, name, bb), r in results.items():
                if v != variant or bb != b:
                    continue
                lines.append(f"| {variant} | {b} | {name} | {r['median']:.1f} | {r['min']:.1f} | "
                             f"{plugin / r['median']:.2f}x | " + (f"{eager / r['median']:.2f}x |" if eager else "- |"))
    lines += ["", f"Goals at batch {args.goal_batch}: int8 >= {args.goal_fp32}x our fp32 plugin flavour, >= "
              f"{args.goal_eager}x PyTorch eager.", ""]
    for variant in variants:
        key = (variant, "ort-int8", args.goal_batch)
        if key not in results:
            continue
        int8 = results[key]["median"]
        plugin = results[(variant, "ort-plugin", args.goal_batch)]["median"]
        eager = results.get((variant, "torch", args.goal_batch), {}).get("median")
        share = shares.get((variant, "ort-int8"))
        lines.append(f"- {variant}: {plugin / int8:.2f}x fp32 plugin ({'met' if plugin / int8 >= args.goal_fp32 else 'missed'})"
                     + (f", {eager / int8:.2f}x eager ({'met' if eager / int8 >= args.goal_eager else 'missed'})" if eager else ""))
        if share:
            rest = share["kernel_ms"] - share["int8_matrix_ms"]
            lines.append(f"  - int8 op profile (batch {max(batches)}): kernels {share['kernel_ms']:.1f} ms, int8 matrix "
                         f"products {share['int8_matrix_ms']:.1f} ms ({share['int8_matrix_ms'] / share['kernel_ms']:.0%}), "
                         f"Q/DQ {share['qdq_ms']:.1f} ms ({share['qdq_ms'] / share['kernel_ms']:.0%}), fp32 matrix products "
                         f"left {share['fp32_matrix_ms']:.1f} ms, everything else {rest - share['qdq_ms'] - share['fp32_matrix_ms']:.1f} ms")
            matrix_share = share["int8_matrix_ms"] / share["kernel_ms"]
            lines.append(f"  - ceiling: were the int8 matrix products free, int8 would take {1 - matrix_share:.0%} of its "
                         f"{int8:.1f} ms: at most {plugin / (int8 * (1 - matrix_share)):.2f}x the fp32 plugin flavour"
                         + (f", {eager / (int8 * (1 - matrix_share)):.2f}x eager" if eager else "")
                         + " (the profile's shares applied to the interleaved medians)")
            lines.append("  - top ops: " + ", ".join(f"{op} {ms:.1f} ms" for op, ms in share["top"]))
    if saturation:
        lines += ["", "U8S8 saturation, emulated (VPMADDUBSW's int16 pair sums) on each int8 Gemm's real activations "
                  "(2 held-out photos): what a CPU without VNNI would add with full-range 8-bit weights"]
        for variant, sat in saturation.items():
            lines.append(f"- {variant}: {sat['affected']} of {sat['layers']} layers saturate somewhere; pair sums "
                         f"saturating: mean {sat['mean_share']:.1e}, max {sat['max_share']:.1e}; the layer output's "
                         f"SQNR against the exact product: min {sat['min_sqnr']:.1f} dB, median {sat['median_sqnr']:.1f} dB")
    lines += ["", "The machine is shared: other jobs inflate every number alike within one interleaved run, but ratios "
              "between runs at different times can differ by 10-20%."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
