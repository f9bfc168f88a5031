"""The one place that imports TensorRT, lazily, with an install hint when it is missing."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from dat_deploy.errors import UserError

INSTALL_HINT = (
    'install it with `pip install "dat-deploy[gpu]"` (or `pip install tensorrt` from NVIDIA\'s wheel index: '
    "`pip install --extra-index-url https://pypi.nvidia.com tensorrt`) on a machine with an NVIDIA GPU and driver"
)


def import_tensorrt() -> ModuleType:
    """`import tensorrt`, or a UserError that says how to install it."""
    try:
        import tensorrt as trt  # noqa: PLC0415 - deliberately lazy
    except ImportError as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"TensorRT is not available here ({detail}); {INSTALL_HINT}.") from None
    except OSError as exc:  # the bindings are there but libnvinfer is not
        raise UserError(f"TensorRT's libraries could not be loaded ({exc}); {INSTALL_HINT}.") from None
    return trt


def tensorrt_available() -> bool:
    try:
        import_tensorrt()
    except UserError:
        return False
    return True


_loaded_plugin_libraries: dict[str, object] = {}


def load_plugin_library(trt: ModuleType, library: Path) -> None:
    """Register the plugin creators of `library` once per process (a second load fails in TensorRT)."""
    library = Path(library)
    if not library.is_file():
        raise UserError(
            f"plugin library {library} does not exist. Build it (dat-deploy build-plugins) or pass --plugin-lib."
        )
    key = str(library.resolve())
    if key in _loaded_plugin_libraries:
        return
    registry = trt.get_plugin_registry()
    try:
        handle = registry.load_library(key)
    except Exception as exc:  # noqa: BLE001 - TensorRT raises plain RuntimeErrors here
        raise UserError(f"TensorRT could not load the plugin library {library}: {exc}") from None
    if handle is None:
        raise UserError(
            f"TensorRT could not load the plugin library {library} (does it export getCreators/setLoggerFinder, "
            "and was it built against this TensorRT version?)."
        )
    _loaded_plugin_libraries[key] = handle
