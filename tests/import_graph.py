"""Static lookups over dat_deploy's imports, for the tests that walk them (ast only: nothing is imported)."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterable

import dat_deploy

PACKAGE_DIR = Path(dat_deploy.__file__).parent


def module_file(module: str) -> Path | None:
    """The file of a dat_deploy module (a package's __init__.py), or None when there is no such module."""
    base = PACKAGE_DIR.parent / module.replace(".", "/")
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_names() -> dict[str, Path]:
    """Every module of the package: dotted name -> file."""
    modules = {}
    for path in PACKAGE_DIR.rglob("*.py"):
        parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_modules(nodes: Iterable[ast.AST], module: str) -> set[str]:
    """The dat_deploy modules that the import statements among `nodes`, written in `module`, name:
    `import a.b` -> a.b; `from a.b import c` -> a.b, and a.b.c where that is a module."""
    found = set()
    is_package = module_file(module).name == "__init__.py"
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative to the importing module's package
                parts = module.split(".")[: len(module.split(".")) - node.level + is_package]
                base = ".".join(parts + ([base] if base else []))
            found |= {base} | {f"{base}.{alias.name}" for alias in node.names}
    return {m for m in found if m.startswith("dat_deploy") and module_file(m)}
