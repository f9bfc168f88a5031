"""Regenerate the golden logits that pin our DAT / DAT++ to the official implementation.

How the committed goldens (tests/data/goldens/<variant>.npz, tests/data/official_keys.json) were made:

* Official code, never part of this repository, passed in as two folders that each hold the
  repository's `models/` and `configs/`:
    --official-cvpr  github.com/LeapLabTHU/DAT at tag CVPR2022 (commit 566a593daf96efc3df58a1542e60b847b8b6f4ff): DAT
    --official-main  github.com/LeapLabTHU/DAT branch main (commit 32173fcf10d71abe73267f4e99829cd8624b7ab6): DAT++
  (e.g. `git clone https://github.com/LeapLabTHU/DAT && git -C DAT worktree add ../DAT-cvpr CVPR2022`).
  Each variant is built exactly as the official `build_model` does, `DAT(**cfg.MODEL.DAT)` from its yaml
  (dat_tiny/small/base/base_384.yaml at either ref). DAT-B++ 384's config keeps img_size 224, so it is
  built with 224-shaped position tables and evaluated on 384x384 inputs, as the official evaluation does.
* timm is replaced by a stub of the three helpers the official code imports (DropPath, to_2tuple,
  trunc_normal_); none of them affects an eval-mode forward with loaded weights.
* DAT++'s neighborhood attention runs on natten 0.14.6 built from its sdist, CPU-only, against torch 2.13.0
  (the four `natten{1,2}d{av,qkrpb}_cpu_kernel.cpp` lambdas patched to take `const Vec&`, nothing else).
  The goldens were made with torch 2.13.0+cpu, float32, eval mode. The npz's `meta` entry records the
  versions and a sha256 of the official `models/*.py` that produced it.
* Weights: `seeded_state_dict(official_model.state_dict(), seed=0)` (dat_deploy/model/seeded_init.py:
  one generator per key, seeded by the crc32 of the key name), loaded with strict=True. Our model has the
  same keys, so the test regenerates the same weights from its own state_dict.
* Inputs: tests/golden_inputs.py `golden_input(batch, height, width)` (randn from a generator seeded with
  1234 + batch); cases per variant from `golden_cases`: batch 1 and 3 at the evaluation size, and for DAT++
  also batch 2 at 224x288.
* Stored per variant: `logits_<case>` float32 (the official forward's first output), and for dat_t /
  dat_pp_t the batch-1 sampling positions and reference points of every deformable block in forward order,
  `positions_<i>` / `references_<i>` of shape (B, groups, Hk, Wk, 2), (y, x) order. DAT returns them from
  its forward; DAT++ discards them, so they are read from each DAttentionBaseline's outputs with a hook.

Usage:
    python scripts/make_goldens.py --official-cvpr DAT-cvpr --official-main DAT-main [--variants dat_t ...] [--overwrite]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import golden_inputs as gi  # noqa: E402
from dat_deploy.atomic import atomic_path  # noqa: E402
from dat_deploy.model.seeded_init import seeded_state_dict  # noqa: E402


# sha256 of the official models/*.py (see OfficialCode.fingerprint) at the refs the goldens pin.
KNOWN_SOURCES = {
    "c6ba172dd1313f1a1b1e6c56d99bf393d774523b2a3f4246cf6c5a78252545c0": "LeapLabTHU/DAT@CVPR2022 (566a593)",
    "77c2ac5474b0863562c31e8c5fc0987477fb6b1be4af3b1b99adae4e874adb96": "LeapLabTHU/DAT@main (32173fc)",
}


def install_timm_stub() -> None:
    """A fake `timm.models.layers` with the three helpers the official models import."""
    if "timm.models.layers" in sys.modules:
        return

    class DropPath(torch.nn.Module):
        def __init__(self, drop_prob: float = 0.0):
            super().__init__()
            self.drop_prob = drop_prob

        def forward(self, x):
            if self.drop_prob == 0.0 or not self.training:
                return x
            keep = 1.0 - self.drop_prob
            mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
            return x * mask / keep

    def to_2tuple(x):
        return tuple(x) if isinstance(x, (tuple, list)) else (x, x)

    layers = types.ModuleType("timm.models.layers")
    layers.DropPath = DropPath
    layers.to_2tuple = to_2tuple
    layers.trunc_normal_ = torch.nn.init.trunc_normal_
    models = types.ModuleType("timm.models")
    models.layers = layers
    timm = types.ModuleType("timm")
    timm.models = models
    sys.modules.update({"timm": timm, "timm.models": models, "timm.models.layers": layers})


class OfficialCode:
    """One official source tree (models/ + configs/), imported under its own package name."""

    def __init__(self, root: Path, family: str):
        self.root = Path(root)
        self.family = family
        for sub in ("models/dat.py", "models/dat_blocks.py", "configs"):
            if not (self.root / sub).exists():
                sys.exit(f"error: {self.root / sub} not found; pass the official repository checkout (models/ and configs/).")
        install_timm_stub()
        alias = f"official_{family}_models"
        if alias not in sys.modules:
            init = self.root / "models" / "__init__.py"
            spec = importlib.util.spec_from_file_location(alias, init, submodule_search_locations=[str(init.parent)])
            package = importlib.util.module_from_spec(spec)
            sys.modules[alias] = package
            spec.loader.exec_module(package)
        if self.fingerprint() not in KNOWN_SOURCES:
            print(f"warning: {self.root}/models is not the pinned official code; goldens will say so", file=sys.stderr)
        self.dat = importlib.import_module(f"{alias}.dat")
        self.blocks = importlib.import_module(f"{alias}.dat_blocks")

    def model_kwargs(self, config: str) -> dict:
        with open(self.root / "configs" / config) as f:
            return dict(yaml.safe_load(f)["MODEL"]["DAT"])

    def build(self, config: str) -> torch.nn.Module:
        return self.dat.DAT(**self.model_kwargs(config)).eval()

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in sorted((self.root / "models").glob("*.py")):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()

    def git_commit(self) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(self.root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return None
        return out.stdout.strip()


@torch.no_grad()
def official_forward(code: OfficialCode, model: torch.nn.Module, x: torch.Tensor):
    """(logits, positions, references); positions/references list every deformable block in forward order."""
    if code.family == "dat":
        logits, positions, references = model(x)
        flat = [(p, r) for stage_p, stage_r in zip(positions, references) for p, r in zip(stage_p, stage_r) if p is not None]
        return logits, [p for p, _ in flat], [r for _, r in flat]
    captured = []
    hooks = [
        m.register_forward_hook(lambda _m, _i, out: captured.append((out[1], out[2])))
        for m in model.modules()
        if isinstance(m, code.blocks.DAttentionBaseline)
    ]
    try:
        logits = model(x)[0]
    finally:
        for h in hooks:
            h.remove()
    return logits, [p for p, _ in captured], [r for _, r in captured]


def seeded_official(code: OfficialCode, variant: str) -> torch.nn.Module:
    """The official model of `variant` with the seeded golden weights, counts checked against dat_model.md."""
    spec = gi.OFFICIAL[variant]
    model = code.build(spec.config)
    state = model.state_dict()
    params = sum(p.numel() for p in model.parameters())
    buffers = len(dict(model.named_buffers()))
    got = (params, len(state), buffers)
    want = (spec.params, spec.keys, spec.buffers)
    if got != want:
        sys.exit(f"error: official {variant} has (params, keys, buffers) {got}, expected {want}: wrong source tree?")
    model.load_state_dict(seeded_state_dict(state, seed=gi.WEIGHT_SEED), strict=True)
    return model.eval()


def key_table(model: torch.nn.Module) -> dict[str, list]:
    return {k: [list(v.shape), str(v.dtype).removeprefix("torch.")] for k, v in model.state_dict().items()}


def natten_version() -> str:
    try:
        import natten
    except ImportError:
        return "not installed"
    return getattr(natten, "__version__", "unknown")


def make_golden(code: OfficialCode, variant: str, overwrite: bool) -> dict[str, list]:
    model = seeded_official(code, variant)
    arrays: dict[str, np.ndarray] = {}
    for batch, height, width in gi.golden_cases(variant):
        logits, positions, references = official_forward(code, model, gi.golden_input(batch, height, width))
        arrays[f"logits_{gi.case_name(batch, height, width)}"] = logits.float().numpy()
        size = gi.OFFICIAL[variant].eval_size
        if variant in gi.POSITION_VARIANTS and (batch, height, width) == (1, size, size):
            for i, (p, r) in enumerate(zip(positions, references)):
                arrays[f"positions_{i}"] = p.float().numpy()
                arrays[f"references_{i}"] = r.float().numpy()
        print(f"  {variant} {gi.case_name(batch, height, width)}: |logits| max {logits.abs().max():.3f}, "
              f"{len(positions)} deformable blocks", flush=True)
    meta = {
        "variant": variant,
        "official_family": code.family,
        "official_config": gi.OFFICIAL[variant].config,
        "official_source": KNOWN_SOURCES.get(code.fingerprint(), "unrecognised models/ (not a pinned ref)"),
        "official_git_commit": code.git_commit(),
        "official_models_sha256": code.fingerprint(),
        "torch": torch.__version__,
        "natten": natten_version() if code.family == "dat_pp" else None,
        "weight_seed": gi.WEIGHT_SEED,
        "input_seed_base": gi.INPUT_SEED_BASE,
    }
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    path = gi.golden_path(variant)
    with atomic_path(path, overwrite=overwrite) as tmp, open(tmp, "wb") as f:
        np.savez(f, **arrays)
    path.chmod(0o644)  # the temporary file was private
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size} bytes)", flush=True)
    return key_table(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official-cvpr", type=Path, required=True, help="official DAT at tag CVPR2022 (models/, configs/)")
    parser.add_argument("--official-main", type=Path, required=True, help="official DAT at branch main (models/, configs/)")
    parser.add_argument("--variants", nargs="+", choices=list(gi.OFFICIAL), default=list(gi.OFFICIAL))
    parser.add_argument("--overwrite", action="store_true", help="replace existing golden files")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    roots = {"dat": args.official_cvpr, "dat_pp": args.official_main}
    codes: dict[str, OfficialCode] = {}
    keys_path = gi.OFFICIAL_KEYS_FILE
    tables = json.loads(keys_path.read_text()) if keys_path.exists() else {}
    for variant in args.variants:
        family = gi.OFFICIAL[variant].family
        if family not in codes:
            codes[family] = OfficialCode(roots[family], family)
        tables[variant] = make_golden(codes[family], variant, args.overwrite)
    ordered = {v: tables[v] for v in gi.OFFICIAL if v in tables}
    # One key per line keeps the file diffable.
    lines = ["{"]
    for i, (variant, table) in enumerate(ordered.items()):
        lines.append(f"  {json.dumps(variant)}: {{")
        entries = [f"    {json.dumps(k)}: {json.dumps(v)}" for k, v in table.items()]
        lines.append(",\n".join(entries))
        lines.append("  }" + ("," if i < len(ordered) - 1 else ""))
    lines.append("}")
    with atomic_path(keys_path, overwrite=True) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    keys_path.chmod(0o644)
    print(f"wrote {keys_path.relative_to(REPO)}")


if __name__ == "__main__":
    main()
