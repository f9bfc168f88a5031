"""The zoo: every published DAT / DAT++ variant with its architecture and evaluation recipe.

Architectures follow the official configs, `configs/*.yaml` of github.com/LeapLabTHU/DAT (tag CVPR2022
for DAT, branch main for DAT++). Checkpoint file names follow the official READMEs
(only the tiny names are spelled out there; the others follow the same pattern).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dat_deploy.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_DAT_T_STAGES = (("L", "S"), ("L", "S"), ("L", "D") * 3, ("L", "D"))
_DAT_SB_STAGES = (("L", "S"), ("L", "S"), ("L", "D") * 9, ("L", "D"))
_DAT_PP_STAGES = (("N", "D"), ("N", "D") * 2, ("N", "D") * 9, ("D", "D"))


@dataclass(frozen=True)
class Architecture:
    """Constructor arguments of `dat_deploy.model.dat.DAT` (the fields the released models vary)."""

    family: str  # "dat" (CVPR 2022) or "dat_pp" (DAT++)
    img_size: int  # the size the position tables and shift masks are built for
    dim_stem: int
    dims: tuple[int, int, int, int]
    depths: tuple[int, int, int, int]
    heads: tuple[int, int, int, int]
    stage_specs: tuple[tuple[str, ...], ...]
    groups: tuple[int, int, int, int]
    window_size: int = 7  # DAT only
    strides: tuple[int, int, int, int] = (1, 1, 1, 1)
    offset_range_factor: tuple[float, float, float, float] = (-1, -1, 2, 2)
    offset_ksizes: tuple[int, int, int, int] = (9, 7, 5, 3)
    nat_ksize: int = 7  # DAT++ only
    num_classes: int = 1000


@dataclass(frozen=True)
class VariantSpec:
    name: str
    title: str
    arch: Architecture
    input_size: int  # the evaluation crop
    resize_size: int  # square bicubic resize before the centre crop (== input_size: no crop)
    top1: float
    params: int
    checkpoint_file: str
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    notes: tuple[str, ...] = field(default=())
    # Small models trained on scikit-learn's digits (scripts/train_digits.py) to measure what fp16 and int8
    # cost in accuracy: they export and validate like any variant but are not part of the zoo listing.
    hidden: bool = False

    @property
    def family(self) -> str:
        return self.arch.family

    @property
    def num_classes(self) -> int:
        return self.arch.num_classes


def _dat(img_size: int, dim: int, depths, stages, window: int) -> Architecture:
    dims = (dim, dim * 2, dim * 4, dim * 8)
    return Architecture(
        family="dat",
        img_size=img_size,
        dim_stem=dim,
        dims=dims,
        depths=depths,
        heads=tuple(d // 32 for d in dims),
        stage_specs=stages,
        groups=(-1, -1, dims[2] // 128, dims[3] // 128),
        window_size=window,
    )


def _dat_pp(dim: int, groups) -> Architecture:
    dims = (dim, dim * 2, dim * 4, dim * 8)
    return Architecture(
        family="dat_pp",
        img_size=224,  # DAT-B++ 384 too: its config keeps 224-sized position tables
        dim_stem=dim,
        dims=dims,
        depths=(2, 4, 18, 2),
        heads=tuple(d // 32 for d in dims),
        stage_specs=_DAT_PP_STAGES,
        groups=groups,
        strides=(8, 4, 2, 1),
        offset_range_factor=(-1, -1, -1, -1),
    )


def _eval_resize(size: int) -> int:
    return int(256 / 224 * size)


VARIANTS: dict[str, VariantSpec] = {
    spec.name: spec
    for spec in (
        VariantSpec("dat_t", "DAT-T", _dat(224, 96, (2, 2, 6, 2), _DAT_T_STAGES, 7),
                    224, _eval_resize(224), 82.0, 28_319_138, "dat_tiny_in1k_224.pth"),
        VariantSpec("dat_s", "DAT-S", _dat(224, 96, (2, 2, 18, 2), _DAT_SB_STAGES, 7),
                    224, _eval_resize(224), 83.7, 49_700_402, "dat_small_in1k_224.pth"),
        VariantSpec("dat_b", "DAT-B", _dat(224, 128, (2, 2, 18, 2), _DAT_SB_STAGES, 7),
                    224, _eval_resize(224), 84.0, 87_881_632, "dat_base_in1k_224.pth"),
        VariantSpec("dat_b_384", "DAT-B 384", _dat(384, 128, (2, 2, 18, 2), _DAT_SB_STAGES, 12),
                    384, _eval_resize(384), 84.8, 88_178_272, "dat_base_in1k_384.pth"),
        VariantSpec("dat_pp_t", "DAT-T++", _dat_pp(64, (1, 2, 4, 8)),
                    224, _eval_resize(224), 83.9, 23_962_876, "dat_pp_tiny_in1k_224.pth"),
        VariantSpec("dat_pp_s", "DAT-S++", _dat_pp(96, (1, 2, 3, 6)),
                    224, _eval_resize(224), 84.6, 53_127_366, "dat_pp_small_in1k_224.pth"),
        VariantSpec("dat_pp_b", "DAT-B++", _dat_pp(128, (2, 4, 8, 16)),
                    224, _eval_resize(224), 84.9, 93_690_640, "dat_pp_base_in1k_224.pth"),
        VariantSpec("dat_pp_b_384", "DAT-B++ 384", _dat_pp(128, (2, 4, 8, 16)),
                    384, 384, 85.9, 93_690_640, "dat_pp_base_in1k_384.pth",
                    notes=("evaluated at 384 with 224-sized position tables; resized straight to 384, no crop",)),
    )
}


# Digits models: reduced widths and depths, every block kind of the family (DAT: window L, shifted
# window S, deformable D; DAT++: neighborhood N, deformable D at strides 8/4/2/1 with conv stem, LPU
# and ConvFFN), 10 classes. Resized straight to the input (no crop) so the whole 8x8 digit is kept.
_DIGITS_DAT = Architecture(
    family="dat", img_size=224, dim_stem=16, dims=(16, 32, 64, 128), depths=(2, 2, 2, 2), heads=(1, 2, 4, 8),
    stage_specs=(("L", "S"), ("L", "S"), ("L", "D"), ("L", "D")), groups=(-1, -1, 1, 2), window_size=7,
    num_classes=10,
)
_DIGITS_DAT_PP = Architecture(
    family="dat_pp", img_size=128, dim_stem=16, dims=(16, 32, 64, 128), depths=(2, 2, 2, 2), heads=(1, 2, 4, 8),
    stage_specs=(("N", "D"), ("N", "D"), ("N", "D"), ("D", "D")), groups=(1, 1, 2, 2), strides=(8, 4, 2, 1),
    offset_range_factor=(-1, -1, -1, -1), num_classes=10,
)
_DIGITS_NOTE = "trained on scikit-learn's digits by scripts/train_digits.py; weights in tests/data/trained/"

VARIANTS.update({
    spec.name: spec
    for spec in (
        VariantSpec("dat_digits", "DAT digits", _DIGITS_DAT, 224, 224, float("nan"), 0, "dat_digits.safetensors",
                    notes=(_DIGITS_NOTE,), hidden=True),
        VariantSpec("dat_pp_digits", "DAT++ digits", _DIGITS_DAT_PP, 128, 128, float("nan"), 0,
                    "dat_pp_digits.safetensors", notes=(_DIGITS_NOTE,), hidden=True),
    )
})


def zoo_variants() -> dict[str, VariantSpec]:
    """The published variants, without the hidden test models."""
    return {name: spec for name, spec in VARIANTS.items() if not spec.hidden}


def get_variant(name: str) -> VariantSpec:
    try:
        return VARIANTS[name]
    except KeyError:
        raise UserError(f"unknown variant {name!r}. Choose one of: {', '.join(zoo_variants())}.") from None
