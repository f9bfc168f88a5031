"""Backend comparison for the README: PyTorch eager vs torch.compile vs onnxruntime (standard and plugin).

    python benchmarks/bench_backends.py                       # dat_t and dat_pp_t at batch 1 and 8
    python benchmarks/bench_backends.py --compile             # also torch.compile (minutes per variant)
    python benchmarks/bench_backends.py --iters 20 --ops      # longer, plus per-op shares from ORT
    python benchmarks/bench_backends.py --goal torch=1.5 --goal ort-official=2   # judge ort-plugin against goals

Every (variant, backend, batch) case runs in one interleaved loop, so a drift of the machine hits
all of them alike; ratios are against PyTorch eager of the same variant and batch, measured in
the same run. Backends that cannot be built here (no plugin library yet, torch.compile failing)
are skipped with a note instead of stopping the comparison. Writes, under reports/bench-backends-<time>/:
bench.json (every case, raw samples), bench.csv, bench.md (the tables below), throughput.png and
one profile.json/profile.csv per variant (the `dat-deploy profile` schema).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console

from dat_deploy.atomic import ensure_writable_dir, write_text
from dat_deploy.profiling import report as report_mod
from dat_deploy.profiling.backends import BackendFactory, make_inputs
from dat_deploy.profiling.contention import ContentionMeter
from dat_deploy.profiling.ops import ort_op_profile
from dat_deploy.profiling.plots import plot_latency, plot_throughput, pyplot, save_figure
from dat_deploy.profiling.runner import run_profile

from ceiling import SpeedCeiling, describe_ceiling, sgemm_rate_gmac_s, speed_ceiling  # benchmarks/ceiling.py
from goals import goal_type  # benchmarks/goals.py

SEP = "/"  # case names in the combined loop: "<variant>/<backend>"


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="dat_t,dat_pp_t")
    parser.add_argument("--batch", default="1,8")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=8)
    parser.add_argument("--duration", type=float, default=None,
                        help="instead of --iters: timed rounds until this many seconds have passed (at least one)")
    parser.add_argument("--threads", type=int, default=None, help="torch and ORT intra-op threads (default: their own)")
    parser.add_argument("--compile", action="store_true", help="also torch.compile (2.5-8 min per variant and batch on 2 cores)")
    parser.add_argument("--no-plugin", action="store_true", help="leave out ort-plugin")
    parser.add_argument("--no-official", action="store_true",
                        help="leave out ort-official (the standard flavour traced from the official forward)")
    parser.add_argument("--ops", action="store_true",
                        help="per-op shares from onnxruntime's profiler after the timed run, and the plugin "
                             "flavour's ceiling (its matrix products' time, with every other op free)")
    parser.add_argument("--goal", action="append", default=[], metavar="BASELINE=RATIO",
                        type=goal_type("BASELINE", "torch=1.5"),
                        help="a speed goal for ort-plugin at the largest batch: at least RATIO times faster (by mean "
                             "latency) than BASELINE in the same loop, e.g. --goal torch=1.5 --goal ort-official=2; "
                             "repeatable. Each goal gets a met / NOT met line, and with --ops the time it leaves the "
                             "non-matrix ops")
    parser.add_argument("--output", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    goals = dict(args.goal)
    console = Console(stderr=True)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    batches = sorted({int(b) for b in args.batch.split(",")})
    backend_names = (["torch"] + (["torch-compile"] if args.compile else []) + ([] if args.no_official else ["ort-official"])
                     + ["ort"] + ([] if args.no_plugin else ["ort-plugin"]))
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    output = ensure_writable_dir(args.output or Path("reports") / f"bench-backends-{stamp}")
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    from dat_deploy.model import get_variant

    common_notes = ["weights: seeded random initialisation (latency does not depend on the values)"]
    notes: dict[str, list[str]] = {v: [] for v in variants}
    prepared = {}  # "<variant>/<backend>" -> PreparedBackend
    inputs_by_size = {}
    for variant in variants:
        size = get_variant(variant).input_size
        inputs_by_size.setdefault(size, make_inputs(batches, size))
        factory = BackendFactory(variant, threads=args.threads, log=lambda m: console.print(f"[dim]{m}[/]"))
        for name in backend_names:
            start = time.perf_counter()
            with console.status(f"preparing {variant} {name} ..."):
                try:
                    prepared[f"{variant}{SEP}{name}"] = factory.prepare(name, inputs_by_size[size])
                except Exception as exc:  # UserError or a failing compile/export: keep comparing what works
                    note = f"{variant} {name}: not measured ({type(exc).__name__}: {exc})"
                    notes[variant].append(note)
                    console.print(f"[yellow]{note}[/]")
                    continue
            console.print(f"prepared {variant} {name} in {time.perf_counter() - start:.1f} s")

    sizes = {key: get_variant(key.split(SEP)[0]).input_size for key in prepared}
    if len(set(sizes.values())) > 1:
        raise SystemExit("variants with different input sizes cannot share one loop; run them separately")
    inputs = inputs_by_size[next(iter(sizes.values()))]

    rounds = f"{args.duration:.0f} s of" if args.duration else str(args.iters)
    console.print(f"timing {len(prepared)} backends x {len(batches)} batch sizes, warmup {args.warmup}, "
                  f"{rounds} interleaved rounds")
    started = time.perf_counter()
    per_round = len(prepared) * len(batches)

    def on_step(phase, case, done, total):
        if done % per_round == 0:
            of = f" of {total // per_round}" if total else ""
            console.print(f"[dim]{phase}: round {done // per_round}{of} done, "
                          f"{time.perf_counter() - started:.0f} s[/]", highlight=False)

    env = report_mod.environment()
    with ContentionMeter() as meter:
        results = run_profile({k: p.backend for k, p in prepared.items()}, batches, inputs,
                              warmup=args.warmup, iters=None if args.duration else args.iters,
                              duration_s=args.duration, on_step=on_step)
    loop_s = time.perf_counter() - started
    contention = meter.result.as_dict()
    machine_gmac_s = None
    if args.ops:
        with console.status("measuring this machine's SGEMM rate through onnxruntime ..."):
            machine_gmac_s = sgemm_rate_gmac_s(threads=args.threads)
    reports = {}
    for variant in variants:
        keys = [k for k in prepared if k.split(SEP)[0] == variant]
        if not keys:
            continue
        mine = [r for r in results if r.backend in keys]
        for r in mine:
            r.backend = r.backend.split(SEP, 1)[1]
        ops = None
        if args.ops:
            ops = {}
            for key in keys:
                p = prepared[key]
                if p.onnx_path is None:
                    continue
                for b in batches:
                    lib = getattr(p.backend, "plugin_library", None)
                    ops[f"{p.name} @ batch {b}"] = ort_op_profile(p.onnx_path, inputs[b], runs=3, warmup=1,
                                                                  intra_op_threads=args.threads,
                                                                  custom_op_library=lib).as_dict()
        reports[variant] = report_mod.build_report(
            mine, variant=variant, input_size=sizes[keys[0]],
            settings={"warmup": args.warmup, "iters": None if args.duration else args.iters,
                      "duration_s": args.duration, "threads": args.threads, "batches": batches,
                      "loop_s": loop_s, "combined_loop": [k for k in prepared]},
            backends=[prepared[k].info() for k in keys], baseline="torch", ops=ops,
            notes=common_notes + notes[variant], env=env, contention=contention,
        )
        ceiling = plugin_ceiling(reports[variant], machine_gmac_s, goals)
        if ceiling is not None:
            reports[variant]["ceiling"] = ceiling.as_dict()
        folder = ensure_writable_dir(output / variant)
        report_mod.write_report_files(reports[variant], folder)
        plot_throughput(reports[variant], folder / "throughput.png")
        plot_latency(reports[variant], folder / "latency.png")

    markdown = render_markdown(reports, env, loop_s, contention, goals)
    write_text(output / "bench.md", markdown)
    write_text(output / "bench.json", json.dumps({"reports": reports, "notes": notes}, indent=2, allow_nan=False) + "\n")
    write_text(output / "bench.csv", "".join(
        _prefix_csv(report_mod.to_csv(rep), variant, first=i == 0) for i, (variant, rep) in enumerate(reports.items())))
    plot_combined(reports, output / "throughput.png")
    Console().print(markdown, markup=False, highlight=False)
    for variant, rep in reports.items():
        for w in rep["warnings"]:
            console.print(f"[yellow][W] {variant}: {w}[/]")
    console.print(f"wrote {output}")
    return 0


def _prefix_csv(text: str, variant: str, first: bool) -> str:
    lines = text.splitlines()
    out = (["variant," + lines[0]] if first else []) + [f"{variant},{line}" for line in lines[1:]]
    return "\n".join(out) + "\n"


PLAIN_EXPORT = "ort-official"  # the standard flavour as a hand-written export gets it


def mean_latencies(rep: dict) -> dict[tuple[str, int], float]:
    """(backend, batch) -> mean latency in ms, from one report's results."""
    return {(r["backend"], r["batch"]): r["latency_ms"]["mean"] for r in rep["results"]}


