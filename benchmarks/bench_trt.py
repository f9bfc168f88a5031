"""GPU benchmark: the fp16 plugin engine vs the fp16 native-GridSample engine vs PyTorch fp16 eager.

    python benchmarks/bench_trt.py                         # dat_t, batch 1/8/32
    python benchmarks/bench_trt.py --variants dat_t,dat_pp_t --iters 100
    python benchmarks/bench_trt.py --goal torch-fp16-eager=3 --goal trt-native-fp16=1   # judge the plugin engine

For each variant: exports the standard and plugin flavours (opset 18), builds both fp16 engines
(profile 1/8/32, build times recorded), checks them against PyTorch fp32 with the comparator of
`dat-deploy validate` (dat_deploy/parity/compare.py, fp16 tolerances: max abs, cosine, top-1
agreement, PASSED/FAILED at batch 1 and the largest batch), then times all backends in one
interleaved loop per batch size on device-resident inputs (GPU time, what trtexec calls GPU
Compute), plus the engines end to end from host memory (H2D + compute + D2H). Ratios are of
the plugin engine's images/s over each other case's, at the largest batch, from the same run;
`--goal CASE=RATIO` marks each as met or not.

Where TensorRT or a GPU is missing it prints why and exits 0. Writes reports/bench-trt-<time>/bench.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from goals import goal_type  # benchmarks/goals.py


def skip_reason() -> str | None:
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"TensorRT is not importable ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch"
    return None


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="dat_t")
    parser.add_argument("--batch", default="1,8,32")
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--iters", type=int, default=50)
    parser.add_argument("--models", type=Path, default=Path("reports") / "bench-trt-models",
                        help="where exports and engines go (reused between runs)")
    parser.add_argument("--goal", action="append", default=[], metavar="CASE=RATIO",
                        type=goal_type("CASE", "torch-fp16-eager=3"),
                        help="a speed goal for the plugin engine at the largest batch: at least RATIO times the "
                             "images/s of CASE (torch-fp16-eager, trt-native-fp16, ...); repeatable")
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args(argv)


def parity_entry(expected, got) -> dict:
    """The fp16 verdict of `dat-deploy validate` for one batch of logits (reference: PyTorch fp32)."""
    from dat_deploy.parity.compare import TOLERANCES, compare_output

    result = compare_output("logits", expected, got, TOLERANCES["fp16"], is_logits=True)
    return {"max_abs": result.max_abs, "cosine": result.cosine, "top1_agreement": result.top1_agreement,
            "passed": result.passed, "failures": result.failures}


def plugin_ratios(row: dict, goals: dict[str, float]) -> tuple[dict[str, float], list[str]]:
    """The plugin engine's images/s over every other case's in one batch's row, and one line per goal."""
    mine = row["trt-plugin-fp16"]["images_per_s"]
    ratios = {name: mine / case["images_per_s"] for name, case in row.items() if name != "trt-plugin-fp16"}
    lines = []
    for name, goal in goals.items():
        if name not in ratios:
            lines.append(f"goal {goal:g}x {name}: no such case (cases: {', '.join(ratios)})")
        else:
            lines.append(f"plugin engine {ratios[name]:.2f}x {name} (goal {goal:g}x): "
                         f"{'met' if ratios[name] >= goal else 'NOT met'}")
    return ratios, lines


def export(variant: str, flavor: str, models: Path, log) -> Path:
    from dat_deploy.export import export_onnx

    name = f"{variant}_{flavor}_bench"
    path = models / name / "1" / "model.onnx"
    if not path.is_file():
        log(f"exporting {variant} ({flavor} flavour)")
        export_onnx(variant, output_dir=models, name=name, flavor=flavor, opset=18)
    return path


def engine(source: Path, flavor: str, models: Path, log) -> tuple[Path, float]:
    from dat_deploy.artifacts import read_sidecar
    from dat_deploy.trt.build import BuildOptions, build_trt

    name = source.parent.parent.name
    plan = models / f"{name}_trt_fp16" / "1" / "model.plan"
    if not plan.is_file():
        plugin = None
        if flavor == "plugin":
            from dat_deploy.native import trt_plugin_library_path

            plugin = trt_plugin_library_path()
        build_trt(BuildOptions(onnx=source, fp16=True, flavor=flavor, plugin_lib=plugin, output=models,
                               timing_cache=models / "timing.cache", show_progress=False), log=log)
    return plan, float(read_sidecar(plan)["build_seconds"])


def time_gpu(fn, warmup: int, iters: int) -> list[float]:
    """Milliseconds per call, measured with CUDA events around each call."""
    import torch

    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(iters):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return samples


