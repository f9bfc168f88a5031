"""`dat-deploy profile` as one library call: build backends, time them interleaved, report, plot."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from dat_deploy.artifacts import ONNX_SUFFIXES, open_artifact
from dat_deploy.errors import UserError
from dat_deploy.profiling.backends import BackendFactory, PreparedBackend, given_model, make_inputs
from dat_deploy.profiling.contention import ContentionMeter
from dat_deploy.profiling.memory import PeakRss
from dat_deploy.profiling.stats import DEFAULT_CV_WARN

OPS_RUNS = 10


@dataclass
class ProfileOptions:
    variant: str = "dat_t"
    backends: Sequence[str] = ("torch", "ort")
    batches: Sequence[int] = (1, 8)
    weights: Path | None = None
    warmup: int = 3
    iters: int | None = 20
    duration_s: float | None = None
    threads: int | None = None
    output: Path | None = None
    ops: bool = False
    onnx: Path | None = None
    engine: Path | None = None
    cv_warn: float = DEFAULT_CV_WARN
    plots: bool = True
    cache_dir: Path | None = None
    strict: bool = True  # False: a backend that cannot be built is skipped with a note
    extra_notes: list[str] = field(default_factory=list)


def default_output_dir(variant: str) -> Path:
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    return Path("reports") / f"profile-{variant}-{stamp}"


def input_size_for(options: ProfileOptions) -> int:
    from dat_deploy.model import get_variant

    return get_variant(options.variant).input_size


def profile(options: ProfileOptions, console=None) -> tuple[dict, dict[str, Path]]:
    """Run the whole profile; returns the report dict and the files written."""
    from rich.console import Console

    from dat_deploy.atomic import ensure_writable_dir
    from dat_deploy.profiling import report as report_mod
    from dat_deploy.profiling.runner import run_profile

    console = console or Console(stderr=True)
    if (options.iters is None) == (options.duration_s is None):
        raise UserError("give either --iters or --duration, not both.")
    if options.iters is not None and options.iters < 1:
        raise UserError(f"--iters {options.iters} must be at least 1.")
    if options.duration_s is not None and options.duration_s <= 0:
        raise UserError(f"--duration {options.duration_s} must be positive.")
    if options.warmup < 0:
        raise UserError(f"--warmup {options.warmup} must be 0 or more.")
    if options.threads is not None and options.threads < 1:
        raise UserError(f"--threads {options.threads} must be at least 1.")
    output = Path(options.output) if options.output is not None else default_output_dir(options.variant)
    for name in ("profile.json", "profile.csv", "throughput.png", "latency.png"):
        if (output / name).exists():
            raise UserError(f"{output / name} already exists. Choose another --output folder.")
    _check_can_create(output)  # the folder itself is made only when there is something to write

    notes = list(options.extra_notes)
    if options.onnx is not None:
        meta = open_artifact(given_model("--onnx", options.onnx, ONNX_SUFFIXES)).metadata
        if meta.get("variant") and meta["variant"] != options.variant:
            raise UserError(f"--onnx {options.onnx} was exported from {meta['variant']!r}, not --variant "
                            f"{options.variant!r}. Pass --variant {meta['variant']}.")
    if options.threads is not None:
        import torch

        torch.set_num_threads(options.threads)
    if options.weights is None and any(b in ("torch", "torch-compile", "ort", "ort-plugin") for b in options.backends):
        from dat_deploy.model import RANDOM_WEIGHTS_NOTICE
        from dat_deploy.model.seeded_init import DEFAULT_SEED

        notes.append(RANDOM_WEIGHTS_NOTICE.format(seed=DEFAULT_SEED) + " (latency does not depend on it)")

    input_size = input_size_for(options)
    inputs = make_inputs(options.batches, input_size)
    factory = BackendFactory(
        options.variant, weights=options.weights, threads=options.threads, onnx=options.onnx,
        engine=options.engine, cache_dir=options.cache_dir, log=lambda m: console.print(f"[dim]{m}[/]", highlight=False),
    )
    prepared: dict[str, PreparedBackend] = {}
    for name in options.backends:
        with console.status(f"preparing backend {name} ..."):
            try:
                prepared[name] = factory.prepare(name, inputs)
            except UserError as exc:
                if options.strict:
                    raise
                notes.append(f"backend {name} skipped: {exc}")
                console.print(f"[yellow]backend {name} skipped:[/] {exc}", highlight=False)
            except Exception as exc:  # torch.compile and exporters fail in many ways; keep the others
                if options.strict:
                    raise
                notes.append(f"backend {name} failed to build and was skipped: {type(exc).__name__}: {exc}")
                console.print(f"[yellow]backend {name} failed:[/] {type(exc).__name__}: {exc}", highlight=False)
    if not prepared:
        raise UserError("no backend could be prepared; see the messages above.")

    env = report_mod.environment()
    with ContentionMeter() as meter:
        results = _timed_run(prepared, options, inputs, console, run_profile)
    ops = _op_profiles(prepared, options, inputs, console) if options.ops else None
    settings = {
        "backends": list(prepared),
        "batches": list(options.batches),
        "warmup": options.warmup,
        "iters": options.iters,
        "duration_s": options.duration_s,
        "threads": options.threads,
        "weights": None if options.weights is None else str(options.weights),
        "input": f"seeded standard-normal float32 NCHW, {input_size}x{input_size}",
        "rss_method": PeakRss().method,
    }
    report = report_mod.build_report(
        results, variant=options.variant, input_size=input_size, settings=settings,
        backends=[p.info() for p in prepared.values()], baseline=next(iter(prepared)),
        cv_warn=options.cv_warn, ops=ops, notes=notes, env=env, contention=meter.result.as_dict(),
    )
    ensure_writable_dir(output)
    files = report_mod.write_report_files(report, output)
    if options.plots:
        from dat_deploy.profiling.plots import plot_latency, plot_throughput

        files["throughput_png"] = plot_throughput(report, output / "throughput.png")
        files["latency_png"] = plot_latency(report, output / "latency.png")
    return report, files


def _check_can_create(folder: Path) -> None:
    """Fail before minutes of timing, not after, when the report could not be written."""
    import os

    existing = Path(folder).absolute()
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write the report to {folder}: {existing} is not a writable folder. Choose another --output.")


def _timed_run(prepared, options: ProfileOptions, inputs, console, run_profile):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=False) as progress:
        n_cases = len(prepared) * len(options.batches)
        warm = progress.add_task("warmup", total=options.warmup * n_cases, visible=options.warmup > 0)
        timed = progress.add_task("timed", total=None if options.iters is None else options.iters * n_cases)

        def on_step(phase, case, done, total):
            task = warm if phase == "warmup" else timed
            progress.update(task, completed=done, description=f"{phase}: {case.backend} @ batch {case.batch}")

        return run_profile(
            {name: p.backend for name, p in prepared.items()}, options.batches, inputs,
            warmup=options.warmup, iters=options.iters, duration_s=options.duration_s, on_step=on_step,
        )


def _op_profiles(prepared, options: ProfileOptions, inputs, console) -> dict:
    """Per-op breakdowns after the timed runs, so that profiling never perturbs the timings."""
    from dat_deploy.profiling.ops import ort_op_profile, trt_layer_profile

    ops = {}
    for name, p in prepared.items():
        for batch_size in options.batches:
            key = f"{name} @ batch {batch_size}"
            with console.status(f"op profile: {key} ..."):
                if p.onnx_path is not None:
                    prof = ort_op_profile(p.onnx_path, inputs[batch_size], runs=OPS_RUNS, warmup=1,
                                          intra_op_threads=options.threads,
                                          custom_op_library=_custom_op_library(p))
                elif name == "trt":
                    prof = trt_layer_profile(p.backend, inputs[batch_size], runs=OPS_RUNS)
                else:
                    prof = None  # PyTorch backends: no per-op profile here
            if prof is not None:
                ops[key] = prof.as_dict()
    return ops


def _custom_op_library(p: PreparedBackend) -> Path | None:
    """The custom-op library the plugin-flavour backend loaded, if any."""
    library = getattr(p.backend, "plugin_library", None)
    return Path(library) if library else None
