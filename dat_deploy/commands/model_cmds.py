"""CLI commands: the model zoo (`variants`, `info`)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from dat_deploy.commands._app import app


@app.command("variants")
def variants_command() -> None:
    """List the DAT / DAT++ variants with their evaluation recipe and published accuracy."""
    from dat_deploy.model.variants import zoo_variants
    from dat_deploy.tables import Column, print_table

    columns = [Column("variant", identifier=True), Column("model"), Column("family"), Column("input", justify="right"),
               Column("resize", justify="right"), Column("params", justify="right"),
               Column("top-1 %", justify="right"), Column("official checkpoint", identifier=True)]
    rows = [[spec.name, spec.title, spec.family, str(spec.input_size), str(spec.resize_size), f"{spec.params:,}",
             f"{spec.top1:.1f}", spec.checkpoint_file] for spec in zoo_variants().values()]
    print_table(Console(), columns, rows, title="DAT model zoo")


@app.command("info")
def info_command(
    variant: str = typer.Option("dat_t", "--variant", "-v", help="Variant name (see `dat-deploy variants`)."),
    input_size: int = typer.Option(None, "--input-size", help="Square input size (default: the variant's)."),
) -> None:
    """Parameters, GMACs, stage shapes and every deformable block's groups and key grid."""
    from dat_deploy.model.summary import summarize

    summary = summarize(variant, input_size)
    console = Console()
    console.print(f"[bold]{variant}[/]: {summary.params:,} parameters, {summary.gmacs:.2f} GMACs "
                  f"at {summary.input_size}x{summary.input_size} (grid_sample, softmax and norms not counted)")
    stages = Table(title="stages")
    for column in ("stage", "stride", "channels", "map"):
        stages.add_column(column)
    for i, (c, h, w) in enumerate(summary.stage_shapes):
        stages.add_row(str(i + 1), str(4 * 2 ** i), str(c), f"{h}x{w}")
    console.print(stages)
    blocks = Table(title="deformable blocks")
    for column in ("stage", "block", "groups", "heads", "query grid", "key grid"):
        blocks.add_column(column)
    for b in summary.deformable_blocks:
        blocks.add_row(str(b.stage + 1), str(b.block), str(b.groups), str(b.heads),
                       "x".join(map(str, b.query_grid)), "x".join(map(str, b.key_grid)))
    console.print(blocks)