def speedup(rep: dict, baseline: str, backend: str, batch: int) -> float | None:
    """Mean latency of `baseline` over that of `backend` at `batch`, from the same loop (None if either is missing)."""
    means = mean_latencies(rep)
    if (baseline, batch) not in means or (backend, batch) not in means:
        return None
    return means[(baseline, batch)] / means[(backend, batch)]


def goal_summary(variant: str, rep: dict, goals: dict[str, float]) -> list[str]:
    batch = max(r["batch"] for r in rep["results"])
    lines = []
    for baseline, goal in goals.items():
        ratio = speedup(rep, baseline, "ort-plugin", batch)
        if ratio is not None:
            verdict = "met" if ratio >= goal else "NOT met"
            lines.append(f"- {variant} batch {batch}: ort-plugin {ratio:.2f}x {baseline} (goal {goal}x): {verdict}")
    return lines


def plugin_ceiling(rep: dict, machine_gmac_s: float | None, goals: dict[str, float]):
    """ort-plugin's floor at the largest batch against PyTorch eager, the plain export and every goal's
    baseline, or None without its op profile."""
    batch = max(r["batch"] for r in rep["results"])
    profile = (rep.get("ops") or {}).get(f"ort-plugin @ batch {batch}")
    means = mean_latencies(rep)
    if profile is None or ("ort-plugin", batch) not in means:
        return None
    baselines = dict.fromkeys(["torch", PLAIN_EXPORT, *goals])
    targets = {name: (means[(name, batch)], goals.get(name)) for name in baselines if (name, batch) in means}
    return speed_ceiling("ort-plugin", batch, means[("ort-plugin", batch)], profile, targets, machine_gmac_s)


