"""`dat-deploy build-trt`: ONNX -> models/<name>_trt_<precision>/ (plan, config.pbtxt, sidecar, README).

Every check runs before any work (pick the model, check flavour, opset and name, then TensorRT and
the plugin library), so a machine without TensorRT stops with the install hint having written
nothing. The fp16 graph is converted into a temporary folder and lands in models/ only inside the
finished engine folder, which appears whole (config, plan, sidecar) or not at all; `convert-fp16`
writes the fp16 graph alone.
"""

from __future__ import annotations

import datetime
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dat_deploy.artifacts import SIDECAR_NAME, load_onnx, onnx_metadata
from dat_deploy.atomic import check_folder_name
from dat_deploy.triton.config import CONFIG_NAME
from dat_deploy.errors import UserError
from dat_deploy.trt.engine_builder import Profile
from dat_deploy.trt.source import SourceModel, check_flavor, find_latest_export, read_source

PLAN_FILE = "model.plan"
FP16_ONNX_FILE = "model_fp16.onnx"
VERSION = "1"


@dataclass
class BuildOptions:
    onnx: Path | None = None  # None: the latest export in `output`
    fp16: bool = False
    int8: bool = False  # insist on an int8 graph (`dat-deploy quantize --target tensorrt`); one is detected anyway
    min_batch: int = 1
    opt_batch: int = 8
    max_batch: int = 32
    workspace_gb: float | None = None
    timing_cache: Path | None = None  # None: a per-TensorRT-version cache under ~/.cache/dat-deploy
    plugin_lib: Path | None = None  # None: dat_deploy.native.trt_plugin_library_path()
    flavor: str = "plugin"
    output: Path = Path("models")
    name: str | None = None
    overwrite: bool = False
    show_progress: bool = True
    verbose: bool = False


@dataclass
class EngineFolder:
    """Where one engine's artifacts go."""

    root: Path

    @property
    def plan(self) -> Path:
        return self.root / VERSION / PLAN_FILE

    @property
    def sidecar(self) -> Path:
        return self.root / SIDECAR_NAME

    @property
    def config(self) -> Path:
        return self.root / CONFIG_NAME

    @property
    def readme(self) -> Path:
        return self.root / "README.md"

    @property
    def fp16_onnx(self) -> Path:
        return self.root / FP16_ONNX_FILE

    def engine_files(self) -> list[Path]:
        return [self.plan, self.sidecar, self.config, self.readme]


@dataclass
class PreparedBuild:
    source: SourceModel
    picked_latest: bool
    precision: str
    folder: EngineFolder
    engine_onnx: Path  # what TensorRT parses: the source, or the fp16 graph
    source_sha256: str
    fp16_summary: dict[str, Any] | None = None
    fp16_reused: bool = False


@dataclass
class BuildResult:
    prepared: PreparedBuild
    sidecar: dict[str, Any] = field(default_factory=dict)

    @property
    def folder(self) -> EngineFolder:
        return self.prepared.folder


def precision_name(fp16: bool, int8: bool = False) -> str:
    return "int8" if int8 else "fp16" if fp16 else "fp32"


def graph_int8(source: SourceModel, insist: bool, fp16: bool) -> bool:
    """Whether the source is an int8 Q/DQ graph TensorRT can build strongly typed (symmetric, zero points 0)."""
    import onnx

    from dat_deploy.quantize.graph import int8_flavour

    flavour = int8_flavour(onnx.load(str(source.path), load_external_data=False))
    if flavour is None:
        if insist:
            raise UserError(f"{source.path} has no Q/DQ nodes: TensorRT 10.1+ takes int8 only from the graph. "
                            "Run `dat-deploy quantize MODEL_FOLDER --target tensorrt` and build its output.")
        return False
    if flavour != "tensorrt":
        raise UserError(f"{source.path} was quantized for onnxruntime (uint8 activations with zero points); TensorRT "
                        "needs symmetric int8: run `dat-deploy quantize MODEL_FOLDER --target tensorrt`.")
    if fp16:
        raise UserError(f"{source.path} is an int8 graph; --fp16 (converting its float rest) is not supported: drop --fp16.")
    return True


def default_timing_cache(tensorrt_version: str, compute_capability: str) -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dat-deploy"
    return base / f"trt-{tensorrt_version}-sm{compute_capability.replace('.', '')}.timing-cache"


