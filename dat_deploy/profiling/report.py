"""The profile report: one dict (written as JSON), a flat CSV, and a trtexec-like terminal summary.

Field names follow trtexec's performance summary (latency min/mean/median/p90/p95/p99, throughput
in qps, H2D / GPU compute / D2H) and add what trtexec lacks: images/s, a batch sweep, several
backends side by side, and the ratio to a baseline backend measured in the same run.
"""

from __future__ import annotations

import csv
import io
import json
import os
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

from dat_deploy.atomic import write_text
from dat_deploy.profiling.contention import contention_warning
from dat_deploy.profiling.machine import cpu_model
from dat_deploy.profiling.ops import matrix_gmac_s
from dat_deploy.profiling.runner import SPLIT_KEYS, CaseResult
from dat_deploy.profiling.stats import DEFAULT_CV_WARN, few_iterations_warning, noise_warnings, summarize, throughput

SCHEMA = "dat-deploy/profile/v1"

CSV_COLUMNS = [
    "backend", "batch", "iterations",
    "latency_min_ms", "latency_mean_ms", "latency_median_ms", "latency_p90_ms", "latency_p95_ms",
    "latency_p99_ms", "latency_max_ms", "latency_std_ms", "latency_cv",
    "throughput_qps", "throughput_ips", "speedup_vs_baseline",
    "peak_rss_mb", "rss_growth_mb", "peak_gpu_mb",
    "h2d_mean_ms", "compute_mean_ms", "d2h_mean_ms", "compile_s", "noisy",
]


