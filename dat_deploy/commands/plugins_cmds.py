"""CLI commands: plugins."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dat_deploy.commands._app import app


@app.command("build-plugins")
def build_plugins(
    cuda: Optional[bool] = typer.Option(
        None, "--cuda/--no-cuda", help="Build the CUDA kernels (default: when nvcc is on PATH)."
    ),
    tensorrt_include: Optional[Path] = typer.Option(
        None, "--tensorrt-include", help="Folder with NvInferRuntime.h; builds the TensorRT plugins (needs CUDA)."
    ),
    force: bool = typer.Option(False, "--force", help="Rebuild even if a cached build of these sources exists."),
) -> None:
    """Build the native plugin libraries (onnxruntime custom ops, CUDA kernels, TensorRT plugins) into the cache."""
    from rich.console import Console
    from rich.table import Table

    from dat_deploy.native import build

    console = Console()
    with console.status("building plugins (CMake)..."):
        result = build(cuda=cuda, tensorrt_include=tensorrt_include, force=force)
    how = "reused cached build" if result.cached else f"built in {result.seconds:.1f} s"
    table = Table(title=f"dat-deploy plugins ({how})", title_justify="left")
    table.add_column("target")
    table.add_column("status")
    table.add_column("library / reason", overflow="fold")
    for target in result.targets:
        status = "[green]built[/]" if target.built else "[yellow]skipped[/]"
        detail = str(target.library) if target.built else target.reason
        if target.built and target.reason:
            detail += f"\n{target.reason}"
        table.add_row(target.target, status, detail)
    console.print(table)
    console.print(f"build folder: {result.config_dir}", highlight=False)