def prepare_build(options: BuildOptions, log: Callable[[str], None] = print) -> PreparedBuild:
    """Everything up to the TensorRT build: choose and check the source, write the fp16 graph."""
    from dat_deploy.hashing import sha256_file  # noqa: PLC0415

    if options.onnx is None:
        source = find_latest_export(Path(options.output), options.flavor)
        log(f"building the most recent {source.flavor}-flavour export: {source.path}")
        picked = True
    else:
        source = read_source(Path(options.onnx))
        picked = False
    check_flavor(source, options.flavor)
    Profile(source.input_name, (3, 1, 1), options.min_batch, options.opt_batch, options.max_batch)  # validates
    if options.plugin_lib is not None and not Path(options.plugin_lib).is_file():
        raise UserError(f"plugin library {options.plugin_lib} does not exist; check --plugin-lib.")
    if options.flavor == "native" and options.plugin_lib is not None:
        log("note: --plugin-lib is ignored for --flavor native (no plugin nodes)")

    precision = precision_name(options.fp16, graph_int8(source, options.int8, options.fp16))
    name = options.name if options.name is not None else source.name
    check_folder_name(name, "--name" if options.name is not None else f"the model name taken from {source.path} "
                      "(pass --name to choose one)")
    folder = EngineFolder(Path(options.output) / f"{name}_trt_{precision}")
    if not options.overwrite and folder.root.exists():
        # A folder holding only the fp16 graph is what a build without TensorRT leaves: carry on from it.
        existing = sorted(p for p in folder.root.rglob("*") if p.is_file() and p != folder.fp16_onnx)
        if existing:
            raise UserError(
                f"{existing[0]} already exists. Pass --overwrite to replace the engine, or choose another --name/--output."
            )
    source_sha = sha256_file(source.path)
    return PreparedBuild(source, picked, precision, folder, source.path, source_sha)


def write_fp16_graph(prepared: PreparedBuild, workdir: Path, overwrite: bool, log: Callable[[str], None]) -> None:
    """The fp16 graph TensorRT parses, in `workdir`; one left in the engine folder from this same source is reused."""
    import onnx  # noqa: PLC0415

    from dat_deploy.graph.fp16 import convert_to_fp16, precision_summary  # noqa: PLC0415

    previous_path = prepared.folder.fp16_onnx
    if previous_path.is_file():
        previous = load_onnx(previous_path)
        made_from = onnx_metadata(previous).get("fp16_source_sha256")
        if made_from == prepared.source_sha256 and not overwrite:
            log(f"reusing the fp16 graph {previous_path} (converted from this same source)")
            prepared.engine_onnx = previous_path
            prepared.fp16_reused = True
            prepared.fp16_summary = precision_summary(previous).as_dict()
            return
        if not overwrite:
            raise UserError(
                f"{previous_path} already exists and was converted from another source. Pass --overwrite to replace it."
            )
    model = load_onnx(prepared.source.path, external_data=True)
    converted = convert_to_fp16(model)
    converted.metadata_props.add(key="fp16_source_sha256", value=prepared.source_sha256)
    onnx.checker.check_model(converted)
    target = Path(workdir) / FP16_ONNX_FILE
    onnx.save(converted, str(target))
    prepared.engine_onnx = target
    summary = precision_summary(converted).as_dict()
    prepared.fp16_summary = summary
    log(
        f"converted the graph to fp16: {sum(summary['fp16_nodes'].values())} fp16 nodes, "
        f"{sum(summary['fp32_nodes'].values())} fp32 nodes, "
        f"{summary['casts']['to_fp16'] + summary['casts']['to_fp32']} casts"
    )


def _resolve_plugin_library(options: BuildOptions, source: SourceModel) -> Path | None:
    if options.flavor == "native":
        return None
    if options.plugin_lib is not None:
        return Path(options.plugin_lib)
    from dat_deploy.native import trt_plugin_library_path  # noqa: PLC0415

    path = trt_plugin_library_path()  # a UserError that says how to build it when it is missing
    return Path(path)


def _io_dims(source: SourceModel) -> tuple[tuple[int, ...], dict[str, tuple[int, ...]]]:
    def static(dims) -> tuple[int, ...]:
        return tuple(d if isinstance(d, int) and d > 0 else -1 for d in dims)

    input_dims = static(source.input_shape[1:])
    outputs = {name: static(shape[1:]) for name, shape in zip(source.output_names, source.output_shapes)}
    return input_dims, outputs


