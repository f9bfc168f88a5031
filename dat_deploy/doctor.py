"""`dat-deploy doctor`: what is installed, what is visible, and what to do about each missing piece.

Every check is cheap and imports its subject lazily (TensorRT, CUDA and matplotlib are never
imported by `import dat_deploy`); a check that fails to import reports why, it never raises.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import platform
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from typing import Callable

OK, WARN, MISSING, INFO = "ok", "warn", "missing", "info"


@dataclass
class Check:
    name: str
    status: str  # ok | warn | missing | info
    detail: str
    fix: str = ""

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


def _version(distribution: str) -> str | None:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return None


def check_python() -> list[Check]:
    ok = sys.version_info >= (3, 10)
    return [Check("python", OK if ok else MISSING, f"{platform.python_version()} ({sys.executable})",
                  "" if ok else "dat-deploy needs Python >= 3.10.")]


def check_torch() -> list[Check]:
    try:
        import torch
    except ImportError as exc:
        return [Check("torch", MISSING, str(exc), "pip install torch (CPU: --index-url https://download.pytorch.org/whl/cpu)")]
    checks = [Check("torch", OK, f"{torch.__version__} (CUDA build: {torch.version.cuda or 'none, CPU-only'})")]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        capability = ".".join(map(str, torch.cuda.get_device_capability(0)))
        checks.append(Check("GPU (torch.cuda)", OK, f"{torch.cuda.device_count()} visible: {names} (sm {capability})"))
    else:
        fix = ("install a CUDA build of torch to use the GPU from PyTorch" if torch.version.cuda is None
               else "no GPU visible: check the driver (nvidia-smi) and CUDA_VISIBLE_DEVICES")
        checks.append(Check("GPU (torch.cuda)", WARN, "no CUDA device visible; CPU only", fix))
    return checks


def check_onnx() -> list[Check]:
    version = _version("onnx")
    if version is None:
        return [Check("onnx", MISSING, "not installed", "pip install onnx")]
    return [Check("onnx", OK, version)]


def check_onnxruntime() -> list[Check]:
    cpu, gpu = _version("onnxruntime"), _version("onnxruntime-gpu")
    if cpu and gpu:
        return [Check("onnxruntime", WARN, f"both onnxruntime {cpu} and onnxruntime-gpu {gpu} are installed",
                      "they overwrite each other's files: pip uninstall -y onnxruntime onnxruntime-gpu, "
                      "then install exactly one")]
    if not (cpu or gpu):
        return [Check("onnxruntime", MISSING, "not installed", "pip install onnxruntime (or onnxruntime-gpu)")]
    try:
        import onnxruntime

        providers = ", ".join(onnxruntime.get_available_providers())
    except Exception as exc:  # noqa: BLE001 - a broken install must be reported, not raised
        return [Check("onnxruntime", WARN, f"installed but fails to import: {exc}", "reinstall onnxruntime")]
    package = "onnxruntime-gpu" if gpu else "onnxruntime"
    return [Check("onnxruntime", OK, f"{package} {gpu or cpu}; providers: {providers}")]


def check_tensorrt() -> list[Check]:
    try:
        trt = importlib.import_module("tensorrt")
    except Exception as exc:  # noqa: BLE001 - ImportError, or a library load failure inside it
        return [Check("tensorrt", MISSING, f"cannot import tensorrt ({type(exc).__name__}: {exc})".strip(),
                      "needed only for build-trt and engines: pip install tensorrt on a machine with an NVIDIA "
                      "GPU and driver, or use an NGC TensorRT / Triton container")]
    return [Check("tensorrt", OK, getattr(trt, "__version__", "unknown version"))]


def _tool_version(command: str, args: tuple[str, ...] = ("--version",)) -> str | None:
    path = shutil.which(command)
    if path is None:
        return None
    try:
        out = subprocess.run([path, *args], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return path
    lines = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    if not lines:
        return path
    release = [line for line in lines if "release" in line]  # nvcc: "Cuda compilation tools, release 13.0, ..."
    return f"{(release or lines)[0].strip()} ({path})"


def _wheel_carries_libraries() -> bool:
    try:
        from dat_deploy.native import bundled_build_info
    except ImportError:
        return False
    return bundled_build_info() is not None


def check_toolchain() -> list[Check]:
    checks = []
    fixes = {
        "nvcc": "install the CUDA toolkit (only to build the CUDA kernels / TensorRT plugin)",
        "cmake": "pip install cmake, or your package manager's cmake (>= 3.18), to build the plugins",
        "g++": "install a C++17 compiler (build-essential / gcc-c++) to build the plugins",
    }
    bundled = _wheel_carries_libraries()
    for tool, fix in fixes.items():
        found = _tool_version(tool)
        if found:
            checks.append(Check(tool, OK, found))
        elif bundled:  # an installed wheel: the libraries it carries need no toolchain
            checks.append(Check(tool, INFO, "not on PATH; not needed for the libraries this wheel carries", fix))
        else:
            checks.append(Check(tool, MISSING, "not on PATH", fix))
    smi = _tool_version("nvidia-smi", ("--query-gpu=name,driver_version", "--format=csv,noheader"))
    checks.append(Check("nvidia-smi", OK, smi) if smi else
                  Check("nvidia-smi", INFO, "not on PATH (no NVIDIA driver here)", "needed only to run on a GPU"))
    return checks


def check_plugins() -> list[Check]:
    """The native libraries (onnxruntime custom ops, TensorRT plugins), via dat_deploy.native when present."""
    try:
        native = importlib.import_module("dat_deploy.native")
    except ImportError:
        return [Check("plugin libraries", INFO, "dat_deploy.native is not part of this install",
                      "the plain ONNX export runs without plugins")]
    report = getattr(native, "doctor_checks", None) or getattr(native, "status", None)
    if report is None:
        return [Check("plugin libraries", INFO, "dat_deploy.native offers no status report")]
    try:
        entries = report()
    except Exception as exc:  # noqa: BLE001
        return [Check("plugin libraries", WARN, f"status failed: {exc}")]
    return [_as_check(entry) for entry in (entries if isinstance(entries, (list, tuple)) else [entries])]


def _as_check(entry) -> Check:
    if isinstance(entry, Check):
        return entry
    data = entry if isinstance(entry, dict) else getattr(entry, "__dict__", {"detail": str(entry)})
    built = data.get("built", data.get("exists"))
    status = data.get("status") or (OK if built else MISSING if built is not None else INFO)
    detail = data.get("detail") or ", ".join(f"{k}: {v}" for k, v in data.items() if k not in ("name", "fix", "status"))
    return Check(str(data.get("name") or data.get("target") or "plugin library"), status, str(detail),
                 str(data.get("fix") or data.get("hint") or ""))


def check_optional() -> list[Check]:
    uses = {
        "tritonclient": ("dat-deploy triton (config validation)", "pip install tritonclient[grpc]"),
        "matplotlib": ("visualize and profile plots", "pip install matplotlib"),
        "scikit-image": ("the embedded sample images for predict", "pip install scikit-image"),
    }
    checks = []
    for package, (use, fix) in uses.items():
        version = _version(package)
        checks.append(Check(package, OK, f"{version} ({use})") if version else
                      Check(package, INFO, f"not installed; needed for {use}", fix))
    return checks


CHECKS: tuple[Callable[[], list[Check]], ...] = (
    check_python, check_torch, check_onnx, check_onnxruntime, check_tensorrt,
    check_toolchain, check_plugins, check_optional,
)


def run_checks() -> list[Check]:
    from dat_deploy import __version__

    results = [Check("dat-deploy", OK, __version__)]
    for check in CHECKS:
        try:
            results.extend(check())
        except Exception as exc:  # noqa: BLE001 - doctor must always finish its report
            results.append(Check(check.__name__.removeprefix("check_"), WARN, f"check failed: {exc}"))
    return results


def render(checks: list[Check], console) -> None:
    """Status, component, what was found, what to do: a table, or one block per check when narrow."""
    from rich.markup import escape

    from dat_deploy.tables import Column, print_table

    style = {OK: "green", WARN: "yellow", MISSING: "red", INFO: "cyan"}
    columns = [Column("status", identifier=True), Column("component", identifier=True), Column("found"),
               Column("what to do")]
    rows = [[f"[{style[c.status]}]{c.status}[/]", escape(c.name), escape(c.detail), escape(c.fix)] for c in checks]
    print_table(console, columns, rows, title="dat-deploy doctor")
