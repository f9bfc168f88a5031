"""Entry point of the `dat-deploy` command.

The commands live in `dat_deploy/commands/*_cmds.py`, each a thin layer over library functions.
A `UserError` from anywhere becomes one line on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import sys
import warnings

from rich.console import Console
from rich.markup import escape

from dat_deploy.commands import (  # noqa: F401  (importing registers the commands)
    export_cmds,
    model_cmds,
    plugins_cmds,
    profile_cmds,
    quantize_cmds,
    serve_cmds,
    server_cmds,
    trt_cmds,
)
from dat_deploy.commands._app import app
from dat_deploy.commands.common import show_warning
from dat_deploy.errors import UserError


def main() -> None:
    warnings.showwarning = show_warning
    try:
        app()
    except UserError as exc:
        Console(stderr=True).print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code)


if __name__ == "__main__":
    main()
