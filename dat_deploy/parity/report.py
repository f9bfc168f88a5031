"""Running backends against the reference and reporting the result as a table and JSON."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from dat_deploy import atomic
from dat_deploy.parity.compare import OutputComparison, Tolerance, compare_output
from dat_deploy.parity.inputs import InputCase
from dat_deploy.runtime.base import Backend
from dat_deploy.runtime.names import LOGITS_NAME


@dataclass
class CaseResult:
    backend: str
    case: str
    batch: int
    outputs: list[OutputComparison]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)


@dataclass
class ParityReport:
    reference: str
    tolerance: Tolerance
    precision: str
    results: list[CaseResult] = field(default_factory=list)
    bisect: dict | None = None
    context: dict = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.results) and all(r.passed for r in self.results)

    def to_dict(self) -> dict:
        return {
            "passed": self.passed,
            "reference": self.reference,
            "precision": self.precision,
            "tolerance": self.tolerance.__dict__,
            "context": self.context,
            "results": [
                {"backend": r.backend, "case": r.case, "batch": r.batch, "passed": r.passed,
                 "outputs": [o.to_dict() for o in r.outputs]}
                for r in self.results
            ],
            "bisect": self.bisect,
        }

    def write_json(self, path: Path) -> Path:
        return atomic.write_text(path, json.dumps(self.to_dict(), indent=2, default=float), overwrite=True)


def run_parity(reference: Backend, candidates: list[Backend], cases: list[InputCase], tol: Tolerance,
               precision: str = "fp32", on_step=None) -> ParityReport:
    report = ParityReport(reference=reference.name, tolerance=tol, precision=precision)
    for case in cases:
        expected = reference.run(case.batch)
        for backend in candidates:
            if on_step:
                on_step(f"{backend.name}: {case.name}")
            got = backend.run(case.batch)
            comparisons = [
                compare_output(name, expected[name], got[name], tol, is_logits=(name == LOGITS_NAME))
                for name in expected if name in got
            ]
            report.results.append(CaseResult(backend.name, case.name, case.batch.shape[0], comparisons))
    return report


def _fmt(value: float | None, spec: str = ".2e") -> str:
    return "-" if value is None else format(value, spec)


def render(report: ParityReport, console: Console | None = None) -> None:
    from dat_deploy.tables import Column, print_table

    # Off a terminal rich would squeeze the table into 80 characters; logs and CI want it whole (COLUMNS still rules).
    console = console or (Console() if Console().is_terminal or "COLUMNS" in os.environ else Console(width=200))
    tol = report.tolerance
    columns = [Column("backend", identifier=True), Column("input", identifier=True), Column("output", identifier=True),
               *(Column(c, justify="right") for c in ("max abs", "mean abs", "max rel", "of bound", "cosine",
                                                      "image cos mean/min", "top-1", "top-5", "NaN/Inf")),
               Column("result", identifier=True), Column("why", wrap=True)]
    rows = []
    for result in report.results:
        for o in result.outputs:
            verdict = "[green]PASSED[/]" if o.passed else "[red]FAILED[/]"
            rows.append([result.backend, result.case, o.name, _fmt(o.max_abs), _fmt(o.mean_abs), _fmt(o.max_rel),
                         _fmt(o.bound_used, ".0%"), f"{o.cosine:.7f}",
                         "-" if o.mean_image_cosine is None else f"{o.mean_image_cosine:.5f}/{o.min_image_cosine:.5f}",
                         _fmt(o.top1_agreement, ".0%"),
                         _fmt(o.top5_overlap, ".0%"), str(o.nonfinite), verdict, escape("; ".join(o.failures))])
    print_table(console, columns, rows, title=f"parity vs {report.reference} ({report.precision})")
    console.print(_passed_means(tol), highlight=False)
    if report.bisect:
        console.print(f"[bold]bisect:[/] {report.bisect.get('summary')}")
    console.print("[bold green]PASSED[/]" if report.passed else "[bold red]FAILED[/]")


def _passed_means(tol: Tolerance) -> str:
    if tol.min_mean_cosine or tol.min_image_cosine or tol.min_top5:  # int8: judged per image, on logits
        return (f"PASSED means: per-image logit cosine mean >= {tol.min_mean_cosine} and min >= {tol.min_image_cosine}, "
                f"top-1 agreement >= {tol.min_top1:.0%}, top-5 overlap >= {tol.min_top5:.0%}, no NaN/Inf "
                f"(elementwise errors are shown, not judged).")
    return (
        f"PASSED means: every element |candidate - reference| <= atol {tol.atol:g} + rtol {tol.rtol:g} * |reference| "
        f"('of bound': the worst element's share of that bound, 100% at most; atol scales with a feature map's RMS "
        f"above 1), cosine >= {tol.min_cosine}, logits' top-1 agreement >= {tol.min_top1:.0%}, no NaN/Inf.")
