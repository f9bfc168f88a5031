"""Tables at 80 columns: nothing wider than the terminal, no identifier cut or wrapped."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from rich.console import Console
from typer.testing import CliRunner

import dat_deploy.cli  # noqa: F401  (registers the commands)
from dat_deploy.commands._app import app
from dat_deploy.doctor import INFO, MISSING, OK, Check, render as render_doctor
from dat_deploy.model.variants import zoo_variants
from dat_deploy.parity.compare import TOLERANCES, compare_output
from dat_deploy.parity.report import CaseResult, ParityReport, render as render_parity
from dat_deploy.tables import Column, print_table


def _console(width: int) -> Console:
    return Console(file=io.StringIO(), width=width, color_system=None, legacy_windows=False)


def _text(console: Console) -> str:
    return console.file.getvalue()


def _assert_fits_with_whole_words(text: str, width: int, identifiers: list[str]) -> None:
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width, text
    assert "…" not in text, text
    words = set(re.findall(r"[^\s│┃]+", text))
    missing = [name for name in identifiers if name not in words]
    assert not missing, f"cut or wrapped: {missing}\n{text}"


def test_variants_at_80_columns_keep_every_name_and_checkpoint_whole():
    result = CliRunner(env={"COLUMNS": "80"}).invoke(app, ["variants"])
    assert result.exit_code == 0, result.output
    listed = zoo_variants().values()
    names = [spec.name for spec in listed] + [spec.checkpoint_file for spec in listed]
    _assert_fits_with_whole_words(result.output, 80, names)


def test_variants_on_a_wide_terminal_stay_a_table():
    result = CliRunner(env={"COLUMNS": "200"}).invoke(app, ["variants"])
    assert "┃ variant" in result.output and "dat_pp_b_384" in result.output


def test_doctor_at_80_columns():
    checks = [Check("libdat_trt_plugins.so", MISSING, "not built for the current plugins/ sources " * 2,
                    "dat-deploy build-plugins --cuda --tensorrt-include /usr/include/x86_64-linux-gnu"),
              Check("onnxruntime", OK, "onnxruntime 1.32.0; providers: AzureExecutionProvider, CPUExecutionProvider"),
              Check("nvidia-smi", INFO, "not on PATH (no NVIDIA driver here)", "needed only to run on a GPU")]
    console = _console(80)
    render_doctor(checks, console)
    _assert_fits_with_whole_words(_text(console), 80, ["libdat_trt_plugins.so", "onnxruntime", "nvidia-smi",
                                                        "missing", "AzureExecutionProvider,"])


def _report() -> ParityReport:
    rng = np.random.default_rng(0)
    reference = rng.normal(size=(4, 1000))
    tol = TOLERANCES["fp32"]
    close = compare_output("logits", reference, reference + 3e-5, tol, is_logits=True)
    far = compare_output("stage4_features", reference, reference + 1e-2, tol)
    return ParityReport("torch-cpu", tol, "fp32", [CaseResult("onnxruntime-CPUExecutionProvider", "random-b4", 4, [close]),
                                                   CaseResult("onnxruntime-CPUExecutionProvider", "photos-b3", 3, [far])])


@pytest.mark.parametrize("width", [80, 200])
def test_validate_table_fits_and_says_what_decided_passed(width):
    console = _console(width)
    render_parity(_report(), console)
    text = _text(console)
    _assert_fits_with_whole_words(text, width, ["onnxruntime-CPUExecutionProvider", "random-b4", "photos-b3",
                                                "stage4_features", "PASSED", "FAILED"])
    assert "req. rtol" not in text and "PASSED means" in text and "of bound" in text
    assert ("┃ backend" in text) == (width == 200)  # a table where it fits, one block per row where not


def test_bound_used_is_the_worst_elements_share_of_atol_plus_rtol():
    reference = np.array([[1.0, -2.0, 0.0, 4.0, 8.0]])
    tol = TOLERANCES["fp32"]
    diff = np.array([[1e-4, 0.0, 5e-5, 2e-4, 0.0]])
    result = compare_output("logits", reference, reference + diff, tol, is_logits=True)
    shares = np.abs(diff) / (tol.atol + tol.rtol * np.abs(reference))
    assert result.bound_used == pytest.approx(shares.max())  # 2e-4 / (1e-4 + 4e-4) = 0.4: passes
    assert result.passed and result.required_rtol > tol.rtol  # why "req. rtol" beside a PASSED confused


def test_print_table_uses_the_table_when_it_fits():
    console = _console(80)
    print_table(console, [Column("name", identifier=True), Column("value")], [["a", "1"], ["b", "2"]])
    assert "┃ name" in _text(console)
