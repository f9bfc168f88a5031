"""Held-out accuracy of the trained digits models through the deployment paths, as a markdown table.

For each digits variant: PyTorch fp32 (the reference), the plugin-flavour ONNX export in onnxruntime
with our op library (fp32), and that graph after `convert-fp16`. Predictions are also compared with
PyTorch's (agreement = share of held-out images with the same top-1 class).

    python benchmarks/digits_accuracy.py [--out benchmarks/results/<date>-digits-accuracy.md]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import onnxruntime
import torch

from dat_deploy import digits
from dat_deploy.export import export_onnx
from dat_deploy.graph.fp16 import convert_file
from dat_deploy.model import create_model
from dat_deploy.profiling.machine import cpu_model
from dat_deploy.runtime.onnxruntime_backend import OrtBackend


def measure(variant: str, workdir: Path) -> list[tuple[str, float, float]]:
    images, labels = digits.split_images("held_out")
    model = create_model(variant, weights=digits.trained_weights(variant))
    with torch.inference_mode():
        reference, ref_classes = digits.accuracy(lambda x: model(torch.from_numpy(x)).numpy(), variant, images, labels)
    rows = [("PyTorch fp32", reference, 100.0)]
    exported = export_onnx(variant, output_dir=workdir, weights=digits.trained_weights(variant), flavor="plugin")
    fp16_path = workdir / f"{variant}_fp16.onnx"
    convert_file(exported.onnx_path, fp16_path)
    for label, path in (("onnxruntime plugin fp32", exported.onnx_path), ("onnxruntime plugin fp16", fp16_path)):
        backend = OrtBackend(path)
        accuracy, classes = digits.accuracy(lambda x: backend.run(x)["logits"], variant, images, labels)
        rows.append((label, accuracy, float((classes == ref_classes).mean() * 100.0)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    manifest = digits.read_manifest()
    lines = [f"Held-out split: {manifest[digits.DIGIT_VARIANTS[0]]['held_out_images']} images "
             f"(stratified 20%, seed {digits.SPLIT_SEED}); CPU {cpu_model()}; torch {torch.__version__}, "
             f"onnxruntime {onnxruntime.__version__}.", "",
             "| variant | path | top-1 % | agrees with PyTorch % |", "|---|---|---|---|"]
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for variant in digits.DIGIT_VARIANTS:
            for label, accuracy, agreement in measure(variant, Path(tmp)):
                lines.append(f"| {variant} | {label} | {accuracy:.2f} | {agreement:.2f} |")
                print(lines[-1], flush=True)
    lines += ["", f"({time.perf_counter() - start:.0f} s, `python benchmarks/digits_accuracy.py`)"]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
