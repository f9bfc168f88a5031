"""The Typer application object that every command module registers on."""

import typer

app = typer.Typer(
    name="dat-deploy",
    help="Deploy DAT / DAT++: export to ONNX, build TensorRT engines, and prove parity and speed.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