def image_dims(source: SourceModel) -> tuple[int, int, int]:
    channels, height, width = source.input_shape[1:]
    size = int(source.metadata.get("input_size", 0) or 0)
    height = height if isinstance(height, int) and height > 0 else size
    width = width if isinstance(width, int) and width > 0 else size
    if not (isinstance(channels, int) and channels > 0 and height and width):
        raise UserError(
            f"{source.path}: cannot tell the image size (input shape {source.input_shape}, no input_size metadata)."
        )
    return channels, height, width


def build_trt(options: BuildOptions, log: Callable[[str], None] = print) -> BuildResult:
    """The whole `build-trt`: every check, then convert (fp16), build, and write the engine folder at once."""
    from dat_deploy.trt.loader import import_tensorrt  # noqa: PLC0415

    prepared = prepare_build(options, log)
    trt = import_tensorrt()  # stops here, with the install hint, where TensorRT is missing
    plugin = _resolve_plugin_library(options, prepared.source)
    with tempfile.TemporaryDirectory(prefix="dat-deploy-trt-") as workdir:
        if options.fp16:
            write_fp16_graph(prepared, Path(workdir), options.overwrite, log)
        return _build_and_write(options, prepared, trt, plugin, log)


def _build_and_write(options: BuildOptions, prepared: PreparedBuild, trt, plugin: Path | None,
                     log: Callable[[str], None]) -> BuildResult:
    from dat_deploy.export.repository import write_model_folder  # noqa: PLC0415
    from dat_deploy.hashing import sha256_file  # noqa: PLC0415
    from dat_deploy.trt.engine_builder import build_engine, device_description  # noqa: PLC0415
    from dat_deploy.triton.config import config_text  # noqa: PLC0415
    from dat_deploy.triton.tensorrt import plugin_readme, tensorrt_model_config  # noqa: PLC0415

    source = prepared.source
    profile = Profile(source.input_name, image_dims(source), options.min_batch, options.opt_batch, options.max_batch)
    timing_cache = options.timing_cache
    if timing_cache is None:
        timing_cache = default_timing_cache(trt.__version__, device_description()["compute_capability"])
    log(
        f"building {prepared.precision} engine ({options.flavor} flavour) from {prepared.engine_onnx}, "
        f"batch {options.min_batch}/{options.opt_batch}/{options.max_batch}"
    )
    built = build_engine(
        prepared.engine_onnx,
        profile,
        plugin_library=plugin,
        workspace_gb=options.workspace_gb,
        timing_cache=timing_cache,
        fp32_strict=True,
        show_progress=options.show_progress,
        verbose=options.verbose,
    )
    folder = prepared.folder
    input_dims, outputs = _io_dims(source)
    sidecar = {
        "format": "dat-deploy tensorrt engine",
        "name": folder.root.name,
        "tensorrt_version": built.tensorrt_version,
        **built.device,
        "precision": prepared.precision,
        "flavor": options.flavor,
        "profile": {"input": source.input_name, **profile.shapes()},
        "plugin_library": None if plugin is None else {"path": str(plugin.resolve()), "sha256": sha256_file(plugin)},
        "source_onnx": {"path": str(source.path.resolve()), "sha256": prepared.source_sha256},
        "engine_onnx": {"path": str((folder.fp16_onnx if options.fp16 else source.path).resolve()),
                        "sha256": sha256_file(prepared.engine_onnx)},
        "fp16_summary": prepared.fp16_summary,
        "build_seconds": round(built.seconds, 3),
        "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "timing_cache": str(timing_cache),
        "inputs": {source.input_name: list(input_dims)},
        "outputs": {name: list(dims) for name, dims in outputs.items()},
        "input_size": profile.image_dims[1],
        "metadata": dict(source.metadata),
    }
    config = tensorrt_model_config(
        folder.root.name, source.input_name, input_dims, outputs, options.max_batch, (options.opt_batch, options.max_batch)
    )
    files = {
        f"{VERSION}/{PLAN_FILE}": built.plan,
        SIDECAR_NAME: (json.dumps(sidecar, indent=2) + "\n").encode(),
        CONFIG_NAME: config_text(config).encode(),
        "README.md": plugin_readme(folder.root.name, plugin, built.tensorrt_version).encode(),
    }
    if options.fp16:
        files[FP16_ONNX_FILE] = prepared.engine_onnx.read_bytes()
    # The whole folder appears at once: Triton never sees a plan without its config.
    write_model_folder(folder.root.parent, folder.root.name, files, overwrite=True)
    log(f"wrote {folder.plan} ({len(built.plan) / 2**20:.1f} MiB, built in {built.seconds:.1f} s)")
    return BuildResult(prepared, sidecar)
