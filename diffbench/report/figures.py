"""Matplotlib figures for reports, built with the object API (``Figure``, no pyplot): no display, no global
backend switch, safe in xdist workers, CI and notebooks alike.

Every figure is saved with :func:`save_figure`, which also writes the table the plot was drawn from as
``figures/<name>.csv`` next to ``figures/<name>.png``, so a report never holds numbers only as pixels.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

FIGURES_DIR = "figures"
DPI = 110


def save_figure(fig: Figure, run_dir: Path, name: str, data: pd.DataFrame) -> str:
    """Write ``fig`` to ``run_dir/figures/<name>.png`` and ``data`` to ``figures/<name>.csv`` (each written to a
    temporary file and renamed, so a crash leaves no half-written file) and return the PNG
    path relative to ``run_dir`` (what the report links to)."""
    out_dir = Path(run_dir) / FIGURES_DIR
    out_dir.mkdir(parents=True, exist_ok=True)
    png, csv = out_dir / f"{name}.png", out_dir / f"{name}.csv"
    tmp = png.with_name(f".{png.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, dpi=DPI, format="png")
    os.replace(tmp, png)
    tmp = csv.with_name(f".{csv.name}.{os.getpid()}.tmp")
    data.to_csv(tmp, index=False)
    os.replace(tmp, csv)
    return f"{FIGURES_DIR}/{name}.png"


def label_colors(labels: Sequence[str]) -> dict[str, tuple[float, ...]]:
    """One colour per label, in order, so the same configuration has the same colour in every figure."""
    cmap = matplotlib.colormaps["tab10"]
    return {label: cmap(i % cmap.N) for i, label in enumerate(labels)}


def learning_curves(
    curves: pd.DataFrame,
    metrics: Sequence[str],
    labels: Sequence[str],
    references: Mapping[str, float] | None = None,
    log_scale: Sequence[str] = (),
    ncols: int = 4,
) -> Figure:
    """One subplot per metric, value vs epoch, one line per label (all labels overlaid, one shared legend).

    ``curves`` is long-form with columns ``label``, ``epoch``, ``metric``, ``value``. ``references`` maps a
    metric to the true data's value (e.g. the GMM radius), drawn as a dashed grey line; metrics in ``log_scale``
    get a logarithmic y axis (their values must be positive).
    """
    references = references or {}
    colors = label_colors(labels)
    ncols = max(1, min(ncols, len(metrics)))
    nrows = math.ceil(len(metrics) / ncols)
    fig = Figure(figsize=(4.0 * ncols, 3.0 * nrows + 0.6), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, sharex=True)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        rows = curves[curves["metric"] == metric]
        for label in labels:
            line = rows[rows["label"] == label].sort_values("epoch")
            if len(line):
                ax.plot(
                    line["epoch"],
                    line["value"],
                    marker="o",
                    markersize=3,
                    linewidth=1.4,
                    color=colors[label],
                    label=label,
                )
        if metric in references:
            ax.axhline(references[metric], color="0.5", linestyle="--", linewidth=1, label="true data")
        if metric in log_scale:
            ax.set_yscale("log")
        ax.set_title(metric + (" (log)" if metric in log_scale else ""))
        ax.grid(alpha=0.3, which="both")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    handles, names = [], []
    for ax in axes.flat:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            if name not in names:
                handles.append(handle)
                names.append(name)
    # At most two legend entries per subplot column in a row, so a narrow figure wraps instead of clipping.
    fig.legend(handles, names, loc="outside upper center", ncols=max(1, min(len(names), 2 * ncols)), frameon=False)
    return fig


def scatter_over_reference(
    samples: Mapping[str, np.ndarray],
    reference: np.ndarray,
    centers: np.ndarray | None = None,
    titles: Mapping[str, str] | None = None,
    lim: float | None = None,
) -> Figure:
    """Side-by-side panels, one per label: that label's 2-D samples ``[n, 2]`` in colour over ``reference``
    points ``[m, 2]`` (the true distribution) in grey, with optional ``centers`` ``[k, 2]`` marked; every
    panel has the same limits ``[-lim, lim]`` (default: the largest |coordinate| of the reference, +10%)."""
    titles = titles or {}
    labels = list(samples)
    colors = label_colors(labels)
    if lim is None:
        lim = 1.1 * float(np.abs(reference).max())
    n = max(1, len(labels))
    fig = Figure(figsize=(3.6 * n, 3.9), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)
    for ax, label in zip(axes[0], labels, strict=False):
        points = np.asarray(samples[label])
        ax.scatter(reference[:, 0], reference[:, 1], s=2, color="0.75", label="true data", rasterized=True)
        ax.scatter(points[:, 0], points[:, 1], s=3, alpha=0.6, color=colors[label], label="samples", rasterized=True)
        if centers is not None:
            ax.scatter(centers[:, 0], centers[:, 1], marker="x", s=30, color="black", label="true means")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_title(titles.get(label, label), fontsize=9)
        ax.grid(alpha=0.3)
    legend = axes[0][0].legend(loc="lower left", fontsize=7)
    for handle in legend.legend_handles:
        handle.set_sizes([20])  # the legend's markers readable whatever the plotted sizes
    return fig