def render_markdown(reports: dict, env: dict, loop_s: float, contention: dict, goals: dict[str, float]) -> str:
    """The README table: mean and median latency, images/s, speedup vs PyTorch eager, CV."""
    lines = [
        f"Machine: {env['cpu']}, {env['cpu_affinity'] or env['cpu_count_logical']} cores available, "
        f"{env['memory_gb']} GiB; torch {env['torch']}, onnxruntime {env['onnxruntime']}; "
        f"fp32, seeded random weights; one interleaved loop of {loop_s:.0f} s during which other processes "
        f"used {contention['others_share']:.0%} of the CPU.",
        "",
        "| variant | backend | batch | mean ms | median ms | p90 ms | images/s | vs PyTorch eager | vs plain export | CV |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def shown(ratio: float | None) -> str:
        return "-" if ratio is None else f"{ratio:.2f}x"

    for variant, rep in reports.items():
        for row in rep["results"]:
            lat = row["latency_ms"]
            lines.append(
                f"| {variant} | {row['backend']} | {row['batch']} | {lat['mean']:.1f} | {lat['median']:.1f} | "
                f"{lat['p90']:.1f} | {row['throughput_ips']:.2f} | {shown(row['speedup_vs_baseline'])} | "
                f"{shown(speedup(rep, PLAIN_EXPORT, row['backend'], row['batch']))} | {lat['cv']:.1%} |"
            )
    goal_lines = [line for variant, rep in reports.items() for line in goal_summary(variant, rep, goals)]
    if goal_lines:
        wanted = " and ".join(f">= {ratio:g}x {name}" for name, ratio in goals.items())
        lines += ["", f"Speed goals (largest batch, given with --goal): plugin flavour {wanted}:", *goal_lines]
    ceiling_lines = [describe_ceiling(variant, SpeedCeiling(**rep["ceiling"]))
                     for variant, rep in reports.items() if rep.get("ceiling")]
    if ceiling_lines:
        lines += ["", "Ceiling (from the op profile after the timed loop; the matrix products run through onnxruntime's "
                      "GEMMs and our DATGemm, so their time is a floor for this graph as it runs now; the SGEMM rate is "
                      "onnxruntime's, not the core's FMA peak):", *ceiling_lines]
    compile_lines = [
        f"- {variant} {b['name']}: compile {', '.join(f'batch {k}: {v:.0f} s' for k, v in b['compile_s'].items())}"
        for variant, rep in reports.items() for b in rep["backends"] if b.get("compile_s")
    ]
    if compile_lines:
        lines += ["", "torch.compile time (not in the latencies):", *compile_lines]
    op_lines = [
        f"- {variant} {key}: sampling ops {prof['sampling_share']:.1%} of kernel time; top: "
        + ", ".join("{} {:.1%}".format(o["op_type"], o["share"]) for o in prof["ops"][:4])
        for variant, rep in reports.items() for key, prof in (rep.get("ops") or {}).items()
    ]
    if op_lines:
        lines += ["", "onnxruntime op shares:", *op_lines]
    skipped = sorted({n for rep in reports.values() for n in rep["notes"] if "not measured" in n})
    if skipped:
        lines += ["", *(f"- {n}" for n in skipped)]
    return "\n".join(lines) + "\n"


def plot_combined(reports: dict, path: Path) -> Path:
    """images/s against batch size, one panel per variant."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(reports), figsize=(5.2 * len(reports), 4.2), dpi=120, squeeze=False)
    for ax, (variant, rep) in zip(axes[0], reports.items()):
        batches = sorted({r["batch"] for r in rep["results"]})
        for name in dict.fromkeys(r["backend"] for r in rep["results"]):
            rows = sorted((r for r in rep["results"] if r["backend"] == name), key=lambda r: r["batch"])
            ax.plot([r["batch"] for r in rows], [r["throughput_ips"] for r in rows], marker="o", label=name)
        if len(batches) > 1:
            ax.set_xscale("log", base=2)
        ax.set_xticks(batches, [str(b) for b in batches])
        ax.set_ylim(bottom=0)
        ax.set_xlabel("batch size")
        ax.set_ylabel("images / s")
        ax.set_title(variant)
        ax.grid(True, alpha=0.3)
        ax.legend()
    fig.suptitle("CPU throughput (fp32), higher is better")
    return save_figure(fig, plt, path, overwrite=False)


if __name__ == "__main__":
    sys.exit(main())
