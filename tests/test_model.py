"""The PyTorch model: checkpoint loading in the official layouts, features, positions, neighborhood attention.

Numerical equality with the official code is pinned by test_golden_parity.py; here the
independent references are hand-written loops (NATTEN's window rules) and round trips.
"""

from __future__ import annotations

import itertools
import zipfile

import pytest
import torch

from dat_deploy.errors import UserError
from dat_deploy.model import create_model, get_variant
from dat_deploy.model.attention import NeighborhoodAttention, reference_points
from dat_deploy.model.checkpoint import read_checkpoint


@pytest.fixture(scope="module")
def tiny_pp():
    return create_model("dat_pp_t")


@pytest.fixture(scope="module")
def x64():
    return torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def test_official_layout_round_trip_with_pickled_yacs_config(tmp_path, tiny_pp, x64):
    yacs = pytest.importorskip("yacs.config")
    config = yacs.CfgNode({"MODEL": yacs.CfgNode({"TYPE": "dat"}), "DATA": yacs.CfgNode({"IMG_SIZE": 224})})
    path = tmp_path / "dat_pp_tiny_in1k_224.pth"
    torch.save({"model": tiny_pp.state_dict(), "optimizer": {}, "epoch": 299, "max_accuracy": 83.86, "config": config}, path)
    loaded = create_model("dat_pp_t", weights=path, seed=123)  # a different seed: the file must win
    assert torch.equal(_logits(loaded, x64), _logits(tiny_pp, x64))
    assert loaded.provenance["weights_sha256"] and "random_init_seed" not in loaded.provenance


@pytest.mark.parametrize("layout", ["module_prefix", "state_dict_key", "safetensors"])
def test_other_layouts(tmp_path, tiny_pp, x64, layout):
    state = tiny_pp.state_dict()
    if layout == "safetensors":
        from safetensors.torch import save_file

        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "w.pth"
        wrapped = {f"module.{k}": v for k, v in state.items()} if layout == "module_prefix" else {"state_dict": state}
        torch.save(wrapped, path)
    assert torch.equal(_logits(create_model("dat_pp_t", weights=path, seed=5), x64), _logits(tiny_pp, x64))


def test_wrong_variant_lists_keys_and_names_the_right_one(tmp_path, tiny_pp):
    path = tmp_path / "pp_tiny.pth"
    torch.save({"model": tiny_pp.state_dict()}, path)
    with pytest.raises(UserError) as err:
        create_model("dat_pp_s", weights=path)
    message = str(err.value)
    assert str(path) in message and "mis-shaped keys" in message and "dat_pp_t" in message
    with pytest.raises(UserError, match="missing keys.*unexpected keys.*dat_pp_t"):
        create_model("dat_t", weights=path)


def test_truncated_and_missing_files(tmp_path, tiny_pp):
    good = tmp_path / "good.pth"
    torch.save({"model": tiny_pp.state_dict()}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 3])
    with pytest.raises(UserError, match="truncated or corrupt"):
        read_checkpoint(truncated)
    with pytest.raises(UserError, match="does not exist"):
        read_checkpoint(tmp_path / "absent.pth")
    not_a_dict = tmp_path / "list.pth"
    torch.save([1, 2, 3], not_a_dict)
    with pytest.raises(UserError, match="holds no state dict"):
        read_checkpoint(not_a_dict)


def test_untrusted_pickles_are_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"model": {"w": torch.zeros(1)}, "payload": zipfile.ZipInfo("x")}, path)
    with pytest.raises(UserError, match="could run code"):
        read_checkpoint(path)


def test_other_resolution_interpolates_position_tables(tmp_path, tiny_pp):
    path = tmp_path / "w.pth"
    torch.save({"model": tiny_pp.state_dict()}, path)
    model = create_model("dat_pp_t", weights=path, img_size=288)
    table = model.stages[0].attns[1].rpe_table
    assert table.shape == (2, 143, 143)
    expected = torch.nn.functional.interpolate(tiny_pp.stages[0].attns[1].rpe_table[None], (143, 143), mode="bicubic")[0]
    assert torch.allclose(table, expected)


