"""The model repository in Triton's layout, written as a whole or not at all.

    models/<name>/config.pbtxt
    models/<name>/dat_deploy.json      the sidecar (what, from which weights, how validated)
    models/<name>/1/model.onnx

The folder is assembled under a temporary name next to the destination and renamed into place,
so an interrupted export never leaves a half-written model that Triton would try to load.
dat_deploy.artifacts finds the model file and sidecar in such folders.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from dat_deploy.atomic import current_umask, ensure_writable_dir
from dat_deploy.errors import UserError


def write_model_folder(root: Path, name: str, files: dict[str, bytes], overwrite: bool = False) -> Path:
    """Write `files` (relative path -> bytes) as root/name/, atomically."""
    root = ensure_writable_dir(Path(root))
    final = root / name
    if final.exists() and not overwrite:
        raise UserError(f"{final} already exists. Pass --overwrite to replace it, or choose another name or folder.")
    staging = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".partial", dir=root))
    staging.chmod(0o777 & ~current_umask())  # mkdtemp makes it private; the umask decides, as for mkdir
    try:
        for relative, data in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        if final.exists():
            retired = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".old", dir=root))
            os.replace(final, retired / name)
            os.replace(staging, final)
            shutil.rmtree(retired, ignore_errors=True)
        else:
            os.replace(staging, final)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return final
