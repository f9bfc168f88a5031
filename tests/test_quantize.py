"""`dat-deploy quantize` on the smallest variant: the written folder, its graph, its accuracy against PyTorch fp32,
the TensorRT recipe's structure, drift exclusion, and the pieces (calibration images, CPU path, int8 tolerance)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from dat_deploy.errors import UserError
from dat_deploy.model.variants import VARIANTS
from dat_deploy.quantize import images as calibration_images
from dat_deploy.quantize.pipeline import quantize_folder
from dat_deploy.quantize.graph import int8_flavour, qdq_nodes
from dat_deploy.quantize.recipe import QUANTIZED_OPS, constant_weight_nodes

TINY = "dat_digits" if "dat_digits" in VARIANTS else "dat_t"  # the smallest DAT with every block kind
MATRIX_OPS = set(QUANTIZED_OPS)


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory):
    from dat_deploy.export import export_onnx

    root = tmp_path_factory.mktemp("quantize")
    return export_onnx(TINY, output_dir=root / "models", flavor="plugin")


@pytest.fixture(scope="module")
def tiny_int8(tiny_export):
    return quantize_folder(tiny_export.folder, images=16)


@pytest.fixture(scope="module")
def tiny_int8_trt(tiny_export):
    return quantize_folder(tiny_export.folder, output=tiny_export.folder.parent / "tiny_trt", images=16,
                           target="tensorrt")


def _consumers(model) -> dict[str, list]:
    found: dict[str, list] = {}
    for node in model.graph.node:
        for name in node.input:
            found.setdefault(name, []).append(node)
    return found


def _producers(model) -> dict[str, object]:
    return {out: node for node in model.graph.node for out in node.output}


def _held_out_cosines(int8_path: Path, variant: str) -> np.ndarray:
    """Per-image logit cosine of the int8 model (onnxruntime) against PyTorch fp32, on held-out photos."""
    from dat_deploy.model import create_model, get_variant
    from dat_deploy.runtime import OrtBackend, TorchBackend

    spec = get_variant(variant)
    prep = {"input_size": spec.input_size, "resize_size": spec.resize_size, "mean": spec.mean, "std": spec.std}
    batch = calibration_images.held_out_images(8, prep, seed=5)
    ref = TorchBackend(create_model(variant, seed=0)).run(batch)["logits"].astype(np.float64)
    got = OrtBackend(int8_path).run(batch)["logits"].astype(np.float64)
    return (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)


# ---- the written folder ---------------------------------------------------------------------------


def test_int8_folder_layout_and_sidecar(tiny_export, tiny_int8):
    folder = tiny_int8.folder
    assert folder == tiny_export.folder.parent / f"{tiny_export.folder.name}_int8"
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) == [
        "1/model.onnx", "config.pbtxt", "dat_deploy.json"]
    assert f'name: "{folder.name}"' in (folder / "config.pbtxt").read_text()
    sidecar = json.loads((folder / "dat_deploy.json").read_text())
    assert sidecar["precision"] == "int8" and sidecar["metadata"]["precision"] == "int8"
    assert sidecar["calibration"]["kind"] == "default" and sidecar["calibration"]["seed"] == 0
    assert sidecar["calibration"]["images"] == 16
    import onnxruntime

    assert sidecar["onnxruntime"] == onnxruntime.__version__
    assert sidecar["cpu_int8_path"]["path"]
    assert sidecar["validation"]["passed"] is True
    recipe = sidecar["quantization"]
    model = onnx.load(str(tiny_int8.onnx_path))
    assert {p.key: p.value for p in model.metadata_props}["precision"] == "int8"
    source = onnx.load(str(tiny_export.onnx_path))
    assert sorted(recipe["quantized_nodes"]) == sorted(n.name for n in constant_weight_nodes(source))


def test_int8_graph_quantizes_only_matrix_product_inputs(tiny_export, tiny_int8):
    model = onnx.load(str(tiny_int8.onnx_path))
    consumers, producers = _consumers(model), _producers(model)
    initializers = {i.name: i for i in model.graph.initializer}
    assert int8_flavour(model) == "onnxruntime"
    dq_fed = set()
    for node in qdq_nodes(model):
        if node.op_type != "DequantizeLinear":
            continue
        readers = consumers.get(node.output[0], [])
        quantize = producers.get(node.input[0])
        if quantize is not None and producers.get(quantize.input[0]) is not None \
                and producers[quantize.input[0]].op_type == "Conv":
            continue  # a Conv's uint8 output (QLinearConv in onnxruntime), dequantized for whatever follows
        assert readers and all(r.op_type in MATRIX_OPS for r in readers), (node.name, [r.op_type for r in readers])
        dq_fed.update(r.name for r in readers)
    quantized = {n.name for n in constant_weight_nodes(onnx.load(str(tiny_export.onnx_path)))}
    assert quantized <= dq_fed  # every constant-weight matrix product takes int8 inputs
    for node in model.graph.node:
        if node.domain == "dat":  # the dat ops keep float inputs and are never fed by a DequantizeLinear
            assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
        if node.op_type in ("Gemm", "MatMul") and node.name in quantized:
            weight = producers[node.input[1]]
            scale = numpy_helper.to_array(initializers[weight.input[1]])
            assert scale.ndim == 1 and scale.size > 1  # per output channel
            assert not np.any(numpy_helper.to_array(initializers[weight.input[2]]))  # symmetric weights


def test_cpu_fusions_apply_only_to_what_stayed_float(tiny_int8):
    from dat_deploy.graph.cpu_fusions import fuse_add_layer_norm, fuse_bias_gelu, fuse_small_gemms

    model = onnx.load(str(tiny_int8.onnx_path))
    counts = [fuse_bias_gelu(model), fuse_add_layer_norm(model), fuse_small_gemms(model)]
    assert counts[0] + counts[1] > 0  # the float parts (GELU, residual + LayerNorm) still fuse
    producers = _producers(model)
    for node in model.graph.node:
        if node.name in tiny_int8.recipe.quantized_nodes:  # still the quantized op, still fed by its DequantizeLinear
            assert node.op_type in MATRIX_OPS and producers[node.input[1]].op_type == "DequantizeLinear"
    assert {n.name for n in model.graph.node} >= set(tiny_int8.recipe.quantized_nodes)


def test_int8_matches_pytorch_fp32_on_held_out_photos(tiny_int8):
    cosines = _held_out_cosines(tiny_int8.onnx_path, TINY)
    assert cosines.mean() >= 0.99 and cosines.min() >= 0.98, cosines


def test_validate_judges_int8_artifacts_against_pytorch(tiny_int8):
    from dat_deploy.parity.validate import validate_artifact

    report = validate_artifact(tiny_int8.folder)
    assert report.precision == "int8" and report.reference.startswith("torch")
    assert report.passed
    logits = report.results[0].outputs[0]
    assert logits.mean_image_cosine >= 0.99 and logits.top5_overlap is not None
    strict = validate_artifact(tiny_int8.folder, limits={"min_mean_cosine": 0.999999})  # settable, and biting
    assert not strict.passed


# ---- TensorRT recipe ----------------------------------------------------------------------------


def test_tensorrt_graph_is_symmetric_int8_on_matrix_product_inputs_only(tiny_export, tiny_int8_trt):
    model = onnx.load(str(tiny_int8_trt.onnx_path))
    consumers, producers = _consumers(model), _producers(model)
    initializers = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    assert int8_flavour(model) == "tensorrt"
    for node in qdq_nodes(model):
        zero = initializers[node.input[2]]
        assert zero.dtype == np.int8 and not np.any(zero)  # all zero points 0
        if node.op_type == "DequantizeLinear":
            assert all(r.op_type in MATRIX_OPS for r in consumers[node.output[0]])
            if node.input[0] in initializers:  # a weight: clamped to [-127, 127] as TensorRT's peers do
                assert initializers[node.input[0]].min() >= -127
        else:  # a Q reads a float activation and feeds only its DQ: no quantized outputs
            assert [r.op_type for r in consumers[node.output[0]]] == ["DequantizeLinear"]
            assert producers.get(node.input[0]) is None or producers[node.input[0]].op_type not in MATRIX_OPS
    for node in model.graph.node:
        if node.op_type in ("Gemm", "Conv") and len(node.input) > 2 and node.input[2]:
            assert node.input[2] in initializers and initializers[node.input[2]].dtype == np.float32  # float bias
        if node.domain == "dat":
            assert all(producers.get(i) is None or producers[i].op_type not in ("QuantizeLinear", "DequantizeLinear")
                       for i in node.input)
    source = onnx.load(str(tiny_export.onnx_path))
    assert [(n.op_type, list(n.attribute)) for n in source.graph.node if n.domain == "dat"] == \
        [(n.op_type, list(n.attribute)) for n in model.graph.node if n.domain == "dat"]  # plugins untouched
    assert _held_out_cosines(tiny_int8_trt.onnx_path, TINY).mean() >= 0.99  # it runs in onnxruntime too


def test_build_trt_takes_int8_from_the_graph(tiny_export, tiny_int8, tiny_int8_trt):
    from dat_deploy.trt.build import graph_int8
    from dat_deploy.trt.source import read_source

    assert graph_int8(read_source(tiny_int8_trt.onnx_path), insist=True, fp16=False) is True
    assert graph_int8(read_source(tiny_export.onnx_path), insist=False, fp16=False) is False
    with pytest.raises(UserError, match="no Q/DQ"):
        graph_int8(read_source(tiny_export.onnx_path), insist=True, fp16=False)
    with pytest.raises(UserError, match="--target tensorrt"):
        graph_int8(read_source(tiny_int8.onnx_path), insist=False, fp16=False)


# ---- drift exclusion ----------------------------------------------------------------------------


def test_failing_gate_leaves_drifting_layers_float_and_refuses_to_write(tiny_export, tmp_path):
    out = tmp_path / "refused"
    result = quantize_folder(tiny_export.folder, output=out, images=8, limits={"min_mean_cosine": 0.9999999})
    assert not result.written and not out.exists()
    assert result.drift_rounds, "the drift search did not run"
    drifted = {name for name, why in result.recipe.float_nodes.items() if why.startswith("drift")}
    assert drifted and not drifted & set(result.recipe.quantized_nodes)
    assert drifted == {n for r in result.drift_rounds for n in r["left_float"]}


def test_excluded_nodes_stay_float(tiny_export, tmp_path):
    source = onnx.load(str(tiny_export.onnx_path))
    first = constant_weight_nodes(source)[0].name
    result = quantize_folder(tiny_export.folder, output=tmp_path / "excl", images=8, exclude=[first], check=False)
    model = onnx.load(str(result.onnx_path))
    producers = _producers(model)
    node = next(n for n in model.graph.node if n.name == first)
    assert all(producers.get(i) is None or producers[i].op_type != "DequantizeLinear" for i in node.input)
    sidecar = json.loads((result.folder / "dat_deploy.json").read_text())
    assert sidecar["quantization"]["float_nodes"] == {first: f"--exclude {first}"}


@pytest.mark.parametrize("method", ["percentile", "entropy"])
def test_histogram_methods_clip_inside_the_minmax_range(tiny_export, tmp_path, method):
    from onnxruntime.quantization.calibrate import load_tensors_data

    from dat_deploy.native import ort_library_path
    from dat_deploy.quantize.calibrate import write_calibration_cache

    prep = {"input_size": 224, "resize_size": 224, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225)}
    batch = calibration_images.default_calibration_set(4, prep).batch
    ranges = {}
    for name in ("minmax", method):
        cache = tmp_path / name / "ranges.json"
        cache.parent.mkdir()
        write_calibration_cache(tiny_export.onnx_path, batch, name, cache, ort_library_path(), list(QUANTIZED_OPS))
        ranges[name] = {k: (float(np.min(v.range_value[0])), float(np.max(v.range_value[1])))
                        for k, v in load_tensors_data(cache).data.items()}
    assert ranges["minmax"].keys() == ranges[method].keys()
    clipped = 0
    for tensor, (low, high) in ranges[method].items():
        bound = max(abs(x) for x in ranges["minmax"][tensor]) * (1 + 1e-5)
        assert abs(low) <= bound and abs(high) <= bound, tensor
        clipped += max(abs(low), abs(high)) < 0.999 * bound
    if method == "percentile":  # 99.999% of |x|: some tensor has outliers past it (entropy may keep the full range)
        assert clipped > 0


# ---- calibration images -------------------------------------------------------------------------

PREP = {"input_size": 32, "resize_size": 36, "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}


def test_default_calibration_set_is_seeded_and_never_uses_the_sample_photos():
    from dat_deploy.preprocess import sample_images

    a = calibration_images.default_calibration_set(6, PREP, seed=3)
    b = calibration_images.default_calibration_set(6, PREP, seed=3)
    c = calibration_images.default_calibration_set(6, PREP, seed=4)
    assert a.batch.shape == (6, 3, 32, 32) and a.batch.dtype == np.float32
    np.testing.assert_array_equal(a.batch, b.batch)
    assert not np.array_equal(a.batch, c.batch)
    assert a.source["seed"] == 3 and a.source["images"] == 6
    assert not {name for name, _ in sample_images()} & set(calibration_images.CALIBRATION_PHOTOS)
    held = calibration_images.held_out_images(5, PREP)
    assert not any(np.allclose(h, x) for h in held for x in a.batch)


def test_folder_calibration_set_names_skips_and_hashes(tmp_path):
    from PIL import Image

    good = tmp_path / "a.png"
    Image.fromarray(np.full((40, 50, 3), 200, np.uint8)).save(good)
    (tmp_path / "b.jpg").write_bytes(b"not an image")
    calib = calibration_images.folder_calibration_set(tmp_path, 10, PREP)
    assert len(calib.batch) == 1 and calib.skipped and "b.jpg" in calib.skipped[0]
    assert calib.source["images"] == [{"name": "a.png", "sha256": hashlib.sha256(good.read_bytes()).hexdigest()}]
    expected = (200 / 255 - 0.5) / 0.25
    np.testing.assert_allclose(calib.batch, expected, rtol=1e-6)
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(UserError, match="no image Pillow can read"):
        calibration_images.folder_calibration_set(empty, 10, PREP)


# ---- the CPU's int8 path and the int8 tolerance ---------------------------------------------------


@pytest.mark.parametrize("flags, path, overflow", [
    ({"avx2", "fma", "sse4_1"}, "AVX2 (VPMADDUBSW)", True),
    ({"avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl"}, "AVX-512 core (VPMADDUBSW)", True),
    ({"avx2", "avx512f", "avx512bw", "avx512dq", "avx512vl", "avx512_vnni"}, "AVX-512 VNNI", False),
    ({"avx2", "avx_vnni"}, "AVX-VNNI", False),
])
def test_int8_path_from_cpu_flags(monkeypatch, flags, path, overflow):
    from dat_deploy.quantize import cpu_int8

    monkeypatch.setattr(cpu_int8, "_cpuinfo", lambda: ("test cpu", flags))
    monkeypatch.setattr(cpu_int8.platform, "machine", lambda: "x86_64")
    info = cpu_int8.int8_path()
    assert (info["path"], info["u8s8_overflow"]) == (path, overflow)


def test_backend_asks_for_exact_int8_kernel_where_u8s8_saturates(monkeypatch, tiny_export, tiny_int8):
    from dat_deploy.quantize import cpu_int8
    from dat_deploy.runtime import OrtBackend

    batch = calibration_images.held_out_images(2, {"input_size": 224, "resize_size": 224, "mean": (0.5,) * 3,
                                                   "std": (0.25,) * 3})
    plain = OrtBackend(tiny_int8.onnx_path)
    monkeypatch.setattr(cpu_int8, "int8_path", lambda: {"cpu": "test", "path": "AVX2 (VPMADDUBSW)",
                                                        "u8s8_overflow": True, "readable": True})
    exact = OrtBackend(tiny_int8.onnx_path)
    assert exact.int8_precision_option and not plain.int8_precision_option
    assert not OrtBackend(tiny_export.onnx_path).int8_precision_option  # fp32 graphs are left alone
    np.testing.assert_allclose(exact.run(batch)["logits"], plain.run(batch)["logits"], rtol=1e-3, atol=1e-3)


def test_int8_tolerance_uses_per_image_cosine_and_top5():
    from dat_deploy.parity.compare import TOLERANCES, compare_output

    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 10))
    noisy = ref + 0.05 * rng.standard_normal((4, 10))
    good = compare_output("logits", ref, noisy, TOLERANCES["int8"], is_logits=True)
    per_image = [(r @ c) / np.linalg.norm(r) / np.linalg.norm(c) for r, c in zip(ref, noisy)]
    assert good.passed and good.mean_image_cosine == pytest.approx(np.mean(per_image))
    broken = noisy.copy()
    broken[2] = -broken[2]  # one image reversed: its cosine is about -1, the other three stay near 1
    bad = compare_output("logits", ref, broken, TOLERANCES["int8"], is_logits=True)
    assert not bad.passed and bad.min_image_cosine == pytest.approx(-per_image[2])
    assert any("min image cosine" in f for f in bad.failures)


# ---- the command line: bad input is one line, exit 2, nothing written ------------------------------


def _cli(*args: str, cwd: Path):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "dat_deploy.cli", "quantize", *args], cwd=cwd, capture_output=True,
                          text=True, timeout=600)


def _one_line_error(result) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    text = " ".join(result.stderr.split())
    assert text.startswith("error:") and text.count("error:") == 1, text
    return text


def _entries(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def test_bad_inputs_fail_cleanly(tmp_path, tiny_export, tiny_int8):
    models = tiny_export.folder.parent
    before = _entries(models)
    not_model = tmp_path / "photos"
    not_model.mkdir()
    assert "holds no" in _one_line_error(_cli(str(not_model), cwd=tmp_path))
    assert "already an int8 model" in _one_line_error(_cli(str(tiny_int8.folder), "-o", str(tmp_path / "x"), cwd=tmp_path))
    unreadable = tmp_path / "calib"
    unreadable.mkdir()
    (unreadable / "a.jpg").write_bytes(b"not a jpeg")
    message = _one_line_error(_cli(str(tiny_export.folder), "--calibration", str(unreadable), "-o", str(tmp_path / "y"),
                                   cwd=tmp_path))
    assert "no image Pillow can read" in message and str(unreadable) in message
    assert "--images 0" in _one_line_error(_cli(str(tiny_export.folder), "--images", "0", "-o", str(tmp_path / "z"),
                                                cwd=tmp_path))
    assert "already exists" in _one_line_error(_cli(str(tiny_export.folder), cwd=tmp_path))  # <name>_int8 is there
    assert _entries(models) == before
    assert not any((tmp_path / name).exists() for name in ("x", "y", "z"))
