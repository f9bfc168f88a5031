"""Our DAT / DAT++ against logits the official code produced (scripts/make_goldens.py says how).

Same seeded weights on both sides (per-key generators, so the official state_dict and ours give
identical tensors), same inputs (tests/golden_inputs.py), eval mode, max abs error <= 1e-5.
Also: parameter counts, key counts and the exact key/shape/dtype set of the official state_dicts.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import golden_inputs as gi  # noqa: E402

from dat_deploy.model.seeded_init import seeded_state_dict  # noqa: E402

ATOL = 1e-5
ALL_VARIANTS = list(gi.OFFICIAL)


def _seeded_model(variant: str) -> torch.nn.Module:
    from dat_deploy.model import create_model

    model = create_model(variant)
    model.load_state_dict(seeded_state_dict(model.state_dict(), seed=gi.WEIGHT_SEED), strict=True)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_models():
    """The fast tests' seeded models, built once per module."""
    cache: dict[str, torch.nn.Module] = {}

    def get(variant: str) -> torch.nn.Module:
        if variant not in cache:
            cache[variant] = _seeded_model(variant)
        return cache[variant]

    return get


def _load_golden(variant: str) -> dict[str, np.ndarray]:
    with np.load(gi.golden_path(variant)) as z:
        return {k: z[k] for k in z.files}


def _check_logits(variant: str, model: torch.nn.Module, golden: dict[str, np.ndarray]) -> None:
    for batch, height, width in gi.golden_cases(variant):
        name = gi.case_name(batch, height, width)
        with torch.no_grad():
            logits = model(gi.golden_input(batch, height, width))
        expected = golden[f"logits_{name}"]
        assert tuple(logits.shape) == expected.shape, f"{variant} {name}"
        err = np.abs(logits.numpy().astype(np.float64) - expected).max()
        assert err <= ATOL, f"{variant} {name}: max abs error {err:.3g} > {ATOL}"


@pytest.mark.parametrize("variant", gi.FAST_VARIANTS)
def test_tiny_logits_match_official_goldens(variant, tiny_models):
    _check_logits(variant, tiny_models(variant), _load_golden(variant))


@pytest.mark.parametrize("variant", gi.POSITION_VARIANTS)
def test_tiny_sampling_positions_match_official(variant, tiny_models):
    golden = _load_golden(variant)
    size = gi.OFFICIAL[variant].eval_size
    model = tiny_models(variant)
    with torch.no_grad():
        _, positions, references = model(gi.golden_input(1, size, size), return_positions=True)
    n_blocks = sum(1 for k in golden if k.startswith("positions_"))
    assert len(positions) == len(references) == n_blocks
    for i, (pos, ref) in enumerate(zip(positions, references)):
        for name, ours in (("positions", pos), ("references", ref)):
            expected = golden[f"{name}_{i}"]
            assert tuple(ours.shape) == expected.shape, f"{variant} {name}[{i}]"
            err = np.abs(ours.numpy().astype(np.float64) - expected).max()
            assert err <= ATOL, f"{variant} {name}[{i}]: max abs error {err:.3g} > {ATOL}"


@pytest.mark.slow
def test_all_variants_logits_match_official_goldens():
    for variant in ALL_VARIANTS:
        _check_logits(variant, _seeded_model(variant), _load_golden(variant))


@pytest.mark.parametrize("variant", ALL_VARIANTS)
def test_counts_and_keys_equal_official(variant):
    from dat_deploy.model import create_model

    official = gi.OFFICIAL[variant]
    model = create_model(variant)
    state = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == official.params
    assert len(state) == official.keys
    assert len(dict(model.named_buffers())) == official.buffers

    official_keys = json.loads(gi.OFFICIAL_KEYS_FILE.read_text())[variant]
    ours = {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in state.items()}
    missing = sorted(set(official_keys) - set(ours))
    unexpected = sorted(set(ours) - set(official_keys))
    assert not missing and not unexpected, f"missing {missing[:5]}, unexpected {unexpected[:5]}"
    mismatched = {k: (ours[k], official_keys[k]) for k in ours if ours[k] != official_keys[k]}
    assert not mismatched, f"shape/dtype mismatches (ours, official): {dict(list(mismatched.items())[:5])}"


def test_golden_files_are_small_and_complete():
    for variant in ALL_VARIANTS:
        path = gi.golden_path(variant)
        assert path.stat().st_size < 1_000_000, path
        golden = _load_golden(variant)
        for case in gi.golden_cases(variant):
            assert golden[f"logits_{gi.case_name(*case)}"].shape == (case[0], 1000)
        meta = json.loads(str(golden["meta"]))
        assert meta["variant"] == variant and meta["weight_seed"] == gi.WEIGHT_SEED
