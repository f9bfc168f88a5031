"""TensorRT engines against PyTorch on the GPU: dat_t and dat_pp_t, plugin and native flavours, fp32 and fp16.

Parity at batch 1 and at the profile's max batch, on seeded random inputs and the embedded sample
photos: fp32 logits within 1e-3 of PyTorch fp32; fp16 cosine similarity >= 0.9995 per image and
top-1 agreement >= 99%. Plus the runtime's errors (batch outside the profile, another TensorRT
version, another plugin library, an unreadable plan) and CUDA graphs giving the same logits.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest



def tensorrt_skip_reason() -> str | None:
    """None where `import tensorrt` works and torch sees a CUDA GPU; else why these tests skip."""
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"TensorRT is not importable here ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    import torch

    if not torch.cuda.is_available():
        return "no CUDA GPU visible to torch (a CUDA build of torch and a GPU are needed)"
    return None


_reason = tensorrt_skip_reason()
if _reason is not None:
    pytest.skip(_reason, allow_module_level=True)

import torch  # noqa: E402

from dat_deploy.errors import UserError  # noqa: E402
from dat_deploy.model import create_model, get_variant  # noqa: E402
from dat_deploy.parity.inputs import image_case, random_case  # noqa: E402
from dat_deploy.runtime.tensorrt_backend import TensorRTBackend  # noqa: E402

pytestmark = [pytest.mark.gpu]

VARIANTS = ["dat_t", "dat_pp_t"]
FLAVORS = ["plugin", "native"]
MAX_BATCH = 32  # the profile max the `engines` fixture (conftest.py) builds with


@pytest.fixture(scope="module")
def reference_models():
    torch.backends.cudnn.allow_tf32 = False  # fp32 reference means fp32
    torch.backends.cuda.matmul.allow_tf32 = False
    return {v: create_model(v).cuda().eval() for v in VARIANTS}


def cases(variant: str, batch: int):
    spec = get_variant(variant)
    return [
        random_case(batch, spec.input_size, spec.input_size, seed=3),
        image_case(batch, spec.input_size, spec.resize_size, spec.mean, spec.std),
    ]


def torch_logits(model, batch: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(batch).cuda()).float().cpu().numpy()


def cosine_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("flavor", FLAVORS)
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_pytorch(engines, reference_models, variant, flavor, precision):
    assert engines.MAX_BATCH == MAX_BATCH
    plan = engines.engine(variant, flavor, precision)
    backend = TensorRTBackend(plan)
    assert backend.batch_range == (1, MAX_BATCH)
    for batch in (1, MAX_BATCH):
        for case in cases(variant, batch):
            expected = torch_logits(reference_models[variant], case.batch)
            logits = backend.run(case.batch)["logits"]
            assert logits.shape == expected.shape and logits.dtype == np.float32
            max_abs = float(np.abs(logits - expected).max())
            cosine = cosine_rows(logits, expected)
            agreement = float((logits.argmax(1) == expected.argmax(1)).mean())
            print(f"{variant} {flavor} {precision} {case.name}: max abs {max_abs:.2e}, "
                  f"min cosine {cosine.min():.6f}, top-1 agreement {agreement:.3f}")
            if precision == "fp32":
                assert max_abs <= 1e-3, case.name
            else:
                assert cosine.min() >= 0.9995, case.name
                if case.name.startswith("images"):
                    assert agreement >= 0.99, case.name


def test_cuda_graphs_give_the_same_logits(engines):
    plan = engines.engine("dat_t", "native", "fp16")
    plain, graphed = TensorRTBackend(plan), TensorRTBackend(plan, use_cuda_graph=True)
    batch = random_case(8, 224, 224, seed=5).batch
    expected = plain.run(batch)["logits"]
    for _ in range(2):  # capture, then replay
        np.testing.assert_allclose(graphed.run(batch)["logits"], expected, rtol=0, atol=1e-5)


def test_timings_split_the_call(engines):
    backend = TensorRTBackend(engines.engine("dat_t", "native", "fp16"))
    _, timings = backend.run_timed(random_case(8, 224, 224).batch)
    assert timings.h2d_ms > 0 and timings.compute_ms > 0 and timings.d2h_ms > 0
    assert backend.timings() == timings
    _, split = backend.timed_run(random_case(8, 224, 224).batch)  # what `dat-deploy profile` reads
    assert set(split) == {"h2d_ms", "compute_ms", "d2h_ms"} and min(split.values()) > 0


def test_batch_outside_the_profile_names_the_range(engines):
    backend = TensorRTBackend(engines.engine("dat_t", "native", "fp32"))
    with pytest.raises(UserError, match=rf"batch {MAX_BATCH + 1} is outside .*batch 1\.\.{MAX_BATCH}"):
        backend.run(np.zeros((MAX_BATCH + 1, 3, 224, 224), np.float32))
    with pytest.raises(UserError, match="does not fit"):
        backend.run(np.zeros((2, 3, 256, 256), np.float32))


def test_engine_of_another_tensorrt_version_is_refused(engines, tmp_path):
    plan = engines.engine("dat_t", "native", "fp32")
    copy = tmp_path / "model.plan"
    shutil.copy(plan, copy)
    sidecar = json.loads((plan.parent.parent / "dat_deploy.json").read_text())
    sidecar["tensorrt_version"] = "9.0.0"
    (tmp_path / "model.plan.json").write_text(json.dumps(sidecar))
    with pytest.raises(UserError, match="built by TensorRT 9.0.0"):
        TensorRTBackend(copy)


def test_unreadable_plan_is_a_user_error(tmp_path):
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"not an engine" * 100)
    with pytest.raises(UserError, match="could not deserialise"):
        TensorRTBackend(plan)


def test_plugin_library_of_another_build_is_refused(engines, tmp_path):
    plan = engines.engine("dat_t", "plugin", "fp16")
    library = engines.plugin_library()
    other = tmp_path / library.name
    other.write_bytes(library.read_bytes() + b"\0")
    with pytest.raises(UserError, match="is not the one"):
        TensorRTBackend(plan, plugin_lib=other)
    missing_sidecar = json.loads((plan.parent.parent / "dat_deploy.json").read_text())
    missing_sidecar["plugin_library"]["path"] = str(tmp_path / "gone.so")
    copy = tmp_path / "model.plan"
    shutil.copy(plan, copy)
    (tmp_path / "model.plan.json").write_text(json.dumps(missing_sidecar))
    with pytest.raises(UserError, match="does not exist"):
        TensorRTBackend(copy)
