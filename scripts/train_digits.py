"""Train the small digits models (`dat_digits`, `dat_pp_digits`) whose accuracy shows what fp16 and int8 cost.

Data: scikit-learn's digits, rendered and preprocessed exactly as a deployed model's input
(dat_deploy/digits.py), the fixed stratified split (80% train, 20% held out, seed 0). Training: AdamW,
linear warm-up then cosine decay, cross-entropy, a seeded shuffle; seeded and deterministic as far as
torch allows on one machine (thread count and CPU can still change float rounding). Writes
tests/data/trained/<variant>.safetensors (fp32 state dict, loads strict) and records its sha256,
held-out accuracy and recipe in tests/data/trained/manifest.json.

Usage:
    python scripts/train_digits.py                       # both variants
    python scripts/train_digits.py --variant dat_digits --epochs 6
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from dat_deploy import atomic, digits
from dat_deploy.hashing import sha256_file
from dat_deploy.model import build, create_model
from dat_deploy.model.channels_last import ChannelsLastDAT
from dat_deploy.profiling.machine import cpu_model

# Per variant: epochs, peak learning rate. Chosen so each trains in minutes on 2 CPU cores.
RECIPES = {
    "dat_digits": {"epochs": 5, "lr": 2e-3, "augment": True},
    "dat_pp_digits": {"epochs": 10, "lr": 2e-3, "augment": False},
}
# Augmentation (training only, after the run-time preprocessing): a random affine map per image, rotation
# up to this many degrees, scale, and a shift up to this fraction of the image (0.1 = 0.8 source pixels).
ROTATE_DEGREES = 10.0
SCALE_RANGE = (0.9, 1.1)
SHIFT_FRACTION = 0.1
# One thread: the float sums then come in one order (reproducible), and on a shared, busy machine a second
# thread mostly spins at OpenMP barriers (measured: 4-6 CPU s per batch of 32 with two, 0.5-1 s with one).
THREADS = 1
BATCH = 32
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.1
TRAIN_SEED = 0


def learning_rate(step: int, total: int, peak: float) -> float:
    warmup = max(1, int(total * WARMUP_FRACTION))
    if step < warmup:
        return peak * (step + 1) / warmup
    return 0.5 * peak * (1.0 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def augment(x: torch.Tensor, variant: str, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, scale and shift of a preprocessed batch; uncovered pixels get the black background."""
    from dat_deploy.model import get_variant

    spec = get_variant(variant)
    background = ((0.0 - torch.tensor(spec.mean)) / torch.tensor(spec.std)).view(1, 3, 1, 1)
    n = x.shape[0]
    angle = (torch.rand(n, generator=generator) * 2 - 1) * math.radians(ROTATE_DEGREES)
    scale = SCALE_RANGE[0] + torch.rand(n, generator=generator) * (SCALE_RANGE[1] - SCALE_RANGE[0])
    shift = (torch.rand(n, 2, generator=generator) * 2 - 1) * SHIFT_FRACTION * 2  # normalised coordinates span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x - background, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + background


def evaluate(model: torch.nn.Module, variant: str) -> float:
    images, labels = digits.split_images("held_out")
    model.eval()
    with torch.inference_mode():
        acc, _ = digits.accuracy(lambda x: model(torch.from_numpy(x)).numpy(), variant, images, labels)
    return acc


