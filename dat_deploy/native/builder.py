"""Build the native plugin libraries with CMake into a cache keyed by the hash of plugins/ sources.

Layout: <cache>/plugins/<source hash>/<config>/ with `build/` (CMake's tree), the libraries, and
`build_summary.json` (what was built, what was skipped and why). <cache> is $DAT_DEPLOY_CACHE or
~/.cache/dat-deploy. A config is "cpu" (the onnxruntime library only; what commands build on demand),
or "cuda" / "cuda-trt-<hash of the headers' folder>" for `dat-deploy build-plugins`.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from dat_deploy.errors import UserError

LIBRARY_FILES = {
    "dat_ort_ops": "libdat_ort_ops.so",
    "dat_cuda_ops": "libdat_cuda_ops.so",
    "dat_trt_plugins": "libdat_trt_plugins.so",
}
_SOURCE_SUFFIXES = {".h", ".cuh", ".cpp", ".cu", ".txt", ".map"}
# Builds of older sources are pruned after a fresh build: the newest few stay (switching between
# checkouts or branches should not rebuild every time), and none used within the grace period goes
# (another process may be loading a library from it).
KEEP_SOURCE_BUILDS = 3
PRUNE_GRACE_S = 3600.0


@dataclasses.dataclass(frozen=True)
class TargetResult:
    target: str
    built: bool
    reason: str
    library: Path | None


@dataclasses.dataclass(frozen=True)
class BuildResult:
    config_dir: Path
    targets: tuple[TargetResult, ...]
    seconds: float  # 0 when the cached build was reused
    cached: bool

    def library(self, target: str) -> Path | None:
        for result in self.targets:
            if result.target == target and result.built:
                return result.library
        return None


def plugins_source_dir() -> Path:
    """plugins/ of this checkout, or $DAT_DEPLOY_PLUGINS_SRC."""
    env = os.environ.get("DAT_DEPLOY_PLUGINS_SRC")
    candidate = Path(env) if env else Path(__file__).resolve().parents[2] / "plugins"
    if not (candidate / "CMakeLists.txt").is_file():
        raise UserError(
            f"plugin sources not found at {candidate} (no CMakeLists.txt). Install dat-deploy from a source checkout "
            "(pip install -e .) or point DAT_DEPLOY_PLUGINS_SRC at its plugins/ folder."
        )
    return candidate


def cache_root() -> Path:
    env = os.environ.get("DAT_DEPLOY_CACHE")
    return (Path(env) if env else Path.home() / ".cache" / "dat-deploy") / "plugins"


def source_hash(source_dir: Path) -> str:
    """Hash of every library source file's relative path and bytes (docs and plugins/tests/ excluded)."""
    digest = hashlib.sha256()
    sources = (p for p in source_dir.rglob("*")
               if p.is_file() and p.suffix in _SOURCE_SUFFIXES and p.relative_to(source_dir).parts[0] != "tests")
    for path in sorted(sources):
        digest.update(path.relative_to(source_dir).as_posix().encode())
        digest.update(b"\0")
        digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()[:16]


def config_name(cuda: bool, tensorrt_include: Path | None) -> str:
    if not cuda:
        return "cpu"
    if tensorrt_include is None:
        return "cuda"
    return "cuda-trt-" + hashlib.sha256(str(tensorrt_include.resolve()).encode()).hexdigest()[:8]


def build_dir_for(config: str, source_dir: Path | None = None) -> Path:
    source_dir = source_dir or plugins_source_dir()
    return cache_root() / source_hash(source_dir) / config


def read_result(config_dir: Path, seconds: float = 0.0, cached: bool = True) -> BuildResult | None:
    summary = config_dir / "build_summary.json"
    if not summary.is_file():
        return None
    entries = json.loads(summary.read_text())
    targets = []
    for entry in entries:
        library = config_dir / LIBRARY_FILES.get(entry["target"], "")
        built = entry["status"] == "built" and library.is_file()
        reason = entry.get("reason", "")
        if entry["status"] == "built" and not library.is_file():
            reason = f"CMake reported it built but {library.name} is missing"
        targets.append(TargetResult(entry["target"], built, reason, library if built else None))
    return BuildResult(config_dir, tuple(targets), seconds, cached)


