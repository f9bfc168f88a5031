"""Small helpers shared by the command modules."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console

from dat_deploy.errors import UserError

console = Console(stderr=True)


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
    """A spinner that shows the current step of a long job; yields a callback taking the step text."""
    with console.status(title) as status:
        def on_step(message: str) -> None:
            console.log(message)
            status.update(f"{title}: {message}")

        yield on_step