def main(argv=None) -> int:
    args = parse_args(argv)
    reason = skip_reason()
    if reason is not None:
        print(f"bench_trt: skipped: {reason}. Run it on a machine with an NVIDIA GPU and TensorRT "
              '(pip install "dat-deploy[gpu]").')
        return 0

    import numpy as np
    import torch
    from rich.console import Console
    from rich.table import Table

    from dat_deploy.atomic import ensure_writable_dir, write_text
    from dat_deploy.model import create_model, get_variant
    from dat_deploy.parity.inputs import image_case
    from dat_deploy.runtime.tensorrt_backend import TensorRTBackend
    from dat_deploy.trt.engine_builder import device_description

    console = Console(stderr=True)
    log = lambda message: console.print(message, highlight=False)  # noqa: E731
    batches = sorted({int(b) for b in args.batch.split(",")})
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    output = ensure_writable_dir(args.output or Path("reports") / f"bench-trt-{stamp}")
    models = ensure_writable_dir(args.models)
    results = {"device": device_description(), "batches": batches, "iters": args.iters, "variants": {}}
    torch.backends.cudnn.benchmark = True

    for variant in [v.strip() for v in args.variants.split(",") if v.strip()]:
        spec = get_variant(variant)
        entry: dict = {"build_seconds": {}, "parity": {}, "throughput": {}}
        plans = {}
        for flavor, export_flavor in (("plugin", "plugin"), ("native", "standard")):
            start = time.perf_counter()
            plans[flavor], entry["build_seconds"][flavor] = engine(export(variant, export_flavor, models, log),
                                                                    flavor, models, log)
            log(f"{variant} {flavor}: engine ready ({time.perf_counter() - start:.1f} s incl. export)")
        backends = {flavor: TensorRTBackend(plan) for flavor, plan in plans.items()}
        reference = create_model(variant).cuda().eval()
        eager16 = create_model(variant).cuda().eval().half()

        for batch in sorted({1, max(batches)}):
            case = image_case(batch, spec.input_size, spec.resize_size, spec.mean, spec.std)
            with torch.no_grad():
                expected = reference(torch.from_numpy(case.batch).cuda()).float().cpu().numpy()
            for flavor, backend in backends.items():
                entry["parity"][f"{flavor} b{batch}"] = parity_entry(expected, backend.run(case.batch)["logits"])

        for batch in batches:
            host = np.random.default_rng(batch).standard_normal((batch, 3, spec.input_size, spec.input_size),
                                                                dtype=np.float32)
            device32 = torch.from_numpy(host).cuda()
            device16 = device32.half()

            def eager():
                with torch.no_grad():
                    eager16(device16)

            cases = {"torch-fp16-eager": eager}
            for flavor, backend in backends.items():
                cases[f"trt-{flavor}-fp16"] = lambda b=backend: b.run_device(device32)
                cases[f"trt-{flavor}-fp16 (host I/O)"] = lambda b=backend: b.run(host)
            for fn in cases.values():  # warm every case before any is timed
                for _ in range(args.warmup):
                    fn()
            samples = {name: [] for name in cases}
            for _ in range(args.iters):  # interleaved: a drift of the GPU clock hits every case alike
                for name, fn in cases.items():
                    samples[name] += time_gpu(fn, 0, 1)
            entry["throughput"][batch] = {
                name: {"median_ms": statistics.median(s), "p90_ms": float(np.percentile(s, 90)),
                       "images_per_s": batch / (statistics.median(s) / 1000)}
                for name, s in samples.items()
            }
        results["variants"][variant] = entry

        table = Table(title=f"{variant} on {results['device'].get('gpu')}: images/s (median latency ms)")
        table.add_column("backend")
        for batch in batches:
            table.add_column(f"batch {batch}", justify="right")
        for name in entry["throughput"][batches[0]]:
            table.add_row(name, *(f"{entry['throughput'][b][name]['images_per_s']:.0f} "
                                  f"({entry['throughput'][b][name]['median_ms']:.2f})" for b in batches))
        console.print(table)
        top = max(batches)
        ratios, goal_lines = plugin_ratios(entry["throughput"][top], dict(args.goal))
        entry["ratios"] = {f"plugin_vs_{name}_b{top}": ratio for name, ratio in ratios.items()}
        entry["goals"] = goal_lines
        console.print(f"{variant} batch {top}: plugin engine "
                      + ", ".join(f"{ratio:.2f}x {name}" for name, ratio in ratios.items())
                      + f"; build s {entry['build_seconds']}; parity {json.dumps(entry['parity'])}", highlight=False)
        for line in goal_lines:
            console.print(f"- {variant}: {line}", highlight=False)

    write_text(output / "bench.json", json.dumps(results, indent=2, default=float) + "\n")
    console.print(f"wrote {output / 'bench.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
