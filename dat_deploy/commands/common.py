"""Small helpers shared by the command modules."""

from __future__ import annotations

import contextlib
from typing import Iterator

from rich.console import Console

from dat_deploy.errors import UserError

console = Console(stderr=True)


def parse_int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"{what} must be a comma-separated list of integers, got {text!r}.") from None
    if not values or any(v < 1 for v in values):
        raise UserError(f"{what} must list positive integers, got {text!r}.")
    return values


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
