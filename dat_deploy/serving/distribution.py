"""The Triton server that the `nvidia-pytriton` wheel ships, found on disk and prepared to run.

The wheel carries a real `tritonserver` binary (Triton 2.51), its libraries and the python backend
(`libtriton_python.so` plus one stub per Python version). We run that binary ourselves and never import
`pytriton`; its `numpy<2` pin still holds for us, because the python backend's stub is built against numpy 1.x
(see server.require_numpy_1).

A backend folder for Triton's `--backend-directory` is assembled per server start:

    backends/python/        libtriton_python.so, triton_python_backend_utils.py, the stub for this Python
    backends/onnxruntime/   model.py: our Python-based backend that runs ONNX files with onnxruntime

Triton maps `platform: "onnxruntime_onnx"` to the backend named `onnxruntime`; finding no
`libtriton_onnxruntime.so` there, it runs `onnxruntime/model.py` through the python backend
(Triton's "Python-based backends").
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
import sysconfig
from dataclasses import dataclass
from pathlib import Path

from dat_deploy.errors import UserError

INSTALL_HINT = ("the Triton server is not installed: run `pip install 'dat-deploy[serve]'` in an environment of its "
                "own (it brings the server binary in nvidia-pytriton, and numpy<2, which its python backend needs).")
_MODELS = Path(__file__).parent / "triton_models"
ONNXRUNTIME_BACKEND_SOURCE = _MODELS / "onnxruntime_backend.py"
IMAGE_MODEL_SOURCE = _MODELS / "image_classifier.py"


class ServerMissing(UserError):
    """The Triton binary (nvidia-pytriton) is not installed."""


@dataclass(frozen=True)
class TritonDistribution:
    root: Path  # .../site-packages/pytriton/tritonserver

    @property
    def binary(self) -> Path:
        return self.root / "bin" / "tritonserver"

    @property
    def python_backend(self) -> Path:
        return self.root / "backends" / "python"

    @property
    def libraries(self) -> Path:
        """The wheel's bundled shared libraries (auditwheel's folder next to the package)."""
        return self.root.parent.parent / "nvidia_pytriton.libs"

    def stub(self, version: str | None = None) -> Path:
        version = version or f"{sys.version_info.major}.{sys.version_info.minor}"
        return self.root / "python_backend_stubs" / version / "triton_python_backend_stub"


def _pytriton_folder() -> Path | None:
    spec = importlib.util.find_spec("pytriton")  # finds the folder without importing pytriton (numpy<2)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def find_triton() -> TritonDistribution:
    """The bundled server, or ServerMissing with the line that says how to install it."""
    folder = _pytriton_folder()
    if folder is None:
        raise ServerMissing(INSTALL_HINT)
    dist = TritonDistribution(folder / "tritonserver")
    if not dist.binary.is_file() or not (dist.python_backend / "libtriton_python.so").is_file():
        raise ServerMissing(INSTALL_HINT)
    if not dist.stub().is_file():
        raise UserError(f"nvidia-pytriton has no python backend stub for Python "
                        f"{sys.version_info.major}.{sys.version_info.minor} ({dist.stub()}); use Python 3.8-3.13.")
    return dist


def write_backend_directory(dist: TritonDistribution, folder: Path) -> Path:
    """Triton's --backend-directory: the python backend with this interpreter's stub, and our onnxruntime one."""
    python = folder / "python"
    python.mkdir(parents=True)
    # Copies, not symlinks: Triton refuses a backend library whose real path lies outside the backend folder.
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(dist.python_backend / name, python / name)
    shutil.copy2(dist.stub(), python / "triton_python_backend_stub")  # the backend looks for it in its own folder
    onnxruntime = folder / "onnxruntime"
    onnxruntime.mkdir()
    shutil.copy2(ONNXRUNTIME_BACKEND_SOURCE, onnxruntime / "model.py")
    return folder


def server_environment(dist: TritonDistribution, base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for tritonserver and the python stubs it starts.

    The stub links `libpython3.X.so`; without help the dynamic loader picks the system's copy, which need not
    be the running interpreter's build (a pyenv 3.11.7 next to Debian's 3.11.2 fails inside threading).
    The interpreter's own LIBDIR goes first, then the wheel's libraries (the copied stub and backend library
    no longer find them through their relative RPATH).

    The stub's embedded interpreter ignores PYTHONPATH; it finds its prefix, and so its site-packages, the way
    `python3` does when started from PATH (a virtual environment through its pyvenv.cfg). So this
    interpreter's folder goes first on PATH, and the stubs import what this process imports.
    """
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR") or ""
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (libdir, str(dist.libraries), env.get("LD_LIBRARY_PATH", "")) if p)
    env["PATH"] = os.pathsep.join(p for p in (str(Path(sys.executable).parent), env.get("PATH", "")) if p)
    return env
