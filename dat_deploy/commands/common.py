"""Small helpers shared by the command modules."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console
from rich.markup import escape

from dat_deploy.errors import UserError

# log_path=False: a log line ends with its message, not with the file and line that printed it.
console = Console(stderr=True, log_path=False)


def parse_batch_list(text: str, option: str = "--batch") -> list[int]:
    """'8,1,8' -> [1, 8]: sorted distinct batch sizes, or a UserError naming the option."""
    try:
        batches = [int(b) for b in text.split(",") if b.strip()]
    except ValueError:
        raise UserError(f"{option} {text!r} must be comma-separated whole numbers, e.g. 1,8,32.") from None
    if not batches or any(b < 1 for b in batches):
        raise UserError(f"{option} {text!r} must list batch sizes >= 1, e.g. 1,8,32.")
    return sorted(set(batches))


def announce_weights(weights, seed: int = 0) -> None:
    """Say, every time, when the model is the seeded random default rather than a checkpoint."""
    if weights is None:
        from dat_deploy.model import RANDOM_WEIGHTS_NOTICE

        console.print(f"[yellow]note:[/] {RANDOM_WEIGHTS_NOTICE.format(seed=seed)}")


@contextlib.contextmanager
def steps(title: str) -> Iterator:
    """A spinner with the time elapsed, showing the current step of a long job (also logged, one line
    per step); yields a callback taking the step text."""
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    progress = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                        console=console, transient=True)
    with progress:
        task = progress.add_task(title, total=None)

        def on_step(message: str) -> None:
            console.log(message)
            progress.update(task, description=f"{title}: {message}")

        yield on_step


def show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning for the CLI: one `warning:` line, without Python's source location."""
    console.print(f"[yellow]warning:[/] {escape(str(message))}", highlight=False, soft_wrap=True)