def test_features_only_strides_and_classifier_checkpoint(tmp_path, tiny_pp, x64):
    path = tmp_path / "w.pth"
    torch.save({"model": tiny_pp.state_dict()}, path)
    backbone = create_model("dat_pp_t", weights=path, features_only=True)
    with torch.no_grad():
        maps = backbone(x64)
    dims = get_variant("dat_pp_t").arch.dims
    assert [tuple(m.shape) for m in maps] == [(2, dims[i], 64 // 4 // 2**i, 96 // 4 // 2**i) for i in range(4)]
    assert all(torch.isfinite(m).all() for m in maps)


def test_positions_and_references_shapes_and_formulas(tiny_pp, x64):
    with torch.no_grad():
        _, positions, references = tiny_pp(x64, return_positions=True)
    assert len(positions) == 14  # DAT-T++: 1 + 2 + 9 + 2 deformable blocks
    first = references[0]
    assert first.shape == (2, 1, 2, 3, 2)  # 64x96 input: stage-1 map 16x24, stride 8 -> 2x3 keys
    # DAT++'s asymmetric reference grid: ((i + 0.5) / (Hk - 1)) * 2 - 1
    assert torch.allclose(first[0, 0, :, 0, 0], torch.tensor([0.5 / 1 * 2 - 1, 1.5 / 1 * 2 - 1]))
    assert all(p.abs().max() <= 1.0 for p in positions)  # DAT++ clamps
    dat_ref = reference_points(14, 14, "dat", torch.float32, torch.device("cpu"))
    assert torch.allclose(dat_ref[:, 0, 0], (torch.arange(14) + 0.5) / 14 * 2 - 1)


def _naive_neighborhood(module: NeighborhoodAttention, x: torch.Tensor) -> torch.Tensor:
    """NATTEN 0.14 semantics written as loops over queries: the independent reference."""
    k = module.kernel_size
    b, c, h0, w0 = x.shape
    xp = torch.nn.functional.pad(x.permute(0, 2, 3, 1), (0, 0, 0, max(0, k - w0), 0, max(0, k - h0)))
    h, w = xp.shape[1:3]
    qkv = module.qkv(xp).reshape(b, h, w, 3, module.heads, module.head_dim)
    q, key, val = qkv[..., 0, :, :] * module.scale, qkv[..., 1, :, :], qkv[..., 2, :, :]
    out = torch.zeros(b, h, w, module.heads, module.head_dim)
    for i, j in itertools.product(range(h), range(w)):
        si, sj = min(max(i - k // 2, 0), h - k), min(max(j - k // 2, 0), w - k)
        keys = key[:, si:si + k, sj:sj + k].reshape(b, k * k, module.heads, module.head_dim)
        vals = val[:, si:si + k, sj:sj + k].reshape(b, k * k, module.heads, module.head_dim)
        bias = module.rpb[:, si - i + k - 1: si - i + 2 * k - 1, sj - j + k - 1: sj - j + 2 * k - 1].reshape(module.heads, k * k)
        logits = torch.einsum("bhd,bnhd->bhn", q[:, i, j], keys) + bias
        out[:, i, j] = torch.einsum("bhn,bnhd->bhd", logits.softmax(-1), vals)
    out = module.proj(out.reshape(b, h, w, c))[:, :h0, :w0]
    return out.permute(0, 3, 1, 2)


@pytest.mark.parametrize("size", [(9, 11), (5, 8), (7, 7)])
def test_neighborhood_attention_matches_natten_rules(size):
    torch.manual_seed(0)
    module = NeighborhoodAttention(dim=16, kernel_size=7, heads=2)
    torch.nn.init.normal_(module.rpb, std=0.5)
    x = torch.randn(2, 16, *size)
    with torch.no_grad():
        got, _, _ = module(x)
        expected = _naive_neighborhood(module, x)
    assert got.shape == x.shape
    assert torch.allclose(got, expected, atol=1e-5)