def _run(cmd: list[str], log: Path, what: str) -> None:
    with log.open("a") as handle:
        handle.write("$ " + " ".join(cmd) + "\n")
        handle.flush()
        proc = subprocess.run(cmd, stdout=handle, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise UserError(f"{what} failed (exit {proc.returncode}); full log: {log}\n{tail}")


def build(
    cuda: bool | None = None,
    tensorrt_include: str | os.PathLike | None = None,
    force: bool = False,
    jobs: int | None = None,
) -> BuildResult:
    """Configure and build plugins/ into the cache; reuse a finished build of the same sources and config.

    cuda=None builds the CUDA kernels when nvcc is found. tensorrt_include is a folder with NvInferRuntime.h.
    """
    if shutil.which("cmake") is None:
        raise UserError("cmake is not on PATH; install CMake >= 3.18 (e.g. `pip install cmake`) to build the plugins.")
    trt_dir = Path(tensorrt_include).expanduser() if tensorrt_include else None
    if trt_dir is not None and not (trt_dir / "NvInferRuntime.h").is_file():
        raise UserError(
            f"{trt_dir} has no NvInferRuntime.h. Pass the include/ folder of TensorRT (or of github.com/NVIDIA/TensorRT)."
        )
    if cuda is None:
        cuda = shutil.which("nvcc") is not None or bool(os.environ.get("CUDACXX"))
    if trt_dir is not None and not cuda:
        raise UserError("the TensorRT plugins need the CUDA kernels; drop --no-cuda or install nvcc.")
    source_dir = plugins_source_dir()
    config_dir = build_dir_for(config_name(cuda, trt_dir), source_dir)
    config_dir.parent.mkdir(parents=True, exist_ok=True)

    # One builder at a time per config (parallel test runs, two commands at once).
    with open(config_dir.parent / f".{config_dir.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force:
            existing = read_result(config_dir)
            if existing is not None:
                os.utime(config_dir.parent)  # recently used: kept by prune_old_builds
                return existing
        start = time.perf_counter()
        staging = config_dir.parent / f".{config_dir.name}.partial-{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        build_tree = staging / "build"
        build_tree.mkdir(parents=True)
        log = staging / "build.log"
        configure = [
            "cmake", "-S", str(source_dir), "-B", str(build_tree), "-DCMAKE_BUILD_TYPE=Release",
            f"-DDAT_WITH_CUDA={'ON' if cuda else 'OFF'}",
        ]
        if trt_dir is not None:
            configure.append(f"-DTENSORRT_INCLUDE_DIR={trt_dir.resolve()}")
        _run(configure, log, "configuring the plugins (cmake)")
        _run(["cmake", "--build", str(build_tree), "-j", str(jobs or os.cpu_count() or 2)], log, "building the plugins")
        shutil.copy2(build_tree / "build_summary.json", staging / "build_summary.json")
        for library in LIBRARY_FILES.values():
            if (build_tree / library).is_file():
                shutil.copy2(build_tree / library, staging / library)
        if config_dir.exists():
            shutil.rmtree(config_dir)
        os.replace(staging, config_dir)
        result = read_result(config_dir, time.perf_counter() - start, cached=False)
        assert result is not None
    prune_old_builds(keep=config_dir.parent)
    return result


def prune_old_builds(keep: Path, newest: int = KEEP_SOURCE_BUILDS, grace_s: float = PRUNE_GRACE_S) -> list[Path]:
    """Delete cached builds of other plugin sources beyond the `newest` most recently used; return what went."""
    root = keep.parent
    others = sorted((p for p in root.iterdir() if p.is_dir() and p != keep and not p.name.startswith(".")),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    now = time.time()
    removed = []
    for old in others[max(newest - 1, 0):]:
        if now - old.stat().st_mtime < grace_s:
            continue
        shutil.rmtree(old, ignore_errors=True)
        removed.append(old)
    return removed


def find_built(target: str) -> Path | None:
    """A library of the current sources from any finished config, preferring the richest config."""
    try:
        source_dir = plugins_source_dir()
    except UserError:
        return None
    root = cache_root() / source_hash(source_dir)
    if not root.is_dir():
        return None
    for config_dir in sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True):
        result = read_result(config_dir)
        if result is not None and result.library(target) is not None:
            return result.library(target)
    return None


def log(message: str) -> None:
    print(f"dat-deploy: {message}", file=sys.stderr)
