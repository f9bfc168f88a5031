"""CLI command `serve`: Triton's own server on the given model folders (see dat_deploy.serving)."""

from __future__ import annotations

import sys
from typing import List, Optional

import typer
from rich.console import Console

from dat_deploy.commands._app import app


@app.command("serve")
def serve_command(
    models: List[str] = typer.Argument(..., help="Model folders (paths, or names under --models)."),
    models_root: str = typer.Option("models", "--models", help="Where export wrote the models."),
    address: str = typer.Option("127.0.0.1", "--address", help="Address to listen on (0.0.0.0: every interface)."),
    http_port: int = typer.Option(8000, "--http-port", min=1, max=65535, help="KServe v2 over HTTP."),
    grpc_port: int = typer.Option(8001, "--grpc-port", min=1, max=65535, help="KServe v2 over gRPC."),
    metrics_port: int = typer.Option(8002, "--metrics-port", min=0, max=65535,
                                     help="Prometheus metrics (/metrics); 0: none."),
    max_batch: Optional[int] = typer.Option(None, "--max-batch", min=1,
                                            help="Largest batch Triton forms (default: the exported config's)."),
    max_queue_delay_us: Optional[int] = typer.Option(
        None, "--max-queue-delay-us", min=0, help="How long a request may wait for a batch to fill (default: config's)."),
    instances: int = typer.Option(1, "--instances", min=1, help="Model instances (each its own onnxruntime session)."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1,
                                          help="onnxruntime threads per instance (default: cores / instances)."),
    topk: int = typer.Option(5, "--topk", "-k", min=1, help="Classes the <model>_images companion answers."),
    verbose: bool = typer.Option(False, "--verbose", help="Triton's info log too."),
) -> None:
    """Serve model folders with Triton (HTTP + gRPC KServe v2, dynamic batching, metrics) until SIGTERM / Ctrl-C."""
    from pathlib import Path

    from dat_deploy.serving.repository import ServeSettings
    from dat_deploy.serving.server import Endpoints, serve

    endpoints = Endpoints(address, http_port, grpc_port, metrics_port or None)
    settings = ServeSettings(max_batch, max_queue_delay_us, instances, threads, topk)
    console = Console(stderr=True, soft_wrap=True)  # one line per message: scripts wait for "ready:"

    def announce(served, where):
        for model in served:
            extra = f" and {model.images_model} (encoded images -> top-{topk})" if model.images_model else ""
            console.print(f"serving {model.name} (tensors, max batch {model.max_batch_size}){extra}", highlight=False)
            for note in model.notes:
                console.print(f"[yellow]note:[/] {model.name}: {note}", highlight=False)
        metrics = f", metrics http://{where.address}:{where.metrics_port}/metrics" if where.metrics_port else ""
        console.print(f"ready: HTTP http://{where.http}, gRPC {where.grpc}{metrics} (Ctrl-C or SIGTERM stops)",
                      highlight=False)

    code = serve(models, endpoints, settings, models_root=Path(models_root), verbose=verbose, on_ready=announce)
    sys.exit(code)
