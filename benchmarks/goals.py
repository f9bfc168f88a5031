"""`--goal NAME=RATIO`: a speed goal given on the command line, as an argparse type."""

from __future__ import annotations

import argparse
from typing import Callable


def goal_type(name: str, example: str) -> Callable[[str], tuple[str, float]]:
    """An argparse `type=` that reads `NAME=RATIO` (RATIO > 0) into (name, ratio); `example` goes in the error."""

    def parse(text: str) -> tuple[str, float]:
        key, _, ratio = text.partition("=")
        try:
            value = float(ratio)
        except ValueError:
            value = 0.0
        if not key.strip() or value <= 0:
            raise argparse.ArgumentTypeError(f"{text!r}: expected {name}=RATIO with a ratio > 0, e.g. {example}")
        return key.strip(), value

    return parse
