"""nvcc compiles the CUDA kernels (sm_80/86/89/90 + PTX); where TensorRT headers are given, the plugins too.

Nothing here runs CUDA code: tests/gpu/ does that on a GPU machine. TensorRT headers come from
$TENSORRT_INCLUDE_DIR (e.g. include/ of github.com/NVIDIA/TensorRT); without it that part skips.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from dat_deploy import native

pytestmark = pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc is not on PATH: the CUDA kernels cannot be compiled here")


def exported_symbols(library: Path) -> set[str]:
    out = subprocess.run(["nm", "-D", "--defined-only", str(library)], capture_output=True, text=True, check=True)
    return {line.split()[-1] for line in out.stdout.splitlines() if line.strip()}


def test_cuda_kernels_compile_for_all_architectures():
    result = native.build(cuda=True)
    by_target = {t.target: t for t in result.targets}
    assert by_target["dat_cuda_ops"].built, by_target["dat_cuda_ops"].reason
    library = by_target["dat_cuda_ops"].library
    assert {"dat_cuda_deform_sample", "dat_cuda_rel_pos_bias", "dat_cuda_window_attention",
            "dat_cuda_deform_attention"} <= exported_symbols(library)
    if shutil.which("cuobjdump"):
        listing = subprocess.run(["cuobjdump", "--list-elf", "--list-ptx", str(library)], capture_output=True, text=True).stdout
        for arch in ("sm_80", "sm_86", "sm_89", "sm_90"):
            assert arch in listing, f"no {arch} code in {library}"
        assert "ptx" in listing.lower()
    else:  # no cuobjdump in this toolkit: check what nvcc was asked to generate
        flags = (result.config_dir / "build" / "CMakeFiles" / "dat_cuda_kernels.dir" / "flags.make").read_text()
        for arch in ("80", "86", "89", "90"):
            assert f"arch=compute_{arch},code=[sm_{arch}]" in flags
        assert "code=[compute_90]" in flags  # PTX for newer GPUs


@pytest.mark.skipif(not os.environ.get("TENSORRT_INCLUDE_DIR"), reason="TENSORRT_INCLUDE_DIR not set: no TensorRT headers to compile the plugins against")
def test_tensorrt_plugins_compile_and_export_only_the_loader_entry_points():
    include = Path(os.environ["TENSORRT_INCLUDE_DIR"])
    result = native.build(cuda=True, tensorrt_include=include)
    target = {t.target: t for t in result.targets}["dat_trt_plugins"]
    assert target.built, target.reason
    assert exported_symbols(target.library) == {"getCreators", "setLoggerFinder"}
    log = (result.config_dir / "build.log")
    if log.is_file():  # a fresh build: our sources compiled without warnings (headers are -isystem)
        assert "warning" not in log.read_text().lower()
