"""CLI commands: profile."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dat_deploy.commands._app import app


@app.command("profile")
def profile_command(
    variant: str = typer.Option("dat_t", "--variant", "-v", help="Model variant, e.g. dat_t, dat_pp_t."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Checkpoint (.pth/.safetensors); default: seeded random weights."),
    backend: str = typer.Option("torch,ort", "--backend", "-b", help="Comma-separated: torch, torch-compile (opt-in, compiles for minutes), ort, ort-plugin, ort-official (the plain export: standard flavour, official layout), trt."),
    batch: str = typer.Option("1,8", "--batch", help="Comma-separated batch sizes, e.g. 1,8,32."),
    warmup: int = typer.Option(3, "--warmup", help="Untimed rounds before timing."),
    iters: Optional[int] = typer.Option(None, "--iters", help="Timed rounds (each runs every backend at every batch size). Default 20."),
    duration: Optional[float] = typer.Option(None, "--duration", help="Instead of --iters: time rounds for this many seconds in total."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for torch and onnxruntime (intra-op)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="Report folder (default reports/profile-<variant>-<timestamp>)."),
    ops: bool = typer.Option(False, "--ops", help="Also a per-op time breakdown (onnxruntime profiler, TensorRT layer profiler)."),
    onnx: Optional[Path] = typer.Option(None, "--onnx", help="Use this ONNX for ort / ort-plugin (by its flavour) instead of exporting one."),
    engine: Optional[Path] = typer.Option(None, "--engine", help="TensorRT engine for backend trt."),
    cv_warn: float = typer.Option(0.10, "--cv-warn", help="Warn when a case's coefficient of variation exceeds this fraction."),
) -> None:
    """Latency percentiles and throughput for every backend at every batch size, interleaved.

    Writes profile.json, profile.csv, throughput.png and latency.png and prints a trtexec-like summary.
    """
    from rich.console import Console

    from dat_deploy.errors import UserError
    from dat_deploy.commands.common import parse_batch_list
    from dat_deploy.profiling.backends import parse_backend_list
    from dat_deploy.profiling.pipeline import ProfileOptions, profile
    from dat_deploy.profiling.report import render_summary

    if iters is not None and duration is not None:
        raise UserError("give either --iters or --duration, not both.")
    options = ProfileOptions(
        variant=variant,
        backends=parse_backend_list(backend),
        batches=parse_batch_list(batch),
        weights=weights,
        warmup=warmup,
        iters=iters if duration is None else None,
        duration_s=duration,
        threads=threads,
        output=output,
        ops=ops,
        onnx=onnx,
        engine=engine,
        cv_warn=cv_warn,
    )
    if options.iters is None and options.duration_s is None:
        options.iters = 20
    console = Console()
    report, files = profile(options, console=Console(stderr=True))
    render_summary(report, console)
    folder = Path(files["json"]).parent
    console.print(f"wrote {', '.join(Path(p).name for p in files.values())} to {folder}", highlight=False)
