"""The golden-parity recipe shared by scripts/make_goldens.py and tests/test_golden_parity.py.

Both sides must rebuild exactly the same inputs, so the recipe lives here and nowhere else:
the weights are `dat_deploy.model.seeded_init.seeded_state_dict(model.state_dict(), seed=0)`
and every input batch is drawn from a CPU generator seeded by its batch size alone.
The expected counts were taken from the official code (github.com/LeapLabTHU/DAT) run on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

GOLDEN_DIR = Path(__file__).parent / "data" / "goldens"
OFFICIAL_KEYS_FILE = Path(__file__).parent / "data" / "official_keys.json"

WEIGHT_SEED = 0
INPUT_SEED_BASE = 1234

# Variants whose goldens also hold the sampling positions/references of every deformable block (batch 1).
POSITION_VARIANTS = ("dat_t", "dat_pp_t")
FAST_VARIANTS = ("dat_t", "dat_pp_t")


@dataclass(frozen=True)
class Official:
    family: str  # "dat" (tag CVPR2022) or "dat_pp" (branch main)
    config: str  # yaml under the official configs/ folder
    eval_size: int  # square input size the variant is evaluated at
    params: int
    keys: int
    buffers: int


OFFICIAL = {
    "dat_t": Official("dat", "dat_tiny.yaml", 224, 28_319_138, 219, 10),
    "dat_s": Official("dat", "dat_small.yaml", 224, 49_700_402, 435, 16),
    "dat_b": Official("dat", "dat_base.yaml", 224, 87_881_632, 435, 16),
    "dat_b_384": Official("dat", "dat_base_384.yaml", 384, 88_178_272, 435, 16),
    "dat_pp_t": Official("dat_pp", "dat_tiny.yaml", 224, 23_962_876, 589, 0),
    "dat_pp_s": Official("dat_pp", "dat_small.yaml", 224, 53_127_366, 589, 0),
    "dat_pp_b": Official("dat_pp", "dat_base.yaml", 224, 93_690_640, 589, 0),
    # Built with img_size=224 (its config says so; 224-shaped rpe tables), evaluated on 384x384.
    "dat_pp_b_384": Official("dat_pp", "dat_base_384.yaml", 384, 93_690_640, 589, 0),
}


def golden_cases(variant: str) -> list[tuple[int, int, int]]:
    """(batch, height, width) of every golden for `variant`."""
    size = OFFICIAL[variant].eval_size
    cases = [(1, size, size), (3, size, size)]
    if OFFICIAL[variant].family == "dat_pp":
        cases.append((2, 224, 288))  # DAT++ runs at any size; a non-square one catches H/W mix-ups
    return cases


def case_name(batch: int, height: int, width: int) -> str:
    return f"b{batch}_{height}x{width}"


def golden_input(batch: int, height: int, width: int) -> torch.Tensor:
    """The float32 NCHW input of one golden case."""
    generator = torch.Generator().manual_seed(INPUT_SEED_BASE + batch)
    return torch.randn((batch, 3, height, width), generator=generator)


def golden_path(variant: str) -> Path:
    return GOLDEN_DIR / f"{variant}.npz"
