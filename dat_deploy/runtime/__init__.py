"""Inference backends behind one protocol (`Backend.run(batch) -> {name: array}`)."""

from dat_deploy.runtime.base import Backend

__all__ = ["Backend"]
