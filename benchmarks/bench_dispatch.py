"""Two builds of libdat_ort_ops on the same plugin-flavour models, in one interleaved loop: e.g. the run-time
dispatching library against one compiled with -march=native for this machine.

    python benchmarks/bench_dispatch.py --baseline OLD.so --candidate NEW.so models/a/1/model.onnx ...

Each round runs every (model, library) case once, after an untimed 0.1 s pause (the previous session's spinning
workers go idle), so a drift of the machine hits all cases alike. Prints a markdown table: median latency per case
and candidate / baseline per model (above 1 = the candidate is slower).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np

from dat_deploy.profiling.machine import cpu_model
from dat_deploy.runtime.onnxruntime_backend import OrtBackend


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--baseline", type=Path, required=True)
    parser.add_argument("--candidate", type=Path, required=True)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    args = parser.parse_args(argv)

    cases = {}
    for model in args.models:
        for role, library in (("baseline", args.baseline), ("candidate", args.candidate)):
            backend = OrtBackend(model, intra_op_threads=args.threads, plugin_library=library)
            shape = backend.session.get_inputs()[0].shape[1:]
            batch = np.random.default_rng(0).standard_normal((args.batch, *shape)).astype(np.float32)
            cases[(model, role)] = (backend, batch, [])
    for round_index in range(args.warmup + args.runs):
        for backend, batch, samples in cases.values():
            time.sleep(0.1)
            start = time.perf_counter()
            backend.run(batch)
            if round_index >= args.warmup:
                samples.append(time.perf_counter() - start)
    print(f"CPU: {cpu_model()}; batch {args.batch}, {args.threads} threads, {args.runs} interleaved runs "
          f"after {args.warmup} warm-up rounds\n")
    print("| model | baseline median ms | candidate median ms | candidate / baseline | runs (ms) baseline; candidate |")
    print("|---|---|---|---|---|")
    for model in args.models:
        base = cases[(model, "baseline")][2]
        cand = cases[(model, "candidate")][2]
        b, c = statistics.median(base), statistics.median(cand)
        runs = ", ".join(f"{x * 1e3:.0f}" for x in base) + "; " + ", ".join(f"{x * 1e3:.0f}" for x in cand)
        print(f"| {model} | {b * 1e3:.1f} | {c * 1e3:.1f} | {c / b:.3f} | {runs} |")


if __name__ == "__main__":
    main()
