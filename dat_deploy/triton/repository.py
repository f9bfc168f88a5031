"""Gather model folders into one Triton model repository, with the plugin libraries wired in.

`dat-deploy export` / `build-trt` write Triton-layout folders into models/ (`<name>/config.pbtxt`,
`<name>/<version>/model.onnx|model.plan`). `gather` copies the chosen ones into one repository:

* every config.pbtxt is parsed with Triton's own ModelConfig protobuf (tritonclient's
  `model_config_pb2`) and checked against its folder and model file before anything is copied;
* plugin-flavour ONNX models (nodes in the `dat` domain) get the onnxruntime custom-op library
  copied next to them and `model_operations { op_library_filename: ... }` pointing at its path
  inside the container (the ORT backend registers it with RegisterCustomOpsLibrary);
* TensorRT engines get the plugin library copied next to them and loaded with LD_PRELOAD
  (the TensorRT backend's documented way; its `plugins` backend-config works too);
* each model folder appears in the repository atomically (export's `write_model_folder`: staged
  under a hidden name, then renamed), and an existing one is replaced only with `overwrite=True`.

The result carries the `docker run ... tritonserver --model-repository=...` command to start it.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from dat_deploy.artifacts import ENGINE_SUFFIXES, ONNX_SUFFIXES, find_model_file, find_sidecar, load_onnx, read_sidecar
from dat_deploy.atomic import check_creatable_dir, check_not_exists, ensure_writable_dir
from dat_deploy.errors import UserError
from dat_deploy.export.repository import write_model_folder
from dat_deploy.graph.dat_graph import has_dat_nodes
from dat_deploy.hashing import sha256_file
from dat_deploy.triton.config import CONFIG_NAME, PLATFORM_BACKENDS, config_text, load_config, parse_config_text, uses_gpu

CONTAINER_REPOSITORY = "/models"
DEFAULT_IMAGE = "nvcr.io/nvidia/tritonserver:25.10-py3"
ORT_OPS_LIBRARY = "libdat_ort_ops.so"
TRT_PLUGIN_LIBRARY = "libdat_trt_plugins.so"

_ORT = "onnxruntime"
_TRT = "tensorrt"
_DEFAULT_FILES = {_ORT: "model.onnx", _TRT: "model.plan"}
_SUFFIXES = {_ORT: ONNX_SUFFIXES, _TRT: ENGINE_SUFFIXES}


@dataclass
class GatheredModel:
    name: str
    kind: str  # "onnxruntime" or "tensorrt"
    path: Path
    needs_plugin: bool
    plugin_library: str | None = None  # path inside the container
    gpu: bool = False
    cpu_fusions: dict[str, int] | None = None  # onnxruntime-only ops put into the served graph


@dataclass
class GatherResult:
    repository: Path
    models: list[GatheredModel]
    command: str
    image: str
    notes: list[str] = field(default_factory=list)


def model_kind(config, config_path: Path) -> str:
    kind = PLATFORM_BACKENDS.get(config.platform) or (config.backend if config.backend in (_ORT, _TRT) else None)
    if kind is None:
        raise UserError(
            f"{config_path}: platform {config.platform!r} / backend {config.backend!r} is not one dat-deploy "
            "writes (onnxruntime_onnx or tensorrt_plan)."
        )
    return kind


def model_file(folder: Path, config, kind: str) -> Path:
    """The newest numeric version's model file (the config's default_model_filename, else Triton's default)."""
    return find_model_file(folder, _SUFFIXES[kind], filename=config.default_model_filename or _DEFAULT_FILES[kind])


def check_config(folder: Path) -> tuple[Any, str, Path]:
    """Parse and check one model folder; returns (config, kind, model file)."""
    config_path = folder / CONFIG_NAME
    config = load_config(config_path)
    problems = []
    if config.name and config.name != folder.name:
        problems.append(f"name {config.name!r} differs from its folder name {folder.name!r} (Triton requires them equal)")
    kind = model_kind(config, config_path)
    if not config.input or not config.output:
        problems.append("it declares no input or no output")
    if config.HasField("dynamic_batching") and config.max_batch_size <= 0:
        problems.append("dynamic_batching needs max_batch_size > 0")
    for tensor in list(config.input) + list(config.output):
        if not tensor.dims:
            problems.append(f"tensor {tensor.name!r} has no dims")
    path = model_file(folder, config, kind)
    if kind == _ORT:
        problems += _check_against_onnx(config, path)
    if problems:
        raise UserError(f"{config_path}: " + "; ".join(problems) + ". Re-export the model or fix the config.")
    return config, kind, path


