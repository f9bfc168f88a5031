"""Run ONNX graphs with libdat_ort_ops and save their outputs; a script, so that it can run in a subprocess under
another environment or an emulated CPU (`qemu-x86_64 -cpu Westmere python run_plugin_graphs.py ...`).

    python run_plugin_graphs.py LIBRARY OUT_DIR MODEL.onnx [MODEL.onnx ...]

Each MODEL.onnx is read with its inputs from MODEL.inputs.npz; the outputs go to OUT_DIR/<model stem>.npz. Prints
one JSON line: the CPU layer the library chose and why. Imports only numpy and onnxruntime (fast under emulation).
"""

from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort


def layer_report(library: str) -> dict[str, str]:
    lib = ctypes.CDLL(library)
    report = {}
    for name in ("dat_cpu_layer", "dat_cpu_layer_reason", "dat_cpu_layers_supported"):
        function = getattr(lib, name, None)
        if function is None:  # a library from before run-time dispatch: run its graphs all the same
            report[name.removeprefix("dat_cpu_")] = "(not reported by this library)"
            continue
        function.restype = ctypes.c_char_p
        report[name.removeprefix("dat_cpu_")] = function().decode()
    return report


def main(library: str, out_dir: str, *models: str) -> None:
    print(json.dumps(layer_report(library)), flush=True)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.register_custom_ops_library(library)
    for model in map(Path, models):
        session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
        feeds = dict(np.load(model.with_suffix(".inputs.npz")))
        outputs = session.run(None, feeds)
        np.savez(Path(out_dir) / f"{model.stem}.npz", **{o.name: v for o, v in zip(session.get_outputs(), outputs)})


if __name__ == "__main__":
    main(*sys.argv[1:])
