"""CLI commands for serving: predict, triton, visualize, doctor (thin layers over the library)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console
from rich.table import Table

from dat_deploy.commands._app import app
from dat_deploy.errors import UserError

SAMPLE_PREFIX = "sample:"


@app.command("predict")
def predict_command(
    images: Optional[List[Path]] = typer.Argument(
        None, help="Image files or folders (expanded recursively). None: the embedded sample images."),
    model: Optional[Path] = typer.Option(
        None, "--model", "-m", help="An exported artifact: .onnx, .plan, or a Triton model folder."),
    variant: Optional[str] = typer.Option(
        None, "--variant", "-v", help="Run a registered variant directly (default dat_t when no --model)."),
    weights: Optional[Path] = typer.Option(
        None, "--weights", "-w", help="Official checkpoint for --variant (default: seeded random weights)."),
    backend: Optional[str] = typer.Option(
        None, "--backend", "-b", help="For --variant: torch (default) or ort (exported on the fly)."),
    topk: int = typer.Option(5, "--topk", "-k", min=1, help="How many classes to show per image."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
    batch_size: int = typer.Option(16, "--batch-size", min=1, help="Images per inference batch."),
    providers: Optional[str] = typer.Option(
        None, "--providers", help="For an ONNX --model: onnxruntime providers, e.g. cuda,cpu (default cpu)."),
) -> None:
    """Top-k ImageNet classes for images, with names and probabilities."""
    from dat_deploy.api import Classifier
    from dat_deploy.preprocess import list_image_files, sample_images

    if model is not None and variant is not None:
        raise UserError("pass either --model (an exported artifact) or --variant, not both.")
    if model is not None:
        if weights is not None:
            raise UserError("--weights goes with --variant; an exported --model already contains its weights.")
        if backend not in (None, "ort", "trt", "tensorrt"):
            raise UserError(f"--backend {backend} does not apply to --model: the artifact decides (ONNX -> ort, engine -> TensorRT).")
        classifier = Classifier.from_artifact(model, providers=providers.split(",") if providers else None)
    else:
        if backend == "ort":
            Console(stderr=True).print(
                f"exporting {variant or 'dat_t'} to ONNX for onnxruntime (a minute or two; `dat-deploy export` "
                "once and --model reuses it)", highlight=False)
        classifier = Classifier.from_variant(variant or "dat_t", weights=weights, backend=backend or "torch")

    inputs = list_image_files(images) if images else sample_images()
    predictions = classifier.predict(inputs, topk=topk, batch_size=batch_size)
    info = classifier.info
    if as_json:
        payload = {
            "model": {"source": info.source, "variant": info.variant, "backend": getattr(classifier.backend, "name", ""),
                      "random_weights": info.random_weights, "weights_sha256": info.weights_sha256},
            "notice": classifier.notice,
            "predictions": [p.to_dict() for p in predictions],
        }
        typer.echo(json.dumps(payload, indent=2))
        return
    console = Console()
    if classifier.notice:
        console.print(f"[bold yellow]note:[/] {classifier.notice}", highlight=False)
    for warning in info.warnings:
        console.print(f"[yellow]warning:[/] {warning}", highlight=False)
    table = Table(title=f"{info.variant or info.source} on {getattr(classifier.backend, 'name', 'backend')}")
    table.add_column("image", overflow="fold")
    for column in ("rank", "class", "index", "probability"):
        table.add_column(column)
    for prediction in predictions:
        for rank, (index, label, prob) in enumerate(
                zip(prediction.indices, prediction.labels, prediction.probabilities), start=1):
            table.add_row(prediction.source if rank == 1 else "", str(rank), label, str(index), f"{prob:.4f}",
                          end_section=rank == len(prediction.indices))
    console.print(table)


@app.command("triton")
def triton_command(
    artifacts: Optional[List[str]] = typer.Argument(
        None, help="Model folders (paths, or names under --models). None: every model in --models."),
    output: Path = typer.Option(..., "--output", "-o", help="The Triton model repository to write."),
    models_root: Path = typer.Option(Path("models"), "--models", help="Where export/build-trt wrote the models."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace models already in --output."),
    ort_ops_lib: Optional[Path] = typer.Option(
        None, "--ort-ops-lib", help="onnxruntime custom-op library (default: the built one)."),
    trt_plugin: Optional[Path] = typer.Option(
        None, "--trt-plugin", help="TensorRT plugin library (default: the built one)."),
    image: Optional[str] = typer.Option(None, "--image", help="Triton container image for the printed command."),
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of text."),
) -> None:
    """Gather models into one Triton repository (configs validated) and print the tritonserver command."""
    from dat_deploy.triton.repository import DEFAULT_IMAGE, gather

    result = gather(artifacts or [], output, models_root=models_root, overwrite=overwrite,
                    ort_ops_library=ort_ops_lib, trt_plugin_library=trt_plugin, image=image or DEFAULT_IMAGE)
    seeds = {m.name: _random_init_seed(m.path) for m in result.models}
    random_notes = [f"{name} has seeded random weights (seed {seed}), not a checkpoint: its predictions are "
                    "meaningless. Export it with `dat-deploy export --weights <official .pth>` for real ones."
                    for name, seed in seeds.items() if seed is not None]
    if as_json:
        typer.echo(json.dumps({
            "repository": str(result.repository),
            "models": [{"name": m.name, "backend": m.kind, "path": str(m.path), "plugin_library": m.plugin_library,
                        "random_weights": seeds[m.name] is not None} for m in result.models],
            "command": result.command, "notes": random_notes + result.notes,
        }, indent=2))
        return
    for note in random_notes:
        Console(stderr=True).print(f"[bold yellow]note:[/] {note}", highlight=False)
    console = Console()
    table = Table(title=f"Triton model repository {result.repository}")
    for column in ("model", "backend", "plugin library (in the container)"):
        table.add_column(column)
    for m in result.models:
        table.add_row(m.name, m.kind, m.plugin_library or "-")
    console.print(table)
    for note in result.notes:
        console.print(f"[yellow]note:[/] {note}", highlight=False)
    console.print("Start it with:", highlight=False)
    typer.echo(result.command)


@app.command("visualize")
def visualize_command(
    image: str = typer.Argument(..., help="An image file, or sample:astronaut / sample:chelsea / sample:coffee."),
    output: Path = typer.Option(..., "--output", "-o", help="PNG to write."),
    variant: str = typer.Option("dat_t", "--variant", "-v", help="Variant name (see `dat-deploy variants`)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Official checkpoint (default: random)."),
    blocks: Optional[List[str]] = typer.Option(
        None, "--blocks", help="Deformable blocks as stage.block (1-based), e.g. 3.2,4.2; 'all'; default: last per stage."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing PNG."),
) -> None:
    """Draw the deformable sampling points of chosen blocks over the image, one panel per block and group."""
    from dat_deploy.visualize import visualize

    source = _sample_or_path(image)
    result = visualize(source, variant, output, weights=weights, blocks=blocks, overwrite=overwrite)
    console = Console()
    if weights is None:
        console.print("[bold yellow]note:[/] random weights: the points show an untrained model's offsets.",
                      highlight=False)
    labels = ", ".join(b.label for b in result.blocks)
    console.print(f"wrote {result.path} (blocks {labels}, {len(result.points)} panels)", highlight=False)


def _random_init_seed(model_folder: Path) -> str | None:
    """The seed export recorded for a random-init model (in its metadata), None for real weights."""
    from dat_deploy.artifacts import open_artifact

    try:
        return open_artifact(model_folder).metadata.get("random_init_seed")
    except UserError:  # gather has checked the folder; a note is not worth failing over
        return None


def _sample_or_path(image: str):
    if not image.startswith(SAMPLE_PREFIX):
        return Path(image)
    from dat_deploy.preprocess import sample_images

    samples = dict(sample_images())
    name = image[len(SAMPLE_PREFIX):]
    if name not in samples:
        raise UserError(f"no sample image {name!r}; choose one of: {', '.join(samples)}.")
    return samples[name]


@app.command("doctor")
def doctor_command(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """Versions of torch / onnx / onnxruntime / TensorRT, GPU and toolchain visibility, plugin libraries."""
    from dat_deploy.doctor import render, run_checks

    checks = run_checks()
    if as_json:
        typer.echo(json.dumps([c.to_dict() for c in checks], indent=2))
        return
    render(checks, Console())
