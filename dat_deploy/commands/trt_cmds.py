"""CLI commands: `build-trt` (TensorRT engine + Triton folder) and `convert-fp16` (fp16 ONNX graph)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from dat_deploy.commands._app import app


def _print_summary(console: Console, summary: dict) -> None:
    table = Table(title="fp16 graph: nodes by compute precision")
    table.add_column("op type")
    table.add_column("fp16", justify="right")
    table.add_column("fp32", justify="right")
    for op in sorted(set(summary["fp16_nodes"]) | set(summary["fp32_nodes"])):
        table.add_row(op, str(summary["fp16_nodes"].get(op, "")), str(summary["fp32_nodes"].get(op, "")))
    console.print(table)
    casts = summary["casts"]
    console.print(
        f"casts: {casts['to_fp16']} to fp16, {casts['to_fp32']} to fp32 (island boundaries only); "
        f"initializers: {summary['initializers']['fp16']} fp16, {summary['initializers']['fp32']} fp32; "
        f"inputs {summary['inputs']}, outputs {summary['outputs']}",
        highlight=False,
    )


@app.command("convert-fp16")
def convert_fp16_command(
    onnx_path: Path = typer.Argument(..., help="fp32 ONNX graph (standard or plugin flavour), or its model folder."),
    output: Path = typer.Option(..., "--output", "-o", help="Where to write the fp16 graph."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace OUTPUT if it exists."),
) -> None:
    """Convert an ONNX graph to fp16 with fp32 islands (norms, softmax, sampling coordinates, logits).

    Inputs and outputs stay fp32; onnxruntime runs the result, and TensorRT builds it strongly typed.
    """
    from dat_deploy.graph.fp16 import convert_file

    console = Console()
    summary = convert_file(onnx_path, output, overwrite=overwrite).as_dict()
    console.print(f"wrote {output}", highlight=False)
    _print_summary(console, summary)


@app.command("build-trt")
def build_trt_command(
    onnx_path: Optional[Path] = typer.Argument(
        None, help="ONNX export (file or model folder) to build. Default: the most recent export of the chosen flavour in --output."
    ),
    fp16: bool = typer.Option(False, "--fp16", help="fp16 engine: convert the graph to fp16 with fp32 islands first."),
    int8: bool = typer.Option(False, "--int8", help="Require an int8 Q/DQ graph (`dat-deploy quantize --target tensorrt`); "
                              "one is detected and built strongly typed without this flag too."),
    min_batch: int = typer.Option(1, "--min-batch", min=1, help="Smallest batch of the optimisation profile."),
    opt_batch: int = typer.Option(8, "--opt-batch", min=1, help="Batch TensorRT tunes for."),
    max_batch: int = typer.Option(32, "--max-batch", min=1, help="Largest batch (also Triton's max_batch_size)."),
    workspace: Optional[float] = typer.Option(None, "--workspace", min=0.0625, help="Builder workspace limit, GB."),
    timing_cache: Optional[Path] = typer.Option(
        None, "--timing-cache", help="Timing cache to load and update (default: ~/.cache/dat-deploy/, per version)."
    ),
    plugin_lib: Optional[Path] = typer.Option(
        None, "--plugin-lib", help="DAT TensorRT plugin library (default: the one dat-deploy built)."
    ),
    flavor: str = typer.Option(
        "plugin", "--flavor", help="plugin: our DAT plugin nodes; native: TensorRT's GridSample (opset <= 19)."
    ),
    output: Path = typer.Option(Path("models"), "--output", "-o", help="Model repository to write into."),
    name: Optional[str] = typer.Option(None, "--name", help="Model name (default: the source's); folder <name>_trt_<precision>."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing engine folder's files."),
    no_progress: bool = typer.Option(False, "--no-progress", help="No progress display while building."),
    verbose: bool = typer.Option(False, "--verbose", help="TensorRT's INFO log."),
) -> None:
    """Build a TensorRT engine for Triton: models/<name>_trt_<precision>/1/model.plan + config.pbtxt + sidecar."""
    from dat_deploy.trt.build import BuildOptions, build_trt

    console = Console(stderr=True)
    options = BuildOptions(
        onnx=onnx_path,
        fp16=fp16,
        int8=int8,
        min_batch=min_batch,
        opt_batch=opt_batch,
        max_batch=max_batch,
        workspace_gb=workspace,
        timing_cache=timing_cache,
        plugin_lib=plugin_lib,
        flavor=flavor,
        output=output,
        name=name,
        overwrite=overwrite,
        show_progress=not no_progress,
        verbose=verbose,
    )
    result = build_trt(options, log=lambda message: console.print(message, highlight=False))
    sidecar = result.sidecar
    console.print(
        f"[bold green]built[/] {result.folder.plan}: TensorRT {sidecar['tensorrt_version']} on {sidecar['gpu']} "
        f"(sm {sidecar['compute_capability']}), {sidecar['precision']}, {sidecar['flavor']} flavour, "
        f"{sidecar['build_seconds']:.1f} s",
        highlight=False,
    )
