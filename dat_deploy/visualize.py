"""Where the deformable blocks look: sampling points drawn over the image, as in the DAT paper figures.

The points are the model's `pos` (per deformable block, (groups, Hk, Wk, 2) in (y, x), normalised
to [-1, 1] with `align_corners=True` semantics), so -1 is the centre of the first pixel and +1 the
centre of the last: px = (x + 1) / 2 * (W - 1), py = (y + 1) / 2 * (H - 1) on the model's input
crop (S x S, the image after the evaluation resize and crop). One panel per (block, group); the
reference points (the undeformed grid) are drawn faintly underneath, and a legend says which is which.

matplotlib is imported lazily and used through its object API with the Agg canvas (no pyplot,
no global backend switch), so this works in servers and threads.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from dat_deploy.atomic import atomic_path, check_creatable_dir, check_not_exists
from dat_deploy.errors import UserError
from dat_deploy.preprocess import ImageLike, as_rgb_image, normalize, resize_and_crop


REFERENCE_LABEL = "reference points (undeformed grid)"
SAMPLED_LABEL = "sampled points (reference + learned offset)"


@dataclass(frozen=True)
class DeformableBlock:
    index: int  # position in the model's list of deformable blocks (= in `positions`)
    stage: int  # 1-based
    block: int  # 1-based within the stage

    @property
    def label(self) -> str:
        return f"{self.stage}.{self.block}"


@dataclass
class Visualization:
    path: Path
    blocks: list[DeformableBlock]
    # (block label, group) -> (Hk*Wk, 2) pixel coordinates (px, py) that were drawn
    points: dict[tuple[str, int], np.ndarray]
    legend: list[str] = field(default_factory=list)  # the figure legend's entries, as drawn


def deformable_blocks(stage_specs: Sequence[Sequence[str]]) -> list[DeformableBlock]:
    """The deformable ("D") blocks in forward order, which is the order of the model's positions."""
    found = []
    for stage, spec in enumerate(stage_specs, start=1):
        for block, letter in enumerate(spec, start=1):
            if letter == "D":
                found.append(DeformableBlock(len(found), stage, block))
    return found


def select_blocks(available: list[DeformableBlock], wanted: Sequence[str] | None) -> list[DeformableBlock]:
    """`None`/"last": the last deformable block of each stage; "all"; or labels like "3.2", "4.2"."""
    names = ", ".join(b.label for b in available)
    if not wanted or list(wanted) == ["last"]:
        last: dict[int, DeformableBlock] = {}
        for block in available:
            last[block.stage] = block
        return list(last.values())
    if list(wanted) == ["all"]:
        return list(available)
    by_label = {b.label: b for b in available}
    chosen = []
    for raw in wanted:
        for label in str(raw).split(","):
            label = label.strip()
            if label not in by_label:
                raise UserError(f"block {label!r} is not a deformable block of this model. Choose from: {names} "
                                "(stage.block), 'last' or 'all'.")
            chosen.append(by_label[label])
    return chosen


def positions_to_pixels(pos: np.ndarray, width: int, height: int) -> np.ndarray:
    """(..., 2) normalised (y, x) -> (..., 2) pixel (px, py), align_corners=True."""
    pos = np.asarray(pos, dtype=np.float64)
    px = (pos[..., 1] + 1.0) / 2.0 * (width - 1)
    py = (pos[..., 0] + 1.0) / 2.0 * (height - 1)
    return np.stack([px, py], axis=-1)


