"""Export time and peak memory per variant, each export in its own process (so peaks don't mix).

    python benchmarks/bench_export.py [--variants dat_t,dat_pp_t] [--flavor standard|plugin] [--layout fast|official] [--output reports/bench_export.json]

Every export is also checked against PyTorch in onnxruntime (the exporter refuses to write a graph
that does not match), so a full run doubles as a parity check of every variant.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

from rich.console import Console
from rich.table import Table

CHILD = r"""
import json, resource, sys, time
from dat_deploy.export import export_onnx
start = time.perf_counter()
result = export_onnx(sys.argv[1], output_dir=sys.argv[2], flavor=sys.argv[3], layout=sys.argv[4])
worst = max(o.max_abs for r in result.parity.results for o in r.outputs)
top1 = min(o.top1_agreement for r in result.parity.results for o in r.outputs)
print(json.dumps({"variant": sys.argv[1], "flavor": sys.argv[3], "layout": sys.argv[4], "seconds": time.perf_counter() - start,
                  "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "onnx_mib": result.onnx_path.stat().st_size / 2**20, "max_abs": worst, "top1": top1}))
"""


def main() -> None:
    from dat_deploy.model.variants import zoo_variants

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants", default=",".join(zoo_variants()))
    parser.add_argument("--flavor", default="standard", choices=["standard", "plugin"])
    parser.add_argument("--layout", default="fast", choices=["fast", "official"])
    parser.add_argument("--output", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    console = Console()
    for variant in args.variants.split(","):
        with tempfile.TemporaryDirectory() as tmp, console.status(f"exporting {variant}"):
            done = subprocess.run([sys.executable, "-c", CHILD, variant, tmp, args.flavor, args.layout], capture_output=True, text=True)
        if done.returncode != 0:
            console.print(f"[red]{variant} failed[/]: {done.stderr.strip().splitlines()[-1:]}")
            rows.append({"variant": variant, "error": done.stderr.strip().splitlines()[-1:]})
            continue
        rows.append(json.loads(done.stdout.strip().splitlines()[-1]))
        console.print(rows[-1])
    table = Table(title=f"{args.flavor} export, {args.layout} layout: time, peak memory, parity (onnxruntime CPU vs PyTorch, fp32, batch 1 and 3)")
    for column in ("variant", "seconds", "peak RSS MiB", "ONNX MiB", "max abs logits", "top-1 agree"):
        table.add_column(column)
    for r in rows:
        if "error" in r:
            table.add_row(r["variant"], "failed", "", "", "", "")
        else:
            table.add_row(r["variant"], f"{r['seconds']:.1f}", f"{r['peak_rss_mib']:.0f}", f"{r['onnx_mib']:.0f}",
                          f"{r['max_abs']:.2e}", f"{r['top1']:.0%}")
    console.print(table)
    output = args.output or Path(f"reports/bench_export_{args.flavor}_{args.layout}.json")
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(rows, indent=2))
    console.print(f"written {output}")


if __name__ == "__main__":
    main()
