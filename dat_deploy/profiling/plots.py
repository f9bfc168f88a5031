"""PNG plots of a profile report. matplotlib is imported here only, with the Agg backend (no display)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dat_deploy.atomic import atomic_path
from dat_deploy.errors import UserError


def pyplot():
    """matplotlib.pyplot on the Agg backend, or a UserError saying how to install matplotlib."""
    try:
        import matplotlib
    except ImportError as exc:
        raise UserError("plots need matplotlib: pip install 'dat-deploy[plots]' (or pass --no-plots).") from exc
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _backends_in_order(report: dict) -> list[str]:
    names: list[str] = []
    for row in report["results"]:
        if row["backend"] not in names:
            names.append(row["backend"])
    return names


def plot_throughput(report: dict, path: Path, overwrite: bool = False) -> Path:
    """images/s against batch size, one line per backend."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    batches = sorted({row["batch"] for row in report["results"]})
    for name in _backends_in_order(report):
        rows = sorted((r for r in report["results"] if r["backend"] == name), key=lambda r: r["batch"])
        ax.plot([r["batch"] for r in rows], [r["throughput_ips"] for r in rows], marker="o", label=name)
    if len(batches) > 1 and batches[0] > 0:
        ax.set_xscale("log", base=2)
    ax.set_xticks(batches, [str(b) for b in batches])
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    ax.set_ylim(bottom=0)
    ax.set_title(f"{report['variant']}: throughput (higher is better)")
    ax.grid(True, alpha=0.3)
    ax.legend()
    return save_figure(fig, plt, path, overwrite)


def plot_latency(report: dict, path: Path, overwrite: bool = False) -> Path:
    """Latency distribution per case: one box plot per (backend, batch), one panel per batch size."""
    plt = pyplot()
    batches = sorted({row["batch"] for row in report["results"]})
    fig, axes = plt.subplots(1, len(batches), figsize=(3.2 * len(batches) + 1.5, 4.2), dpi=120, squeeze=False)
    for ax, batch in zip(axes[0], batches):
        rows = [r for r in report["results"] if r["batch"] == batch]
        ax.boxplot([r["samples_ms"] for r in rows], showmeans=True, whis=(1, 99), showfliers=False)
        for i, r in enumerate(rows, start=1):  # every sample, jittered sideways: few samples stay visible
            jitter = np.random.default_rng(i).uniform(-0.12, 0.12, len(r["samples_ms"]))
            ax.scatter(i + jitter, r["samples_ms"], s=6, alpha=0.4, color="tab:blue", zorder=3)
        ax.set_xticks(range(1, len(rows) + 1), [r["backend"] for r in rows], rotation=30, ha="right")
        ax.set_title(f"batch {batch}")
        ax.set_ylabel("latency per batch (ms)")
        ax.grid(True, axis="y", alpha=0.3)
    fig.suptitle(f"{report['variant']}: latency distribution (box: quartiles, whiskers: p1-p99, triangle: mean, dots: samples)")
    return save_figure(fig, plt, path, overwrite)


def save_figure(fig, plt, path: Path, overwrite: bool = False) -> Path:
    """Lay out, write `fig` as PNG atomically (refusing to overwrite unless asked) and close it."""
    fig.tight_layout()
    try:
        with atomic_path(Path(path), overwrite) as tmp:
            fig.savefig(tmp, format="png")
    finally:
        plt.close(fig)
    return Path(path)