def sampling_positions(model, batch: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Positions and references of every deformable block for the first image: (groups, Hk, Wk, 2) each."""
    import torch

    with torch.no_grad():
        _, positions, references = model(torch.from_numpy(batch), return_positions=True)
    return [p[0].float().numpy() for p in positions], [r[0].float().numpy() for r in references]


def draw_sampling_points(
    image: Image.Image,
    positions: list[np.ndarray],
    blocks: list[DeformableBlock],
    out_path: str | Path,
    references: list[np.ndarray] | None = None,
    title: str = "",
    overwrite: bool = False,
) -> Visualization:
    """Draw the chosen blocks' points over `image` (the model's input crop) into a PNG."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise UserError("visualize needs matplotlib: `pip install matplotlib` (or dat-deploy[plots]).") from None

    width, height = image.size
    columns = max(positions[b.index].shape[0] for b in blocks)
    figure = Figure(figsize=(2.6 * columns, 2.8 * len(blocks) + (0.4 if title else 0)), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(blocks), columns, squeeze=False)
    drawn: dict[tuple[str, int], np.ndarray] = {}
    colours = ("#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#af52de", "#ff9500", "#5ac8fa", "#ff2d55")
    for row, block in enumerate(blocks):
        groups = positions[block.index].shape[0]
        for group in range(columns):
            ax = axes[row][group]
            ax.set_axis_off()
            if group >= groups:
                continue
            ax.imshow(np.asarray(image), extent=(-0.5, width - 0.5, height - 0.5, -0.5))
            if references is not None:
                ref = positions_to_pixels(references[block.index][group], width, height).reshape(-1, 2)
                ax.scatter(ref[:, 0], ref[:, 1], s=3, c="white", alpha=0.6, edgecolors="#555555", linewidths=0.2,
                           label=REFERENCE_LABEL)  # the grey rim shows the legend's marker on white
            points = positions_to_pixels(positions[block.index][group], width, height).reshape(-1, 2)
            artist = ax.scatter(points[:, 0], points[:, 1], s=7, c=colours[group % len(colours)],
                                edgecolors="black", linewidths=0.3, label=SAMPLED_LABEL)
            ax.set_xlim(-0.5, width - 0.5)
            ax.set_ylim(height - 0.5, -0.5)
            ax.set_title(f"stage {block.stage} block {block.block} group {group + 1}", fontsize=8)
            drawn[(block.label, group)] = np.asarray(artist.get_offsets(), dtype=np.float64)  # what is in the figure
    if title:
        figure.suptitle(title, fontsize=9)
    figure.tight_layout()
    # One legend for all panels, in the margin under them (the first panel's handles; colours vary by group).
    handles, labels = axes[0][0].get_legend_handles_labels()
    figure.subplots_adjust(bottom=min(0.3, 0.45 / (2.8 * len(blocks))))
    legend = figure.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=8, frameon=False,
                           markerscale=2.0)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    out_path = Path(out_path)
    with atomic_path(out_path, overwrite) as tmp:
        tmp.write_bytes(buffer.getvalue())
    return Visualization(out_path, list(blocks), drawn, [t.get_text() for t in legend.get_texts()])


def visualize(
    image: ImageLike,
    variant: str,
    out_path: str | Path,
    weights: str | Path | None = None,
    blocks: Sequence[str] | None = None,
    overwrite: bool = False,
    model=None,
) -> Visualization:
    """Run `variant` on `image` and draw the sampling points of the chosen deformable blocks."""
    from dat_deploy.model import create_model, get_variant

    spec = get_variant(variant)
    available = deformable_blocks(spec.arch.stage_specs)
    if not available:
        raise UserError(f"variant {variant} has no deformable blocks to visualise.")
    chosen = select_blocks(available, blocks)  # before building the model: a typo fails fast
    check_not_exists(Path(out_path), overwrite)  # likewise an existing or unwritable output
    check_creatable_dir(Path(out_path).parent)
    if model is None:
        model = create_model(variant, weights=weights)
    crop = resize_and_crop(as_rgb_image(image), spec.input_size, spec.resize_size)
    batch = normalize(np.asarray(crop), spec.mean, spec.std)[None]
    positions, references = sampling_positions(model, batch)
    random_note = " (random weights: points are untrained)" if weights is None else ""
    return draw_sampling_points(crop, positions, chosen, out_path, references,
                                title=f"{spec.title} deformable sampling points{random_note}", overwrite=overwrite)