def train(variant: str, epochs: int, lr: float, use_augment: bool, out_dir: Path) -> dict:
    torch.set_num_threads(THREADS)
    torch.manual_seed(TRAIN_SEED)
    torch.use_deterministic_algorithms(True, warn_only=True)
    images, labels = digits.split_images("train")
    model = build(variant)  # PyTorch's default initialisation, as the official training, drawn after manual_seed
    # The channels-last forward computes the same function on the same parameters (tests/test_channels_last.py);
    # for DAT++ its tiled neighborhood attention trains about 2x faster than the gather (whose backward scatters).
    forward = ChannelsLastDAT(model) if model.arch.family == "dat_pp" else model
    decay = [p for n, p in model.named_parameters() if p.ndim > 1 and "table" not in n and "rpb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim > 1 and "table" not in n and "rpb" not in n)]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": WEIGHT_DECAY},
                                   {"params": no_decay, "weight_decay": 0.0}], lr=lr)
    generator = torch.Generator().manual_seed(TRAIN_SEED)
    steps_per_epoch = math.ceil(len(images) / BATCH)
    total = epochs * steps_per_epoch
    step = 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(images), generator=generator).numpy()
        seen, correct, loss_sum = 0, 0, 0.0
        for first in range(0, len(order), BATCH):
            chosen = order[first:first + BATCH]
            x = torch.from_numpy(digits.preprocess_for(variant, [images[i] for i in chosen]))
            y = torch.from_numpy(labels[chosen])
            if use_augment:
                x = augment(x, variant, generator)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total, lr)
            logits = forward(x)
            loss = F.cross_entropy(logits, y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            optimizer.step()
            step += 1
            seen += len(chosen)
            correct += int((logits.argmax(1) == y).sum())
            loss_sum += float(loss.detach()) * len(chosen)
            if step % 10 == 0:
                print(f"  {variant} epoch {epoch + 1}/{epochs} step {step}/{total} loss {loss_sum / seen:.3f} "
                      f"train acc {100 * correct / seen:.1f}% ({time.perf_counter() - start:.0f} s)", flush=True)
        held = evaluate(model, variant)
        print(f"{variant} epoch {epoch + 1}/{epochs}: train loss {loss_sum / seen:.3f}, train acc "
              f"{100 * correct / seen:.1f}%, held-out acc {held:.2f}% ({time.perf_counter() - start:.0f} s)", flush=True)
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start

    model.eval()
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    from safetensors.torch import save_file

    path = out_dir / f"{variant}.safetensors"
    with atomic.atomic_path(path, overwrite=True) as tmp:
        save_file(state, str(tmp), metadata={"variant": variant, "format": "pt"})
    # the accuracy recorded is the saved file's, reloaded through the ordinary strict loader
    reloaded = evaluate(create_model(variant, weights=path), variant)
    indices = digits.split_indices()
    return {
        "file": path.name,
        "sha256": sha256_file(path),
        "bytes": path.stat().st_size,
        "held_out_accuracy": round(reloaded, 4),
        "held_out_images": len(indices["held_out"]),
        "train_images": len(indices["train"]),
        "split": {"seed": digits.SPLIT_SEED, "held_out_fraction": digits.HELD_OUT_FRACTION, "stratified": True,
                  "held_out_indices_sha256": digits.split_fingerprint()},
        "train_seed": TRAIN_SEED,
        "recipe": {"epochs": epochs, "batch": BATCH, "optimizer": "AdamW", "peak_lr": lr,
                   "weight_decay": WEIGHT_DECAY, "warmup_fraction": WARMUP_FRACTION, "schedule": "cosine",
                   "grad_clip": 5.0,
                   "augmentation": ({"rotate_degrees": ROTATE_DEGREES, "scale": list(SCALE_RANGE),
                                     "shift_fraction": SHIFT_FRACTION} if use_augment else None)},
        "train_seconds": round(seconds, 1),
        "train_cpu_seconds": round(cpu_seconds, 1),
        "cpu": cpu_model(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "command": "python " + " ".join(shlex.quote(a) for a in sys.argv),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", choices=list(RECIPES), action="append",
                        help="train only this variant (repeatable; default: both)")
    parser.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    parser.add_argument("--lr", type=float, help="override the recipe's peak learning rate")
    parser.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                        help="override the recipe's augmentation choice")
    parser.add_argument("--out", type=Path, default=digits.TRAINED_DIR, help="folder for weights and manifest")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    manifest_path = args.out / digits.MANIFEST_NAME
    for variant in args.variant or list(RECIPES):
        recipe = RECIPES[variant]
        use_augment = recipe["augment"] if args.augment is None else args.augment
        entry = train(variant, args.epochs or recipe["epochs"], args.lr or recipe["lr"], use_augment, args.out)
        print(f"{variant}: held-out accuracy {entry['held_out_accuracy']:.2f}% in {entry['train_seconds']:.0f} s, "
              f"{entry['bytes']:,} bytes, sha256 {entry['sha256']}", flush=True)
        # re-read before each write: the manifest keeps the other variant's entry
        manifest = json.loads(manifest_path.read_text()) if manifest_path.is_file() else {}
        manifest[variant] = entry
        atomic.write_text(manifest_path, json.dumps(manifest, indent=2, sort_keys=True) + "\n", overwrite=True)


if __name__ == "__main__":
    main()
