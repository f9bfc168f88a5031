"""How much the U8S8 saturation of CPUs without VNNI would cost an int8 model, measured on this model's own data.

On AVX2 and AVX-512 without VNNI, MLAS multiplies uint8 activations by int8 weights with VPMADDUBSW: each pair
of adjacent products along K is summed into int16 with saturation, then pairs of those are added in int32
(VPMADDWD). Full-range int8 weights can exceed int16 there (255 * 127 * 2 = 64770); 7-bit weights
(`reduce_range`) cannot (255 * 64 * 2 = 32640). Here the int8 products of each quantized Gemm / MatMul are
computed both exactly and with that int16 step, on the activations the fp32 graph produces for real images
and the scales and zero points the int8 graph holds, wherever the CPU running this is.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

INT16_MIN, INT16_MAX = -32768, 32767


def emulated_u8s8(a: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    """(a @ w with VPMADDUBSW's saturated int16 pair sums, share of pair sums that saturated). a: (M, K) uint8, w: (K, N) int8."""
    a = a.astype(np.int32)
    w = w.astype(np.int32)
    if a.shape[1] % 2:
        a = np.pad(a, ((0, 0), (0, 1)))
        w = np.pad(w, ((0, 1), (0, 0)))
    pairs = a[:, 0::2, None] * w[None, 0::2, :] + a[:, 1::2, None] * w[None, 1::2, :]  # (M, K/2, N)
    clipped = np.clip(pairs, INT16_MIN, INT16_MAX)
    return clipped.sum(axis=1, dtype=np.int64), float(np.mean(clipped != pairs))


def _sqnr_db(exact: np.ndarray, noisy: np.ndarray) -> float:
    noise = np.linalg.norm((exact - noisy).astype(np.float64))
    return float("inf") if noise == 0 else float(20 * np.log10(np.linalg.norm(exact.astype(np.float64)) / noise))


def saturation_report(float_path: Path, int8_path: Path, images: np.ndarray, library: Path | None,
                      rows: int = 256, seed: int = 0) -> list[dict]:
    """Per quantized Gemm / MatMul of an onnxruntime-recipe int8 graph: saturating pair share and the output's SQNR."""
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    q = onnx.load(str(int8_path))
    init = {i.name: numpy_helper.to_array(i) for i in q.graph.initializer}
    producer = {o: n for n in q.graph.node for o in n.output}
    layers = []
    for node in q.graph.node:
        if node.op_type not in ("Gemm", "MatMul") or node.input[0] not in producer or node.input[1] not in producer:
            continue
        act_dq, w_dq = producer[node.input[0]], producer[node.input[1]]
        if act_dq.op_type != "DequantizeLinear" or w_dq.op_type != "DequantizeLinear" or w_dq.input[0] not in init:
            continue
        act_q = producer.get(act_dq.input[0])
        if act_q is None or act_q.op_type != "QuantizeLinear":
            continue
        weight = init[w_dq.input[0]]
        trans_b = any(a.name == "transB" and a.i for a in node.attribute)
        layers.append({"node": node.name, "tensor": act_q.input[0], "scale": float(init[act_q.input[1]]),
                       "zero_point": int(init[act_q.input[2]]), "weight": weight.T if trans_b else weight})
    model = onnx.load(str(float_path))
    known = {o.name for o in model.graph.output}
    for layer in layers:
        if layer["tensor"] not in known:
            model.graph.output.append(onnx.helper.make_empty_tensor_value_info(layer["tensor"]))
            known.add(layer["tensor"])
    options = ort.SessionOptions()
    if library is not None:
        options.register_custom_ops_library(str(library))
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(None, {session.get_inputs()[0].name: images})))
    rng = np.random.default_rng(seed)
    report = []
    for layer in layers:
        x = values[layer["tensor"]].reshape(-1, layer["weight"].shape[0])
        x = x[rng.choice(len(x), size=min(rows, len(x)), replace=False)]
        a = np.clip(np.round(x / layer["scale"]) + layer["zero_point"], 0, 255).astype(np.uint8)
        weight = layer["weight"].astype(np.int64)
        exact = a.astype(np.int64) @ weight
        emulated, share = emulated_u8s8(a, layer["weight"])
        signal = exact - layer["zero_point"] * weight.sum(axis=0)  # what the layer computes: (a - zero point) @ w
        report.append({"node": layer["node"], "k": int(weight.shape[0]), "saturating_pairs": share,
                       "sqnr_db": _sqnr_db(signal, signal - (exact - emulated))})
    return report