def _check_against_onnx(config, onnx_path: Path) -> list[str]:
    """Input/output names and the per-sample dims must be those of the ONNX graph."""
    graph = load_onnx(onnx_path).graph
    problems = []
    batched = config.max_batch_size > 0
    declared = {t.name: list(t.dims) for t in list(config.input) + list(config.output)}
    for value in list(graph.input) + list(graph.output):
        if value.name not in declared:
            problems.append(f"{onnx_path.name} has tensor {value.name!r} that the config does not declare")
            continue
        dims = [d.dim_value if d.dim_value > 0 else -1 for d in value.type.tensor_type.shape.dim]
        if batched:
            if not dims or dims[0] != -1:
                problems.append(f"{value.name!r} needs a dynamic first (batch) dim in {onnx_path.name} "
                                f"for max_batch_size {config.max_batch_size}; export with a dynamic batch")
            dims = dims[1:]
        want = declared[value.name]
        if len(want) != len(dims) or any(w != d and -1 not in (w, d) for w, d in zip(want, dims)):
            problems.append(f"{value.name!r} dims {want} in the config, {dims} in {onnx_path.name}")
    return problems


def onnx_needs_plugin(onnx_path: Path) -> bool:
    return has_dat_nodes(load_onnx(onnx_path))


def resolve_sources(sources: Sequence[str | os.PathLike], models_root: Path) -> list[Path]:
    """Model folders: paths as given, or names under models_root; none given -> every model there."""
    available = sorted(p for p in models_root.iterdir() if (p / CONFIG_NAME).is_file()) if models_root.is_dir() else []
    if not sources:
        if not available:
            raise UserError(f"no model folders (with a config.pbtxt) in {models_root}. Run `dat-deploy export` first.")
        return available
    folders = []
    for source in sources:
        path = Path(source)
        if not path.is_dir() and (models_root / str(source)).is_dir():
            path = models_root / str(source)
        if not path.is_dir():
            names = ", ".join(p.name for p in available) or "none"
            raise UserError(f"model folder {source} not found (models in {models_root}: {names}).")
        folders.append(path)
    names = [f.name for f in folders]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UserError(f"two model folders are both named {duplicates[0]!r}; Triton needs unique model names.")
    return folders


def default_plugin_library(kind: str) -> Path | None:
    """The plugin library for `kind` from dat_deploy.native (the ORT one is built on demand)."""
    try:
        from dat_deploy import native
    except ImportError:
        return None
    try:
        if kind == _ORT:
            return Path(native.ort_library_path(build=True))  # CPU only, seconds; what OrtBackend does too
        found = native.find_library("trt")
    except (UserError, AttributeError):  # not built: the caller reports what to do
        return None
    return Path(found) if found else None


def _recorded_sha(sidecar: dict) -> str | None:
    entry = sidecar.get("plugin_library")
    return entry.get("sha256") if isinstance(entry, dict) else None


def engine_plugin(sidecar: dict) -> tuple[bool, Path | None]:
    """Does the engine need our TensorRT plugins (build-trt's sidecar says), and which library was used?

    Without a sidecar we assume it does: preloading an unused plugin library is harmless,
    a missing one makes the plan fail to deserialise.
    """
    if "plugin_library" not in sidecar:
        return True, None
    entry = sidecar["plugin_library"]
    if not entry:
        return False, None
    recorded = Path(entry["path"]) if isinstance(entry, dict) and entry.get("path") else None
    return True, recorded if recorded is not None and recorded.is_file() else None


def gather(
    sources: Sequence[str | os.PathLike],
    output: str | os.PathLike,
    models_root: str | os.PathLike = "models",
    overwrite: bool = False,
    ort_ops_library: str | os.PathLike | None = None,
    trt_plugin_library: str | os.PathLike | None = None,
    image: str = DEFAULT_IMAGE,
) -> GatherResult:
    """Copy the chosen model folders into the repository `output` and say how to serve it."""
    check_creatable_dir(Path(output))
    folders = resolve_sources(sources, Path(models_root))
    checked = [(folder, *check_config(folder)) for folder in folders]  # check everything before copying
    for folder in folders:
        check_not_exists(Path(output) / folder.name, overwrite)
    output = ensure_writable_dir(Path(output))  # only now: a refused source leaves no empty repository

    libraries = {_ORT: ort_ops_library, _TRT: trt_plugin_library}
    gathered = []
    notes = []
    for folder, config, kind, path in checked:
        recorded = None
        sidecar = read_sidecar(path) if kind == _TRT else {}  # build-trt's record of the engine
        if kind == _ORT:
            needs_plugin = onnx_needs_plugin(path)
        else:
            needs_plugin, recorded = engine_plugin(sidecar)
        library = None
        if needs_plugin:
            library = Path(libraries[kind]) if libraries[kind] else (recorded or default_plugin_library(kind))
            if library is not None and not library.is_file():
                library = None
            if library is None and kind == _ORT:
                raise UserError(
                    f"{folder.name} is a plugin-flavour ONNX (dat custom ops) and the onnxruntime custom-op library "
                    "was not found. Build it with `dat-deploy build-plugins` or pass --ort-ops-lib PATH."
                )
            recorded_sha = _recorded_sha(sidecar) if kind == _TRT else None
            if library is not None and recorded_sha and sha256_file(library) != recorded_sha:
                notes.append(f"{folder.name}: {library} is not the plugin build the engine was made with "
                             f"(sha256 in {find_sidecar(path)}); a plan needs that same library.")
        gathered.append(_copy_model(folder, config, kind, needs_plugin, library, output, overwrite))

    image_needs_gpu = any(m.gpu for m in gathered)
    preload = sorted({m.plugin_library for m in gathered if m.kind == _TRT and m.plugin_library})
    if any(m.kind == _TRT and m.needs_plugin and not m.plugin_library for m in gathered):
        notes.append("no TensorRT plugin library found: engines that contain DAT plugin layers will fail to load. "
                     "Build it (`dat-deploy build-plugins`, against the container's TensorRT) and pass --trt-plugin.")
    if preload:
        notes.append("the TensorRT plugin must be built against the TensorRT version inside the Triton image; "
                     "pick the image release whose TensorRT matches (--image).")
    for m in gathered:
        if m.cpu_fusions:
            made = ", ".join(f"{n} {op}" for op, n in m.cpu_fusions.items())
            notes.append(f"{m.name}: the repository's graph has onnxruntime-only CPU ops in place of slower subgraphs "
                         f"({made}), as dat-deploy's onnxruntime backend runs it; the ops are CPU kernels.")
    ort_libraries = [output / m.name / Path(m.plugin_library).name for m in gathered if m.kind == _ORT and m.plugin_library]
    if ort_libraries:
        notes.append(_serving_host_note(ort_libraries[0]))
    return GatherResult(output, gathered, serve_command(output, image, preload, image_needs_gpu), image, notes)


