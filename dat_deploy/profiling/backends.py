"""Backend names on the command line -> ready-to-time Backend objects.

    torch          PyTorch eager on CPU (the baseline)
    torch-compile  torch.compile of the same model; opt-in: compiling DAT on 2 cores takes minutes,
                   so the compile time is measured apart (first call per batch size)
    ort            standard-flavour ONNX in onnxruntime (CPU)
    ort-plugin     plugin-flavour ONNX in onnxruntime with our custom-op library
    ort-official   standard flavour traced op for op from the official forward (`--layout official`):
                   the plain export users write by hand, the baseline of the speed goals
    trt            a TensorRT engine (--engine)

The ONNX files come from --onnx or are exported once into a cache folder keyed by everything that
changes them (variant, flavour, layout, opset, weights, and the source of the model and exporter).
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dat_deploy.artifacts import ENGINE_SUFFIXES, ONNX_SUFFIXES, find_model_file, load_onnx, onnx_metadata
from dat_deploy.errors import UserError
from dat_deploy.graph.dat_graph import has_dat_nodes

BACKEND_NAMES = ("torch", "torch-compile", "ort", "ort-plugin", "ort-official", "trt")
DEFAULT_BACKENDS = ("torch", "ort")
ONNX_FLAVOR = {"ort": "standard", "ort-plugin": "plugin", "ort-official": "standard"}
ONNX_LAYOUT = {"ort": "fast", "ort-plugin": "fast", "ort-official": "official"}
DESCRIPTIONS = {
    "torch": "PyTorch eager (CPU, torch.no_grad)",
    "torch-compile": "torch.compile (inductor, static shapes; compile time reported apart)",
    "ort": "onnxruntime CPU, standard-flavour ONNX (GridSample)",
    "ort-plugin": "onnxruntime CPU, plugin-flavour ONNX (dat custom-op library)",
    "ort-official": "onnxruntime CPU, standard-flavour ONNX traced from the official forward (plain export)",
    "trt": "TensorRT engine",
}
EXPORT_OPSET = 18


@dataclass
class PreparedBackend:
    name: str
    backend: object  # dat_deploy.runtime.Backend
    description: str
    artifact: str | None = None
    load_s: float = 0.0
    export_s: float | None = None
    compile_s: dict[str, float] | None = None
    onnx_path: Path | None = None

    def info(self) -> dict:
        return {
            "name": self.name,
            "description": self.description,
            "artifact": self.artifact,
            "load_s": self.load_s,
            "export_s": self.export_s,
            "compile_s": self.compile_s,
        }


def parse_backend_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in BACKEND_NAMES]
    if unknown or not names:
        raise UserError(f"unknown backend(s) {', '.join(unknown) or '(none)'} in --backend {text!r}; "
                        f"choose from {', '.join(BACKEND_NAMES)}.")
    if len(set(names)) != len(names):
        raise UserError(f"--backend {text!r} names a backend twice.")
    return names


def make_inputs(batches: Sequence[int], input_size: int, seed: int = 0) -> dict[int, np.ndarray]:
    """One seeded float32 NCHW batch per size; every backend gets the same arrays."""
    rng = np.random.default_rng(seed)
    return {b: rng.standard_normal((b, 3, input_size, input_size)).astype(np.float32) for b in batches}


def given_model(option: str, path: Path, suffixes: Sequence[str]) -> Path:
    """The model file an option names (a file, or a model folder's); a UserError names the option."""
    try:
        return find_model_file(path, suffixes)
    except UserError as exc:
        raise UserError(f"{option}: {exc}") from None


def onnx_kind(path: Path) -> tuple[str, str | None]:
    """(flavour, layout) recorded in an ONNX's metadata; flavour "standard" unless it has `dat` nodes,
    layout None when the file does not say (other tools, or exports from before `--layout`)."""
    model = load_onnx(path)
    meta = onnx_metadata(model)
    if "flavor" in meta:
        flavor = meta["flavor"]
    else:
        flavor = "plugin" if has_dat_nodes(model) else "standard"
    return flavor, meta.get("layout")


def default_cache_dir() -> Path:
    env = os.environ.get("DAT_DEPLOY_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "dat-deploy"


# Source files that cannot change the traced graph (checkpoint reading, summaries, fp16 conversion,
# the model-repository writer); any other file in model/ or export/, new ones included, counts.
_NOT_IN_GRAPH = {"model/checkpoint.py", "model/summary.py", "export/__init__.py", "export/repository.py"}


def _source_fingerprint() -> str:
    """Hash of the model and exporter source: a changed exporter never reuses a stale cached ONNX."""
    import dat_deploy

    root = Path(dat_deploy.__file__).parent
    digest = hashlib.sha256(dat_deploy.__version__.encode())
    for folder in ("model", "export"):
        for path in sorted((root / folder).rglob("*.py")):
            if path.relative_to(root).as_posix() in _NOT_IN_GRAPH:
                continue
            digest.update(path.relative_to(root).as_posix().encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


class BackendFactory:
    """Builds the named backends for one variant, sharing the PyTorch model and cached exports."""

    def __init__(
        self,
        variant: str,
        weights: Path | None = None,
        threads: int | None = None,
        onnx: Path | None = None,
        engine: Path | None = None,
        cache_dir: Path | None = None,
        log: Callable[[str], None] = lambda message: None,
    ):
        self.variant = variant
        self.weights = Path(weights) if weights is not None else None
        self.threads = threads
        self.engine = given_model("--engine", engine, ENGINE_SUFFIXES) if engine is not None else None
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.log = log
        self._model = None
        self._given_onnx: dict[str, tuple[Path, str | None]] = {}  # flavour -> (path, layout)
        if onnx is not None:
            onnx = given_model("--onnx", onnx, ONNX_SUFFIXES)
            flavor, layout = onnx_kind(onnx)
            self._given_onnx[flavor] = (onnx, layout)

    # -- the PyTorch model, built once ---------------------------------------------------------
    def model(self):
        if self._model is None:
            from dat_deploy.model import create_model

            self._model = create_model(self.variant, weights=self.weights)
        return self._model

    # -- ONNX: given or exported into the cache --------------------------------------------------
    def onnx_for(self, backend: str) -> tuple[Path, float | None]:
        """(path, export seconds or None when it was given or cached) of an ort* backend's ONNX."""
        flavor, layout = ONNX_FLAVOR[backend], ONNX_LAYOUT[backend]
        if flavor in self._given_onnx:
            given, given_layout = self._given_onnx[flavor]
            if given_layout not in (None, layout):  # else ort and ort-official would time one file under two names
                raise UserError(f"--onnx {given} is a {flavor} export in the {given_layout} layout, but backend "
                                f"{backend} times the {layout} layout. Drop {backend} from --backend, or leave --onnx out.")
            return given, None
        kind = flavor if layout == "fast" else f"{flavor}-{layout}"
        path = self.cache_dir / "onnx" / f"{self.variant}-{kind}-{self._cache_key(kind)[:16]}" / "model.onnx"
        if path.is_file():
            self.log(f"using cached {kind} ONNX {path}")
            return path, None
        from dat_deploy.atomic import write_bytes
        from dat_deploy.export.onnx_export import TraceOptions, export_model

        # Parity of the export is `dat-deploy export` / `validate`'s job; here only the speed matters.
        self.log(f"exporting {self.variant} ({flavor} flavour, {layout} layout, dynamic batch) to {path} "
                 "(once; later runs reuse it)")
        start = time.perf_counter()
        options = TraceOptions(opset=EXPORT_OPSET, batch=None, flavor=flavor, layout=layout)
        proto = export_model(self.model(), self.variant, options)
        write_bytes(path, proto.SerializeToString())
        self._drop_stale_exports(path.parent)
        return path, time.perf_counter() - start

    def _drop_stale_exports(self, keep: Path) -> None:
        """Older exports of this variant and flavour (another source or weights) would only fill the disk."""
        kind = keep.name.rsplit("-", 1)[0]
        for folder in keep.parent.glob(kind + "-*"):
            same_kind = folder.name.rsplit("-", 1)[0] == kind  # "dat_t-standard-*" also globs dat_t-standard-official-*
            if same_kind and folder != keep and folder.is_dir() and (folder / "model.onnx").is_file():
                (folder / "model.onnx").unlink()
                if not any(folder.iterdir()):
                    folder.rmdir()

    def _cache_key(self, flavor: str) -> str:
        if self.weights is not None:
            from dat_deploy.hashing import sha256_file

            weights_id = sha256_file(self.weights)
        else:
            weights_id = "seeded-random"
        text = "|".join([self.variant, flavor, str(EXPORT_OPSET), weights_id, _source_fingerprint()])
        return hashlib.sha256(text.encode()).hexdigest()

    # -- the backends -----------------------------------------------------------------------------
    def prepare(self, name: str, inputs: dict[int, np.ndarray]) -> PreparedBackend:
        if name == "torch":
            return self._torch()
        if name == "torch-compile":
            return self._torch_compile(inputs)
        if name in ONNX_FLAVOR:
            return self._ort(name)
        if name == "trt":
            return self._trt()
        raise UserError(f"unknown backend {name!r}; choose from {', '.join(BACKEND_NAMES)}.")

    def _torch(self) -> PreparedBackend:
        from dat_deploy.runtime import TorchBackend

        start = time.perf_counter()
        backend = TorchBackend(self.model())
        return PreparedBackend("torch", backend, DESCRIPTIONS["torch"], load_s=time.perf_counter() - start)

    def _torch_compile(self, inputs: dict[int, np.ndarray]) -> PreparedBackend:
        import torch

        from dat_deploy.runtime import TorchBackend

        start = time.perf_counter()
        backend = TorchBackend(torch.compile(self.model(), dynamic=False))
        backend.name = "torch-compile"
        load_s = time.perf_counter() - start
        compile_s = {}
        for batch_size, batch in inputs.items():
            self.log(f"torch.compile: compiling for batch {batch_size} (minutes on a small CPU)")
            start = time.perf_counter()
            backend.run(batch)  # the first call per shape compiles
            compile_s[str(batch_size)] = time.perf_counter() - start
        return PreparedBackend("torch-compile", backend, DESCRIPTIONS["torch-compile"], load_s=load_s,
                               compile_s=compile_s)

    def _ort(self, name: str) -> PreparedBackend:
        from dat_deploy.runtime import OrtBackend

        path, export_s = self.onnx_for(name)
        start = time.perf_counter()
        backend = OrtBackend(path, providers=["CPUExecutionProvider"], intra_op_threads=self.threads)
        return PreparedBackend(name, backend, DESCRIPTIONS[name], artifact=str(path),
                               load_s=time.perf_counter() - start, export_s=export_s, onnx_path=path)

    def _trt(self) -> PreparedBackend:
        if self.engine is None:
            raise UserError("backend trt needs an engine: pass --engine PATH (build one with `dat-deploy build-trt`).")
        try:
            from dat_deploy.runtime.tensorrt_backend import TensorRTBackend
        except ImportError as exc:
            raise UserError(f"backend trt is not available here ({exc}). It needs the tensorrt package and a GPU.") from exc
        start = time.perf_counter()
        backend = TensorRTBackend(self.engine)
        return PreparedBackend("trt", backend, DESCRIPTIONS["trt"], artifact=str(self.engine),
                               load_s=time.perf_counter() - start)
