"""DAT and DAT++ in PyTorch: the variants registry, model construction and checkpoint loading.

    model = create_model("dat_pp_t")                          # seeded random default
    model = create_model("dat_t", weights="dat_tiny_in1k_224.pth")

`model.provenance` says where the weights came from (a checkpoint's sha256, or the random seed).
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import torch

from dat_deploy.errors import UserError
from dat_deploy.model.checkpoint import (
    _listing,
    adapt_to_model,
    describe_mismatch,
    read_checkpoint,
)
from dat_deploy.hashing import sha256_file
from dat_deploy.model.dat import DAT
from dat_deploy.model.seeded_init import DEFAULT_SEED, seeded_state_dict
from dat_deploy.model.variants import VARIANTS, VariantSpec, get_variant

__all__ = ["DAT", "VARIANTS", "VariantSpec", "create_model", "get_variant", "load_weights", "RANDOM_WEIGHTS_NOTICE"]

RANDOM_WEIGHTS_NOTICE = (
    "no --weights given: using a seeded random initialisation (seed {seed}); official checkpoints cannot be "
    "downloaded here, so its predictions are meaningless - pass --weights <official .pth> for real ones"
)


def build(variant: str, features_only: bool = False, img_size: int | None = None) -> DAT:
    """The architecture of `variant` with untouched (PyTorch default) initialisation."""
    spec = get_variant(variant)
    arch = spec.arch if img_size is None else dataclasses.replace(spec.arch, img_size=img_size)
    return DAT(arch, features_only=features_only)


@functools.lru_cache(maxsize=None)
def _expected_shapes(variant: str) -> dict[str, torch.Size]:
    with torch.device("meta"):
        model = build(variant)
    return {k: v.shape for k, v in model.state_dict().items()}


def guess_variant(state: dict[str, torch.Tensor]) -> str | None:
    """The registered variant whose keys and shapes match `state` best (None if nothing is close)."""
    def score(name: str) -> float:
        expected = _expected_shapes(name)
        hits = sum(1 for k, v in state.items() if k in expected and expected[k] == v.shape)
        return hits / max(len(expected), len(state))

    best = max(VARIANTS, key=score)
    return best if score(best) > 0.5 else None


def load_weights(model: DAT, path: str | Path, variant: str) -> None:
    """Load a checkpoint into `model` with strict key checking and an actionable error."""
    path = Path(path)
    state = adapt_to_model(read_checkpoint(path), model.state_dict())
    missing, unexpected, mis_shaped = describe_mismatch(state, model.state_dict())
    if missing or unexpected or mis_shaped:
        guess = guess_variant(state)
        hint = (f" The file looks like variant {guess!r}: use --variant {guess}." if guess and guess != variant
                else " Is it a DAT checkpoint of this variant?")
        raise UserError(
            f"{path} does not fit variant {variant!r}."
            + _listing("missing keys", missing)
            + _listing("unexpected keys", unexpected)
            + _listing("mis-shaped keys", mis_shaped)
            + hint
        )
    model.load_state_dict(state, strict=True)
    model.provenance = {"weights": str(path), "weights_sha256": sha256_file(path)}


def create_model(
    variant: str,
    weights: str | Path | None = None,
    seed: int = DEFAULT_SEED,
    features_only: bool = False,
    img_size: int | None = None,
) -> DAT:
    """A DAT model in eval mode: the checkpoint at `weights`, or the seeded random default."""
    model = build(variant, features_only=features_only, img_size=img_size)
    if weights is not None:
        load_weights(model, weights, variant)
    else:
        model.load_state_dict(seeded_state_dict(model.state_dict(), seed), strict=True)
        model.provenance = {"random_init_seed": seed}
    model.variant = variant
    return model.eval()