def _serving_host_note(library: Path) -> str:
    """What the host (or container) serving the repository needs for the onnxruntime op library."""
    from dat_deploy.native.cpu_layer import runtime_requirements

    needs = runtime_requirements(library)
    runtime = f"glibc >= {needs.get('glibc', '?')}"
    if "glibcxx" in needs:
        runtime += f" and a libstdc++ with GLIBCXX_{needs['glibcxx']}"
    return (f"the onnxruntime custom-op library ({library.name}) runs on any x86-64 CPU, picking its AVX2 or AVX-512 "
            f"kernels where the serving CPU has them, and the repository's graph is the same for every CPU; the "
            f"container's onnxruntime backend needs {runtime} to load it.")


def _copy_model(folder: Path, config, kind: str, needs_plugin: bool, library: Path | None, output: Path,
                overwrite: bool) -> GatheredModel:
    name = folder.name
    target = output / name
    if target.exists() and not overwrite:
        raise UserError(f"{target} already exists. Pass --overwrite to replace it, or choose another --output.")
    files = {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    }
    container_library = None
    fusions = _fuse_for_onnxruntime_cpu(files) if kind == _ORT and needs_plugin else None
    if library is not None:
        files[library.name] = library.read_bytes()
        container_library = f"{CONTAINER_REPOSITORY}/{name}/{library.name}"
        if kind == _ORT:
            del config.model_operations.op_library_filename[:]
            config.model_operations.op_library_filename.append(container_library)
    config.name = name
    text = config_text(config)
    parse_config_text(text, f"the config written for {name}")  # what Triton will read must parse
    files[CONFIG_NAME] = text.encode("utf-8")
    write_model_folder(output, name, files, overwrite=overwrite)  # staged, then renamed into place
    gpu = kind == _TRT or uses_gpu(config)
    return GatheredModel(name, kind, target, needs_plugin, container_library, gpu, fusions)


def _fuse_for_onnxruntime_cpu(files: dict[str, bytes]) -> dict[str, int] | None:
    """The CPU rewrites dat-deploy's own onnxruntime backend applies that pay on every CPU (DATBiasGelu,
    DATAddLayerNorm), done on the repository's copies of the plugin-flavour graphs. DATGemm, which pays only on some
    CPUs, is left out: the repository must run the same on any serving host, whatever CPU packaged it. The exported
    folder stays as it is. Returns the counts (summed over versions), or None if nothing matched."""
    import onnx

    from dat_deploy.graph.cpu_fusions import fused_session_model

    total: dict[str, int] = {}
    for relative, data in files.items():
        if not relative.endswith(".onnx"):
            continue
        fused, counts = fused_session_model(onnx.load_from_string(data), portable=True)
        if fused is not None:
            files[relative] = fused
            for op, n in counts.items():
                if n:
                    total[op] = total.get(op, 0) + n
    return total or None


def serve_command(repository: Path, image: str, preload: Sequence[str], gpu: bool) -> str:
    parts = ["docker", "run", "--rm"]
    if gpu:
        parts.append("--gpus=all")
    parts += ["--shm-size=1g", "-p", "8000:8000", "-p", "8001:8001", "-p", "8002:8002",
              "-v", f"{Path(repository).resolve()}:{CONTAINER_REPOSITORY}"]
    if preload:
        parts += ["-e", f"LD_PRELOAD={':'.join(preload)}"]
    parts += [image, "tritonserver", f"--model-repository={CONTAINER_REPOSITORY}"]
    return " ".join(shlex.quote(p) for p in parts)
