"""Which instruction-set layer of the CPU kernels libdat_ort_ops runs, and why.

The library is compiled once per layer (portable x86-64, avx2 = x86-64-v3, avx512 = x86-64-v4) and picks one from
CPUID when it loads; DAT_DEPLOY_CPU_LAYER=portable|avx2|avx512 forces one (read once, when the library loads). The
choice is read here through the library's C functions (dat_cpu_layer, dat_cpu_layer_reason,
dat_cpu_layers_supported), which loads the library into this process, as onnxruntime will anyway.
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
from pathlib import Path

from dat_deploy.errors import UserError

LAYER_ENV = "DAT_DEPLOY_CPU_LAYER"
LAYERS = ("portable", "avx2", "avx512")


@dataclasses.dataclass(frozen=True)
class CpuLayer:
    layer: str  # "" when the forced layer was refused
    reason: str  # what CPUID found, that the environment forced it, or why a forced layer was refused
    supported: tuple[str, ...]  # the layers this CPU can run with this library

    @property
    def refused(self) -> bool:
        return not self.layer


def read_cpu_layer(library: str | os.PathLike) -> CpuLayer:
    """The layer `library` chose in this process. A library without the functions (built before run-time dispatch)
    is a UserError that says to rebuild."""
    lib = ctypes.CDLL(str(library))
    values = []
    for name in ("dat_cpu_layer", "dat_cpu_layer_reason", "dat_cpu_layers_supported"):
        try:
            function = getattr(lib, name)
        except AttributeError:
            raise UserError(f"{library} has no {name}(): it predates run-time CPU dispatch. Rebuild it with "
                            "`dat-deploy build-plugins`.") from None
        function.restype = ctypes.c_char_p
        function.argtypes = []
        values.append(function().decode())
    layer, reason, supported = values
    return CpuLayer(layer, reason, tuple(filter(None, supported.split(","))))


def register_ort_ops(options, library: str | os.PathLike) -> CpuLayer | None:
    """Register libdat_ort_ops with onnxruntime SessionOptions; a refused DAT_DEPLOY_CPU_LAYER is a UserError.
    Returns the library's layer, or None for a library built before run-time dispatch (registered all the same)."""
    try:
        choice = read_cpu_layer(library)
    except UserError:
        options.register_custom_ops_library(str(library))
        return None
    if choice.refused:
        raise UserError(f"{Path(library).name}: {choice.reason}")
    options.register_custom_ops_library(str(library))
    return choice


def runtime_requirements(library: str | os.PathLike) -> dict[str, str]:
    """The newest glibc (GLIBC_x.y) and libstdc++ (GLIBCXX_3.4.z) symbol versions `library` asks for, read from the
    version strings of its dynamic section: what a serving host or container must provide ({} for a missing name)."""
    import re

    data = Path(library).read_bytes()
    found: dict[str, str] = {}
    for key, pattern in (("glibc", rb"GLIBC_(\d+(?:\.\d+)+)\x00"), ("glibcxx", rb"GLIBCXX_(\d+(?:\.\d+)+)\x00")):
        versions = {tuple(int(p) for p in m.group(1).split(b".")) for m in re.finditer(pattern, data)}
        if versions:
            found[key] = ".".join(map(str, max(versions)))
    return found