def environment() -> dict:
    """The machine and library versions: numbers mean little without them."""
    import numpy
    import psutil

    env = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_count_logical": psutil.cpu_count(logical=True),
        "cpu_count_physical": psutil.cpu_count(logical=False),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "numpy": numpy.__version__,
        "load_average": [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    for module in ("torch", "onnxruntime", "tensorrt"):
        env[module] = _version_if_imported(module)
    from dat_deploy import __version__ as dat_deploy_version  # noqa: PLC0415

    env["dat_deploy"] = dat_deploy_version
    torch = sys.modules.get("torch")
    env["torch_threads"] = torch.get_num_threads() if torch is not None else None
    return env


def _version_if_imported(module: str) -> str | None:
    mod = sys.modules.get(module)
    return getattr(mod, "__version__", None) if mod is not None else None


def case_label(backend: str, batch: int) -> str:
    return f"{backend} @ batch {batch}"


def build_report(
    results: Sequence[CaseResult],
    *,
    variant: str,
    input_size: int,
    settings: dict,
    backends: Sequence[dict],
    baseline: str | None = None,
    cv_warn: float = DEFAULT_CV_WARN,
    ops: dict | None = None,
    notes: Sequence[str] = (),
    env: dict | None = None,
    contention: dict | None = None,
) -> dict:
    """Statistics, ratios and warnings for every case; raw samples are kept for re-analysis.

    `backends` holds one dict per backend: name, description, artifact, load_s, compile_s.
    Speedup vs `baseline` = baseline mean latency / this mean latency at the same batch size.
    `contention` is ContentionMeter's result for the timed loop (other processes' share of the CPU).
    """
    baseline = baseline if baseline is not None else (backends[0]["name"] if backends else None)
    compile_s = {b["name"]: b.get("compile_s") for b in backends}
    stats = {(r.backend, r.batch): summarize(r.samples_ms) for r in results}
    env = env if env is not None else environment()
    warnings: list[str] = few_iterations_warning(min((s.count for s in stats.values()), default=0))
    warnings += contention_warning(contention, threads=settings.get("threads"))
    rows = []
    for r in results:
        s = stats[(r.backend, r.batch)]
        qps, ips = throughput(s, r.batch)
        base = stats.get((baseline, r.batch))
        case_warnings = noise_warnings(case_label(r.backend, r.batch), s, cv_warn)
        warnings.extend(case_warnings)
        splits = {key: (summarize(r.split_ms[key]).as_dict() if r.split_ms.get(key) else None) for key in SPLIT_KEYS}
        compiled = compile_s.get(r.backend) or {}
        rows.append(
            {
                "backend": r.backend,
                "batch": r.batch,
                "iterations": s.count,
                "latency_ms": s.as_dict(),
                "throughput_qps": qps,
                "throughput_ips": ips,
                "speedup_vs_baseline": (base.mean / s.mean) if base is not None and s.mean > 0 else None,
                "noisy": s.cv > cv_warn,
                "peak_rss_mb": r.peak_rss_mb,
                "rss_growth_mb": r.rss_growth_mb,
                "peak_gpu_mb": r.peak_gpu_mb,
                **splits,
                "compile_s": compiled.get(str(r.batch)),
                "samples_ms": list(r.samples_ms),
            }
        )
    return {
        "schema": SCHEMA,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "variant": variant,
        "input_size": input_size,
        "settings": {**settings, "cv_warn": cv_warn, "baseline": baseline, "interleaved": True},
        "environment": env,
        "contention": contention,
        "backends": list(backends),
        "results": rows,
        "ops": ops,
        "warnings": warnings,
        "notes": list(notes),
    }


def to_json(report: dict) -> str:
    return json.dumps(report, indent=2, allow_nan=False) + "\n"


def to_csv(report: dict) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in report["results"]:
        lat = row["latency_ms"]
        writer.writerow(
            {
                "backend": row["backend"],
                "batch": row["batch"],
                "iterations": row["iterations"],
                **{f"latency_{k}_ms": _fmt(lat[k]) for k in ("min", "mean", "median", "p90", "p95", "p99", "max", "std")},
                "latency_cv": _fmt(lat["cv"]),
                "throughput_qps": _fmt(row["throughput_qps"]),
                "throughput_ips": _fmt(row["throughput_ips"]),
                "speedup_vs_baseline": _fmt(row["speedup_vs_baseline"]),
                "peak_rss_mb": _fmt(row["peak_rss_mb"]),
                "rss_growth_mb": _fmt(row["rss_growth_mb"]),
                "peak_gpu_mb": _fmt(row["peak_gpu_mb"]),
                "h2d_mean_ms": _fmt(row["h2d_ms"]["mean"] if row["h2d_ms"] else None),
                "compute_mean_ms": _fmt(row["compute_ms"]["mean"] if row["compute_ms"] else None),
                "d2h_mean_ms": _fmt(row["d2h_ms"]["mean"] if row["d2h_ms"] else None),
                "compile_s": _fmt(row["compile_s"]),
                "noisy": int(row["noisy"]),
            }
        )
    return out.getvalue()


def _fmt(value) -> str:
    if value is None:
        return ""
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def write_report_files(report: dict, folder: Path, overwrite: bool = False) -> dict[str, Path]:
    """profile.json and profile.csv in `folder`, written atomically."""
    folder = Path(folder)
    return {
        "json": write_text(folder / "profile.json", to_json(report), overwrite),
        "csv": write_text(folder / "profile.csv", to_csv(report), overwrite),
    }


SUMMARY_COLUMNS = ("Backend", "Batch", "Iters", "min", "mean", "median", "p90", "p95", "p99", "CV",
                   "qps", "images/s", "vs baseline", "RSS MB")
# Columns left out on narrow terminals (JSON and CSV keep everything): below 110, then below 90 columns.
NARROW_DROPS = (("Iters", "p95", "qps", "RSS MB"), ("min", "p90"))


def render_summary(report: dict, console) -> None:
    """The terminal summary: one row per case, trtexec-style split lines and warnings below."""
    from rich import box
    from rich.table import Table

    baseline = report["settings"].get("baseline")
    table = Table(
        title=f"dat-deploy profile: {report['variant']} ({report['input_size']}x{report['input_size']}); "
        f"latency per batch in ms; vs = {baseline} mean / this mean",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    dropped = (NARROW_DROPS[0] if console.width < 110 else ()) + (NARROW_DROPS[1] if console.width < 90 else ())
    columns = [c for c in SUMMARY_COLUMNS if c not in dropped]
    for header in columns:
        table.add_column(f"vs {baseline}" if header == "vs baseline" else header,
                         justify="left" if header == "Backend" else "right", no_wrap=True)
    for row in report["results"]:
        lat = row["latency_ms"]
        cv = f"{lat['cv']:.1%}"
        cells = {
            "Backend": row["backend"],
            "Batch": str(row["batch"]),
            "Iters": str(row["iterations"]),
            **{k: _ms(lat[k]) for k in ("min", "mean", "median", "p90", "p95", "p99")},
            "CV": f"[yellow]{cv}[/]" if row["noisy"] else cv,
            "qps": f"{row['throughput_qps']:.2f}",
            "images/s": f"{row['throughput_ips']:.1f}",
            "vs baseline": "-" if row["speedup_vs_baseline"] is None else f"{row['speedup_vs_baseline']:.2f}x",
            "RSS MB": "-" if row["peak_rss_mb"] is None else f"{row['peak_rss_mb']:.0f}",
        }
        table.add_row(*(cells[c] for c in columns))
    console.print(table)
    for backend in report["backends"]:
        if backend.get("compile_s"):
            times = ", ".join(f"batch {b}: {s:.1f} s" for b, s in backend["compile_s"].items())
            console.print(f"{backend['name']}: compile time (not in the latencies above): {times}")
    names = {"h2d_ms": "H2D Latency", "compute_ms": "GPU Compute Time", "d2h_ms": "D2H Latency"}
    for row in report["results"]:
        for key, title in names.items():
            s = row.get(key)
            if s:
                console.print(
                    f"{case_label(row['backend'], row['batch'])}  {title}: min = {s['min']:.4f} ms, "
                    f"max = {s['max']:.4f} ms, mean = {s['mean']:.4f} ms, median = {s['median']:.4f} ms, "
                    f"percentile(90%) = {s['p90']:.4f} ms, percentile(95%) = {s['p95']:.4f} ms, "
                    f"percentile(99%) = {s['p99']:.4f} ms",
                    highlight=False,
                )
    if report.get("ops"):
        render_ops(report["ops"], console)
    contention = report.get("contention")
    if contention:
        console.print(f"[dim]timed loop: {contention['wall_s']:.1f} s; other processes used "
                      f"{contention['others_share']:.0%} of the {contention['cores']} cores meanwhile[/]", highlight=False)
    for note in report.get("notes", []):
        console.print(f"[dim]note:[/] {note}", highlight=False)
    for warning in report["warnings"]:
        console.print(f"[yellow][W] * {warning}[/]", highlight=False)


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 100 else f"{value:.2f}" if value >= 1 else f"{value:.3f}"


def render_ops(ops: dict, console, top: int = 12) -> None:
    """Per-op tables, one per profiled (backend, batch), sampling ops highlighted, matrix products with their GMAC/s."""
    from rich.table import Table

    for key, prof in ops.items():
        rate = matrix_gmac_s(prof)
        matrix = "" if rate is None else f", matrix products {prof['matrix_share']:.1%} at {rate:.1f} GMAC/s"
        table = Table(
            title=f"ops: {key} ({prof['source']}, {prof['runs']} runs, "
            f"sampling ops {prof['sampling_share']:.1%} of kernel time{matrix})",
            title_justify="left",
        )
        for header in ("Op type", "calls/run", "ms/run", "share", "GMAC/s"):
            table.add_column(header, justify="left" if header == "Op type" else "right")
        shown = prof["ops"][:top] + [o for o in prof["ops"][top:] if o["sampling"]]
        for op in shown:
            style = "bold magenta" if op["sampling"] else None
            gmac = op.get("gmac_per_run")
            rate = f"{gmac / (op['ms_per_run'] / 1000.0):.1f}" if gmac and op["ms_per_run"] > 0 else ""
            table.add_row(op["op_type"], f"{op['calls_per_run']:.0f}", f"{op['ms_per_run']:.3f}", f"{op['share']:.1%}",
                          rate, style=style)
        rest = [o for o in prof["ops"] if o not in shown]
        if rest:
            table.add_row(f"({len(rest)} other op types)", "", f"{sum(o['ms_per_run'] for o in rest):.3f}",
                          f"{sum(o['share'] for o in rest):.1%}", "")
        console.print(table)
