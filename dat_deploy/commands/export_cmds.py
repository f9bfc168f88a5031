"""CLI commands: `export` (checkpoint -> ONNX model folder) and `validate` (parity vs PyTorch)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dat_deploy.commands._app import app
from dat_deploy.commands.common import announce_weights, console, parse_batch_list, steps
from dat_deploy.errors import UserError


@app.command("export")
def export_command(
    variant: str = typer.Option("dat_t", "--variant", "-v", help="Variant name (see `dat-deploy variants`)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="Official .pth or .safetensors checkpoint."),
    opset: int = typer.Option(18, "--opset", help="ONNX opset (17-19 for TensorRT's native GridSample)."),
    batch: str = typer.Option("dynamic", "--batch", help="'dynamic' or a fixed batch size."),
    flavor: str = typer.Option("standard", "--flavor", help="standard (ONNX GridSample) or plugin (dat custom ops)."),
    features: bool = typer.Option(False, "--features", help="Export the four stage maps of the backbone instead of logits."),
    dynamic_hw: bool = typer.Option(False, "--dynamic-hw", help="Dynamic height and width (DAT++ only)."),
    layout: str = typer.Option("fast", "--layout", help="fast (channels-last, tiled neighborhood attention) or "
                               "official (the official forward op for op)."),
    output: Path = typer.Option(Path("models"), "--output", "-o", help="Model repository folder."),
    name: Optional[str] = typer.Option(None, "--name", help="Model folder name (default: derived from the options)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the random default when no --weights is given."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing model folder."),
    check: bool = typer.Option(True, "--check/--no-check", help="Refuse to write a graph that does not match PyTorch."),
) -> None:
    """Export a DAT checkpoint to ONNX, check it against PyTorch, write models/<name>/ for Triton."""
    from dat_deploy.export import export_onnx

    if batch != "dynamic":
        fixed = parse_batch_list(batch)
        if len(fixed) != 1:
            raise UserError(f"--batch takes 'dynamic' or one size, got {batch!r}.")
    announce_weights(weights, seed)
    with steps(f"exporting {variant}") as on_step:
        result = export_onnx(
            variant, output_dir=output, name=name, weights=weights, seed=seed, opset=opset,
            batch=None if batch == "dynamic" else int(batch), flavor=flavor, features=features,
            dynamic_hw=dynamic_hw, layout=layout, overwrite=overwrite, check=check, on_step=on_step,
        )
    worst = max(o.max_abs for r in result.parity.results for o in r.outputs)
    verdict = "matches" if result.parity.passed else "[red]does NOT match[/]"
    console.print(f"[green]exported[/] {result.onnx_path} in {result.seconds:.1f} s; onnxruntime {verdict} PyTorch "
                  f"(max abs {worst:.2e} at batch {', '.join(str(r.batch) for r in result.parity.results)})")
    console.print(f"Triton config: {result.folder / 'config.pbtxt'}")


@app.command("validate")
def validate_command(
    artifacts: Optional[list[Path]] = typer.Argument(None, help="ONNX files, engines or model folders (default: the latest export)."),
    weights: Optional[Path] = typer.Option(None, "--weights", "-w", help="The checkpoint the artifact was exported from."),
    batch: str = typer.Option("1,4", "--batch", help="Batch sizes to check."),
    precision: str = typer.Option("auto", "--precision", help="fp32, fp16 or auto (from the artifact)."),
    atol: Optional[float] = typer.Option(None, "--atol"),
    rtol: Optional[float] = typer.Option(None, "--rtol"),
    min_cosine: Optional[float] = typer.Option(None, "--min-cosine"),
    min_mean_cosine: Optional[float] = typer.Option(None, "--min-mean-cosine", help="Mean per-image logit cosine (int8: 0.99)."),
    min_image_cosine: Optional[float] = typer.Option(None, "--min-image-cosine", help="Smallest per-image logit cosine (int8: 0.98)."),
    min_top1: Optional[float] = typer.Option(None, "--min-top1", help="Top-1 agreement (fp32 1.0, fp16 0.99, int8 0.6)."),
    min_top5: Optional[float] = typer.Option(None, "--min-top5", help="Top-5 overlap (int8: 0.7)."),
    images: bool = typer.Option(True, "--images/--no-images", help="Also check the embedded sample photos."),
    providers: Optional[str] = typer.Option(None, "--providers", help="onnxruntime providers, e.g. cpu or cuda,cpu."),
    bisect: bool = typer.Option(False, "--bisect", help="On failure, find the first diverging stage or position."),
    report: Optional[Path] = typer.Option(None, "--report", help="JSON report path (default reports/validate-<name>.json)."),
) -> None:
    """Check artifacts against PyTorch fp32: per-output error statistics, PASSED/FAILED, exit code 1 on failure.

    int8 artifacts are judged on held-out photos by their logits: mean and smallest per-image cosine,
    top-1 agreement and top-5 overlap (their elementwise atol / rtol are not used)."""
    from dat_deploy.artifacts import model_name_for
    from dat_deploy.atomic import check_creatable_dir
    from dat_deploy.parity.report import render
    from dat_deploy.parity.validate import validate_artifact

    try:  # before the minutes of validation, not after
        check_creatable_dir(report.parent if report else Path("reports"))
    except UserError as exc:
        raise UserError(f"{exc} Or pass --report PATH to write the JSON report elsewhere.") from None
    failed = False
    for artifact in artifacts or [None]:
        with steps(f"validating {artifact or 'the latest export'}") as on_step:
            result = validate_artifact(
                artifact, weights=weights, batches=parse_batch_list(batch), precision=precision,
                atol=atol, rtol=rtol, min_cosine=min_cosine, images=images,
                providers=providers.split(",") if providers else None, bisect=bisect, on_step=on_step,
                limits={"min_mean_cosine": min_mean_cosine, "min_image_cosine": min_image_cosine,
                        "min_top1": min_top1, "min_top5": min_top5},
            )
        if "random_init_seed" in result.context["metadata"]:
            announce_weights(None, int(result.context["metadata"]["random_init_seed"]))
        render(result)
        path = report or Path("reports") / f"validate-{model_name_for(result.context['artifact'])}.json"
        result.write_json(path)
        console.print(f"report: {path}")
        failed |= not result.passed
    if failed:
        raise typer.Exit(1)
