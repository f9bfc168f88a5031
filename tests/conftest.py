"""Shared fixtures. Exports are the slow part of the suite, so each distinct export runs once per session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def export_once(tmp_path_factory):
    """export_once(variant, **options) -> ExportResult, cached for the whole session (do not modify the files)."""
    from dat_deploy.export import export_onnx

    cache: dict[tuple, object] = {}
    root = tmp_path_factory.mktemp("exports")

    def run(variant: str, **options):
        key = (variant, tuple(sorted(options.items())))
        if key not in cache:
            cache[key] = export_onnx(variant, output_dir=root / f"set{len(cache)}", **options)
        return cache[key]

    return run


@pytest.fixture(scope="session")
def dat_t_onnx(export_once) -> Path:
    return export_once("dat_t").onnx_path


@pytest.fixture(scope="session")
def dat_pp_t_onnx(export_once) -> Path:
    return export_once("dat_pp_t").onnx_path

@pytest.fixture
def no_model_building(monkeypatch):
    """A name check that comes after building the model (seconds) or tracing (half a minute) fails this."""
    import dat_deploy.export as export

    def refuse(*_args, **_kwargs):
        raise AssertionError("the model was built before the options were checked")

    monkeypatch.setattr(export, "create_model", refuse)
