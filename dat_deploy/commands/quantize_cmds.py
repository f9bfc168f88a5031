"""CLI command: `quantize` (an fp32 model folder -> a validated int8 model folder)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dat_deploy.commands._app import app
from dat_deploy.commands.common import console, steps


@app.command("quantize")
def quantize_command(
    model_folder: Path = typer.Argument(..., help="A model folder written by `dat-deploy export` (models/<name>)."),
    output: Optional[Path] = typer.Option(None, "--output", "-o", help="The int8 model folder (default: <name>_int8 next to the source)."),
    calibration: Optional[Path] = typer.Option(None, "--calibration", help="A folder of calibration images (default: views of scikit-image's photos)."),
    images: int = typer.Option(128, "--images", help="How many calibration images to use."),
    method: str = typer.Option("minmax", "--method", help="Range calibration: minmax, entropy or percentile."),
    target: str = typer.Option("onnxruntime", "--target", help="onnxruntime (CPU) or tensorrt (symmetric int8 Q/DQ)."),
    exclude: Optional[list[str]] = typer.Option(None, "--exclude", help="Leave nodes whose name matches this glob (e.g. '*attns.3*') in float; repeatable."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="The checkpoint the model was exported from (the validation's PyTorch reference)."),
    reduce_range: bool = typer.Option(False, "--reduce-range", help="7-bit weights (U8S8 saturation on AVX2 / AVX-512 CPUs without VNNI)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing output folder."),
    check: bool = typer.Option(True, "--check/--no-check", help="Refuse to write a model that fails the int8 gate."),
    min_mean_cosine: Optional[float] = typer.Option(None, "--min-mean-cosine", help="Gate: mean per-image logit cosine vs PyTorch fp32 (default 0.99)."),
    min_image_cosine: Optional[float] = typer.Option(None, "--min-image-cosine", help="Gate: smallest per-image logit cosine (default 0.98)."),
    min_top1: Optional[float] = typer.Option(None, "--min-top1", help="Gate: top-1 agreement with fp32 (default 0.6)."),
    min_top5: Optional[float] = typer.Option(None, "--min-top5", help="Gate: top-5 overlap with fp32 (default 0.7)."),
) -> None:
    """Quantize an exported model to int8 (calibrated on images), validate it against PyTorch fp32, write it."""
    from dat_deploy.parity.report import render
    from dat_deploy.quantize.pipeline import quantize_folder
    from dat_deploy.quantize.images import OWN_IMAGES_REMINDER

    limits = {"min_mean_cosine": min_mean_cosine, "min_image_cosine": min_image_cosine, "min_top1": min_top1,
              "min_top5": min_top5}
    with steps(f"quantizing {model_folder}") as on_step:
        result = quantize_folder(model_folder, output=output, calibration=calibration, images=images, method=method,
                                 target=target, exclude=exclude or [], overwrite=overwrite, check=check,
                                 weights=weights, reduce_range=reduce_range, limits=limits, on_step=on_step)
    render(result.report)
    if calibration is None:
        console.print(f"[yellow]note:[/] {OWN_IMAGES_REMINDER}")
    for name, why in result.recipe.float_nodes.items():
        console.print(f"left in float: {name} ({why})")
    if not result.written:
        console.print(f"[red]refused:[/] the int8 model fails the gate; nothing was written. Calibrate on your own "
                      f"images, try --method percentile, --exclude the drifting layers, or pass --no-check.")
        raise typer.Exit(1)
    quantized = len(result.recipe.quantized_nodes)
    console.print(f"[green]wrote[/] {result.onnx_path} in {result.seconds:.1f} s: {quantized} nodes int8 "
                  f"({result.recipe.target}), {len(result.recipe.float_nodes)} left in float; "
                  f"validation {'PASSED' if result.report.passed else 'FAILED (--no-check)'}")
