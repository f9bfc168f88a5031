"""visualize: the points in the figure are the model's sampling positions, in pixel coordinates."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from dat_deploy.errors import UserError
from dat_deploy.model import create_model, get_variant
from dat_deploy.preprocess import preprocess, sample_images
from dat_deploy.visualize import deformable_blocks, positions_to_pixels, select_blocks, visualize


@pytest.fixture(scope="module")
def dat_t():
    return create_model("dat_t")


def test_pixel_convention_align_corners():
    # (y, x): -1 is the first pixel centre, +1 the last, 0 the middle
    pos = np.array([[-1.0, -1.0], [1.0, 1.0], [0.0, 0.0], [-1.0, 1.0]])
    assert positions_to_pixels(pos, width=224, height=100).tolist() == [[0, 0], [223, 99], [111.5, 49.5], [223, 0]]


def test_block_selection():
    blocks = deformable_blocks(get_variant("dat_t").arch.stage_specs)
    assert [b.label for b in blocks] == ["3.2", "3.4", "3.6", "4.2"]
    assert [b.label for b in select_blocks(blocks, None)] == ["3.6", "4.2"]
    assert len(select_blocks(blocks, ["all"])) == 4
    assert [b.index for b in select_blocks(blocks, ["3.4,4.2"])] == [1, 3]
    with pytest.raises(UserError, match="3.2, 3.4, 3.6, 4.2"):
        select_blocks(blocks, ["2.1"])


def test_drawn_points_are_the_model_positions(tmp_path, dat_t):
    _, image = sample_images()[1]
    out = tmp_path / "points.png"
    result = visualize(image, "dat_t", out, blocks=["3.4", "4.2"], model=dat_t)

    png = Image.open(out)
    assert png.format == "PNG" and png.size[0] > 500

    # independently: the evaluation transform, the model, and the align_corners pixel formula
    spec = get_variant("dat_t")
    batch = preprocess([image], spec.input_size, spec.resize_size, spec.mean, spec.std)
    with torch.no_grad():
        _, positions, references = dat_t(torch.from_numpy(batch), return_positions=True)
    size = spec.input_size
    assert set(result.points) == {("3.4", g) for g in range(3)} | {("4.2", g) for g in range(6)}
    for (label, group), drawn in result.points.items():
        index = {"3.4": 1, "4.2": 3}[label]
        pos = positions[index][0, group].reshape(-1, 2).double().numpy()
        expected = np.stack([(pos[:, 1] + 1) / 2 * (size - 1), (pos[:, 0] + 1) / 2 * (size - 1)], axis=1)
        np.testing.assert_allclose(drawn, expected, rtol=0, atol=1e-4)
        # what is drawn is the deformed points, not the regular reference grid
        grid = references[index][0, group].reshape(-1, 2).double().numpy()
        assert np.abs(drawn - np.stack([(grid[:, 1] + 1) / 2 * (size - 1),
                                        (grid[:, 0] + 1) / 2 * (size - 1)], axis=1)).max() > 1.0


def test_existing_png_is_not_overwritten(tmp_path, dat_t):
    out = tmp_path / "p.png"
    out.write_bytes(b"keep")
    with pytest.raises(UserError, match="already exists"):
        visualize(sample_images()[0][1], "dat_t", out, model=dat_t)
    assert out.read_bytes() == b"keep"


def test_cli_visualize(tmp_path):
    from dat_deploy.cli import app

    out = tmp_path / "chelsea.png"
    result = CliRunner().invoke(app, ["visualize", "sample:chelsea", "--variant", "dat_t", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert Image.open(out).format == "PNG" and "random weights" in result.output

    result = CliRunner().invoke(app, ["visualize", str(tmp_path / "missing.jpg"), "-o", str(tmp_path / "x.png")])
    assert result.exit_code != 0 and "missing.jpg" in str(result.exception)


def test_the_figure_has_a_legend_for_reference_grid_and_sampled_points(tmp_path):
    """The legend entries are read back from the drawn figure, not from the constants alone."""
    from dat_deploy.visualize import REFERENCE_LABEL, SAMPLED_LABEL, DeformableBlock, draw_sampling_points

    rng = np.random.default_rng(0)
    image = Image.fromarray(np.full((64, 64, 3), 128, np.uint8))
    ys = np.linspace(-1, 1, 4)
    reference = np.broadcast_to(np.stack(np.meshgrid(ys, ys, indexing="ij"), -1), (2, 4, 4, 2))
    result = draw_sampling_points(image, [reference + rng.normal(0, 0.1, reference.shape)], [DeformableBlock(0, 3, 2)],
                                  tmp_path / "v.png", [reference])
    assert result.legend == [REFERENCE_LABEL, SAMPLED_LABEL]
    assert "undeformed" in REFERENCE_LABEL and "offset" in SAMPLED_LABEL
    without_reference = draw_sampling_points(image, [reference], [DeformableBlock(0, 3, 2)], tmp_path / "w.png")
    assert without_reference.legend == [SAMPLED_LABEL]
