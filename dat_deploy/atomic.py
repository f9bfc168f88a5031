"""Atomic artifact writes: a reader never sees a half-written file.

Every artifact is written to a temporary file in the destination folder and renamed into place.
Existing artifacts are never overwritten silently: callers pass `overwrite=True` explicitly.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Iterator

from dat_deploy.errors import UserError

# One folder name that every file system and Triton accept, and that cannot climb out of its parent.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def current_umask() -> int:
    """The process umask (read by setting and restoring it: the os module offers no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def ensure_writable_dir(folder: Path) -> Path:
    """Create `folder` if needed and check that we can write into it."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create output folder {folder}: {exc.strerror}. Choose a writable folder.") from exc
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output folder {folder} is not writable. Choose a writable folder or fix its permissions.")
    return folder


def check_creatable_dir(folder: Path) -> None:
    """Fail now, creating nothing, if `folder` could not be created and written: before minutes of work, not after."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UserError(f"cannot create output folder {folder}: {existing} is not a directory. Choose a writable folder.")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder else f" ({existing}, where it would be created, is not)"
        raise UserError(f"output folder {folder} is not writable{where}. Choose a writable folder or fix its permissions.")


def check_not_exists(path: Path, overwrite: bool) -> None:
    """Refuse to replace `path` silently. Every command that can meet an existing output has --overwrite."""
    if Path(path).exists() and not overwrite:
        raise UserError(f"{path} already exists. Pass --overwrite to replace it, or choose another output path.")


def check_folder_name(name: str, what: str = "--name") -> str:
    """`name` must be one plain folder name (no separators, not hidden, not . or ..): refused before any work."""
    if not SAFE_NAME.fullmatch(name or ""):
        raise UserError(f"{what} {name!r} is not a plain folder name: use letters, digits, '_', '-' and '.', "
                        "starting with a letter or digit, e.g. dat_t_v2.")
    return name


@contextlib.contextmanager
def atomic_path(path: Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds."""
    path = Path(path)
    check_not_exists(path, overwrite)
    ensure_writable_dir(path.parent)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~current_umask())  # mkstemp makes 0600; a file gets what open() would give it
    finally:
        os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes(path: Path, data: bytes, overwrite: bool = False) -> Path:
    with atomic_path(path, overwrite) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: Path, text: str, overwrite: bool = False) -> Path:
    return write_bytes(path, text.encode("utf-8"), overwrite)
