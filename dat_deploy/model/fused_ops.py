"""Which attention cores the channels-last forward hands to one fused op instead of spelling out.

The export forward (channels_last.py) asks `fused(name)` for each core it is about to trace: with
nothing registered it writes the core out in plain ops (the standard flavour); the plugin flavour
registers its torch custom ops with `use_fused`, and each core becomes one `dat` node.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterator

WINDOW_ATTENTION = "window_attention"  # windows.window_attention_reference's signature
DEFORMABLE_ATTENTION = "deformable_attention"  # deformable.deformable_attention_reference's signature

_impl: dict[str, Callable] = {}


def fused(name: str) -> Callable | None:
    """The fused implementation registered for core `name`, or None."""
    return _impl.get(name)


@contextlib.contextmanager
def use_fused(**implementations: Callable) -> Iterator[None]:
    """Temporarily register fused implementations by core name (restored on exit)."""
    saved = dict(_impl)
    _impl.update(implementations)
    try:
        yield
    finally:
        _impl.clear()
        _impl.update(saved)
