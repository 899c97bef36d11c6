"""Matplotlib figures for reports, built with the object API (``Figure``, no pyplot): no display, no global
backend switch, safe in xdist workers, CI and notebooks alike.

Every figure is saved with :func:`save_figure`, which also writes the table the plot was drawn from as
``figures/<name>.csv`` next to ``figures/<name>.png``, so a report never holds numbers only as pixels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator, NullLocator

from diffbench.io import atomic_path

FIGURES_DIR = "figures"
DPI = 110


def save_figure(fig: Figure, run_dir: Path, name: str, data: pd.DataFrame) -> str:
    """Write ``fig`` to ``run_dir/figures/<name>.png`` and ``data`` to ``figures/<name>.csv`` (each atomically, so
    a crash leaves no half-written file) and return the PNG path relative to ``run_dir`` (what the report links
    to)."""
    out_dir = Path(run_dir) / FIGURES_DIR
    with atomic_path(out_dir / f"{name}.png") as tmp:
        fig.savefig(tmp, dpi=DPI, format="png")
    with atomic_path(out_dir / f"{name}.csv") as tmp:
        data.to_csv(tmp, index=False)
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
    ncols: int | None = None,
) -> Figure:
    """Panels, one per label (``ncols`` per row, default all in one row): that label's 2-D samples ``[n, 2]``
    in colour over ``reference`` points ``[m, 2]`` (the true distribution) in grey, with optional ``centers``
    ``[k, 2]`` marked; every panel has the same limits ``[-lim, lim]`` (default: the largest |coordinate| of
    the reference, +10%)."""
    titles = titles or {}
    labels = list(samples)
    colors = label_colors(labels)
    if lim is None:
        lim = 1.1 * float(np.abs(reference).max())
    n = max(1, len(labels))
    cols = min(n, ncols or n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(3.6 * cols, 3.9 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    for ax in list(axes.flat)[n:]:
        ax.set_visible(False)
    for ax, label in zip(axes.flat, labels, strict=False):
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


def sequential_colors(values: Sequence[float], cmap: str = "viridis") -> dict[float, tuple[float, ...]]:
    """One colour per value along a sequential colormap, in sorted order (e.g. one per size factor, so the same
    size has the same colour in every figure); the colormap's pale end is left out to stay visible on white."""
    ordered = sorted(set(values))
    colors = matplotlib.colormaps[cmap]
    return {v: colors(0.85 * i / max(1, len(ordered) - 1)) for i, v in enumerate(ordered)}


def _shared_legend(fig: Figure, axes: Sequence, max_cols: int, loc: str = "outside upper center") -> None:
    """One figure legend (default: above) with each label once, in first-drawn order."""
    handles, names = [], []
    for ax in axes:
        for handle, name in zip(*ax.get_legend_handles_labels(), strict=True):
            if name not in names:
                handles.append(handle)
                names.append(name)
    if names:
        fig.legend(handles, names, loc=loc, ncols=max(1, min(len(names), max_cols)), frameon=False)


def spaced_ticks(values: Sequence[float], min_ratio: float = 1.4) -> list[float]:
    """Positive ``values`` thinned for a log axis so that neighbouring labels differ by at least ``min_ratio``
    (they would overlap otherwise); the smallest and the largest are always kept.
    Example: ``[0.1, 0.2, 0.3, 0.4, 0.5, 1]`` -> ``[0.1, 0.2, 0.3, 0.5, 1]``."""
    ordered = sorted(set(values))
    kept: list[float] = []
    for v in ordered:
        if not kept or v >= min_ratio * kept[-1]:
            kept.append(v)
    if ordered and kept[-1] != ordered[-1]:
        if len(kept) > 1:
            kept[-1] = ordered[-1]  # the largest (the teacher's size) replaces its too-close neighbour
        else:
            kept.append(ordered[-1])
    return kept


def line_panels(
    curves: pd.DataFrame,
    x: str,
    metrics: Sequence[str],
    labels: Sequence[str],
    styles: Mapping[str, Mapping[str, object]] | None = None,
    references: Mapping[str, float] | None = None,
    reference_label: str = "reference",
    log_x: bool = False,
    log_y: Sequence[str] = (),
    xticks: Sequence[float] | None = None,
    ncols: int = 3,
) -> Figure:
    """One subplot per metric, ``value`` vs column ``x``, one line per label (one shared legend).

    ``curves`` is long-form with columns ``label``, ``x``, ``metric``, ``value``. ``styles`` maps a label to
    ``Axes.plot`` keyword arguments (colour, line style, marker; default: :func:`label_colors`); ``references``
    maps a metric to a value drawn as a dashed grey line named ``reference_label``; metrics in ``log_y`` get a
    logarithmic y axis, ``log_x`` a logarithmic x axis for all; ``xticks`` are labelled with ``:g``.
    """
    styles = styles or {label: {"color": color} for label, color in label_colors(labels).items()}
    references = references or {}
    ncols = max(1, min(ncols, len(metrics)))
    nrows = max(1, math.ceil(len(metrics) / ncols))
    side_cols = math.ceil(len(labels) / 16) if ncols == 1 else 0  # legend columns right of a single column
    fig = Figure(
        figsize=(4.2 * ncols + 1.6 * side_cols + (1.2 if side_cols else 0), 3.1 * nrows + 0.9), layout="constrained"
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        rows = curves[curves["metric"] == metric]
        for label in labels:
            line = rows[rows["label"] == label].sort_values(x)
            if len(line):
                kwargs = {"marker": "o", "markersize": 3, "linewidth": 1.4, **styles.get(label, {})}
                ax.plot(line[x], line["value"], label=label, **kwargs)
        if metric in references:
            ax.axhline(references[metric], color="0.4", linestyle=":", linewidth=1.2, label=reference_label)
        ax.set_xscale("log" if log_x else "linear")
        if metric in log_y:
            ax.set_yscale("log")
        if xticks is not None:
            ticks = spaced_ticks(xticks) if log_x else list(xticks)
            ax.set_xticks(ticks, labels=[f"{v:g}" for v in ticks])
            ax.xaxis.set_minor_locator(NullLocator())
        ax.set_title(metric + (" (log)" if metric in log_y else ""), fontsize=10)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    if side_cols:  # a single column has no width for a legend above it: list the lines on the right
        _shared_legend(fig, list(axes.flat), max_cols=side_cols, loc="outside right upper")
    else:
        _shared_legend(fig, list(axes.flat), max_cols=max(4, 2 * ncols))
    return fig


def radar_panels(
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    spokes: Sequence[str],
    styles: Mapping[str, Mapping[str, object]] | None = None,
    ncols: int = 4,
) -> Figure:
    """Radar (polar) charts, one per panel title; a panel overlays its series, each ``label -> values`` with
    one value per spoke in ``[0, 1]`` (higher is better; NaN leaves a gap). Same radial scale in every panel.
    ``styles`` maps a series label to ``Axes.plot`` keyword arguments. A legend is drawn when some panel
    overlays several series."""
    titles = list(panels)
    labels = [label for series in panels.values() for label in series]
    styles = styles or {label: {"color": color} for label, color in label_colors(list(dict.fromkeys(labels))).items()}
    angles = np.linspace(0, 2 * np.pi, len(spokes), endpoint=False)
    closed = np.append(angles, angles[0])
    ncols = max(1, min(ncols, len(titles)))
    nrows = max(1, math.ceil(len(titles) / ncols))
    fig = Figure(figsize=(3.6 * ncols, 3.6 * nrows + 0.5), layout="constrained")
    axes = [fig.add_subplot(nrows, ncols, i + 1, projection="polar") for i in range(len(titles))]
    for ax, title in zip(axes, titles, strict=True):
        for label, values in panels[title].items():
            values = np.append(np.asarray(values, dtype=float), float(values[0]))
            style = {"linewidth": 1.5, **styles.get(label, {})}
            ax.plot(closed, values, label=label, **style)
            ax.fill(closed, np.nan_to_num(values), alpha=0.08, color=style.get("color"))
        ax.set_xticks(angles, labels=[s.replace("_", "\n") for s in spokes], fontsize=6)
        ax.set_ylim(0, 1)
        ax.set_yticks([0.25, 0.5, 0.75, 1.0], labels=["", "0.5", "", "1"], fontsize=6)
        ax.set_title(title, fontsize=9, pad=14)
    if any(len(series) > 1 for series in panels.values()):
        _shared_legend(fig, axes, max_cols=8)
    return fig


def trajectory_panels(
    trajectories: Mapping[str, np.ndarray],
    reference: np.ndarray | None = None,
    dims: int = 2,
    styles: Mapping[str, Mapping[str, object]] | None = None,
    reference_label: str = "reference",
    ncols: int = 4,
) -> Figure:
    """One panel per label: its trajectories ``[S + 1, n, >= dims]`` (step 0 = the initial noise; the first
    ``dims`` principal coordinates are drawn, 2 -> PC1 vs PC2, 3 -> an mplot3d view of PC1-PC3) in colour over
    ``reference`` ``[S + 1, n, >= dims]`` in grey, with each start (o) and end (*) marked. Every panel shares
    the same limits, so distances compare across panels."""
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    labels = list(trajectories)
    styles = styles or {label: {"color": color} for label, color in label_colors(labels).items()}
    drawn = [np.asarray(a, dtype=float)[..., :dims] for a in trajectories.values()]
    if reference is not None:
        drawn.append(np.asarray(reference, dtype=float)[..., :dims])
    points = np.concatenate([a.reshape(-1, dims) for a in drawn])
    points = points[np.isfinite(points).all(axis=1)]
    low, high = (points.min(0), points.max(0)) if len(points) else (np.full(dims, -1.0), np.full(dims, 1.0))
    pad = 0.05 * np.maximum(high - low, 1e-9)
    ncols = max(1, min(ncols, len(labels)))
    nrows = max(1, math.ceil(len(labels) / ncols))
    width = 3.5 if dims == 2 else 4.0  # mplot3d draws its axis labels outside the box the layout reserves
    fig = Figure(figsize=(width * ncols, 3.4 * nrows + 0.5), layout="constrained")
    projection = "3d" if dims == 3 else None
    axes = [fig.add_subplot(nrows, ncols, i + 1, projection=projection) for i in range(len(labels))]
    for ax, label in zip(axes, labels, strict=True):
        if reference is not None:
            _draw_paths(ax, np.asarray(reference, dtype=float)[..., :dims], {"color": "0.6"}, reference_label)
        _draw_paths(ax, np.asarray(trajectories[label], dtype=float)[..., :dims], styles.get(label, {}), "student")
        limits = (ax.set_xlim, ax.set_ylim, ax.set_zlim) if dims == 3 else (ax.set_xlim, ax.set_ylim)
        for d, set_lim in enumerate(limits):
            set_lim(low[d] - pad[d], high[d] + pad[d])
        ax.set_xlabel("PC1", fontsize=8)
        ax.set_ylabel("PC2", fontsize=8)
        if dims == 3:
            ax.set_zlabel("PC3", fontsize=8)
            ax.set_box_aspect(None, zoom=0.8)
        ax.tick_params(labelsize=6)
        ax.set_title(label, fontsize=9)
        ax.grid(alpha=0.3)
    _shared_legend(fig, axes[:1], max_cols=4)
    return fig


def _draw_paths(ax: Axes, paths: np.ndarray, style: Mapping[str, object], label: str) -> None:
    """Each of the ``n`` paths in ``paths`` ``[S + 1, n, d]`` as a line, its start as o and its end as *; one
    legend entry for the lines (``label``) and one each for start and end."""
    line = {"linewidth": 1.3, **style, "marker": None}  # a marker per step would hide the start and end marks
    for i in range(paths.shape[1]):
        coords = paths[:, i].T
        ax.plot(*coords, alpha=0.9, label=label if i == 0 else None, **line)
        marks = {"edgecolors": "black", "linewidths": 0.5, "zorder": 4}
        ax.scatter(*coords[:, :1], marker="o", s=22, color="white", label="start" if i == 0 else None, **marks)
        ax.scatter(
            *coords[:, -1:],
            marker="*",
            s=80,
            color=line.get("color", "C0"),
            **marks,
            label=f"end ({label})" if i == 0 else None,
        )


def tile_images(images: np.ndarray, pad: int = 1) -> np.ndarray:
    """Images ``[n, C, H, W]`` in ``[-1, 1]`` (C = 1 grey or 3 RGB) side by side as one picture in ``[0, 1]``:
    ``[H, n * (W + pad) - pad]`` for grey, ``[H, n * (W + pad) - pad, 3]`` for RGB; values outside the range are
    clipped, the padding is white."""
    images = np.asarray(images, dtype=float)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be [n, C, H, W] with C = 1 or 3, got shape {images.shape}")
    unit = np.clip((images + 1) / 2, 0, 1).transpose(0, 2, 3, 1)  # [n, H, W, C]
    n, h, w, c = unit.shape
    canvas = np.ones((h, n * (w + pad) - pad, c))
    for i, image in enumerate(unit):
        canvas[:, i * (w + pad) : i * (w + pad) + w] = image
    return canvas[..., 0] if c == 1 else canvas


def image_rows(images: Mapping[str, np.ndarray], max_images: int = 8) -> Figure:
    """One row per label: its first ``max_images`` images ``[B, C, H, W]`` in ``[-1, 1]`` (see
    :func:`tile_images`), the label on the left."""
    labels = list(images)
    width = max(min(len(np.asarray(a)), max_images) for a in images.values())
    fig = Figure(figsize=(1.0 * width + 1.4, 1.0 * len(labels) + 0.3), layout="constrained")
    axes = fig.subplots(len(labels), 1, squeeze=False)[:, 0]
    for ax, label in zip(axes, labels, strict=True):
        picture = tile_images(np.asarray(images[label])[:max_images])
        ax.imshow(picture, cmap="gray" if picture.ndim == 2 else None, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    return fig


# --- guidance: heatmaps, trajectories over a scale, divergence, error bars, trade-offs -------------------------


def _tick_label(value: object) -> str:
    return f"{value:g}" if isinstance(value, (int, float, np.integer, np.floating)) else str(value)


def _limits(arrays: Sequence[np.ndarray], dims: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Plot limits (5% padding) that hold every finite point of ``arrays`` ``[..., >= dims]``; ``[-1, 1]`` if none."""
    flat = [np.asarray(a, dtype=float)[..., :dims].reshape(-1, dims) for a in arrays]
    points = np.concatenate(flat) if flat else np.empty((0, dims))
    points = points[np.isfinite(points).all(axis=1)]
    if not len(points):
        return np.full(dims, -1.0), np.full(dims, 1.0)
    low, high = points.min(0), points.max(0)
    pad = 0.05 * np.maximum(high - low, 1e-9)
    return low - pad, high + pad


def _pc_axes(fig: Figure, titles: Sequence[str], ncols: int, arrays: Sequence[np.ndarray]) -> list[Axes]:
    """One PC1-vs-PC2 panel per title, ``ncols`` a row, all with the limits that hold ``arrays``."""
    ncols = max(1, min(ncols, len(titles)))
    nrows = max(1, math.ceil(len(titles) / ncols))
    low, high = _limits(arrays)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(len(titles))]
    for ax, title in zip(axes, titles, strict=True):
        ax.set_xlim(low[0], high[0])
        ax.set_ylim(low[1], high[1])
        ax.set_xlabel("PC1", fontsize=8)
        ax.set_ylabel("PC2", fontsize=8)
        ax.tick_params(labelsize=6)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
    return axes


def _panel_size(count: int, ncols: int, width: float = 3.5, height: float = 3.2) -> tuple[float, float]:
    ncols = max(1, min(ncols, count))
    return width * ncols + 0.6, height * max(1, math.ceil(count / ncols)) + 0.5


def heatmap_panels(
    tables: Mapping[str, pd.DataFrame],
    cmaps: Mapping[str, str] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    fmt: str = "{:.3g}",
    ncols: int = 2,
) -> Figure:
    """One annotated heatmap per title. ``tables[title]`` is wide: its index labels the rows (top to bottom), its
    columns the columns (left to right; numbers written with ``:g``). Each panel has its own colour scale (colour bar
    beside it) and every finite value written in its cell with ``fmt``; NaN cells stay blank. ``cmaps`` maps a
    title to a colormap name (default ``viridis``; a ``*_r`` map for a lower-is-better metric keeps bright = good).
    """
    cmaps = cmaps or {}
    titles = list(tables)
    ncols = max(1, min(ncols, len(titles)))
    nrows = max(1, math.ceil(len(titles) / ncols))
    n_rows, n_cols = max(((t.shape[0], t.shape[1]) for t in tables.values()), default=(1, 1))
    fig = Figure(
        figsize=((2.2 + 0.7 * max(1, n_cols)) * ncols, (1.0 + 0.36 * max(1, n_rows)) * nrows + 0.2),
        layout="constrained",
    )
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, title in zip(axes.flat, titles, strict=False):
        table = tables[title]
        values = table.to_numpy(dtype=float)
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
        cmap = matplotlib.colormaps[cmaps.get(title, "viridis")]
        image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, vmin=low, vmax=high, aspect="auto")
        for (i, j), value in np.ndenumerate(values):
            if np.isfinite(value):
                red, green, blue, _ = cmap((value - low) / (high - low) if high > low else 0.5)
                dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # white text on a dark cell
                ax.text(j, i, fmt.format(value), ha="center", va="center", fontsize=7, color="white" if dark else "k")
        ax.set_xticks(range(values.shape[1]), labels=[_tick_label(c) for c in table.columns], fontsize=7)
        ax.set_yticks(range(values.shape[0]), labels=[_tick_label(r) for r in table.index], fontsize=7)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(title, fontsize=9)
        fig.colorbar(image, ax=ax, shrink=0.9).ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(titles) :]:
        ax.set_visible(False)
    return fig


def gradient_trajectory_panels(
    panels: Mapping[str, Mapping[float, np.ndarray]],
    value_label: str = "w",
    cmap: str = "plasma",
    ncols: int = 4,
) -> Figure:
    """One panel per title overlaying, for each value of a parameter (e.g. the guidance scale), trajectories
    ``[S + 1, n, >= 2]`` as PC1 vs PC2 (step 0 = the initial noise), coloured by that value along ``cmap`` (one
    colour bar, named ``value_label``); each start (o) and end (*) marked. Every panel shares the same limits."""
    titles = list(panels)
    values = sorted({float(v) for series in panels.values() for v in series})
    norm = matplotlib.colors.Normalize(min(values, default=0.0), max(values, default=1.0))
    # The colormap's pale end is left out so every line stays visible on white.
    colors = matplotlib.colors.ListedColormap(matplotlib.colormaps[cmap](np.linspace(0, 0.9, 256)))
    fig = Figure(figsize=_panel_size(len(titles), ncols, width=3.6), layout="constrained")
    axes = _pc_axes(fig, titles, ncols, [a for series in panels.values() for a in series.values()])
    for ax, title in zip(axes, titles, strict=True):
        for value, paths in sorted(panels[title].items()):
            _draw_paths(ax, np.asarray(paths, dtype=float)[..., :2], {"color": colors(norm(value))}, _tick_label(value))
    if axes:
        fig.colorbar(matplotlib.cm.ScalarMappable(norm, colors), ax=axes, label=value_label, shrink=0.8)
    return fig


def paired_trajectory_panels(
    pairs: Mapping[str, tuple[np.ndarray, np.ndarray]],
    names: tuple[str, str] = ("guided", "unguided"),
    ncols: int = 4,
) -> Figure:
    """One panel per title: two sets of trajectories ``[S + 1, n, >= 2]`` from the same starts, as PC1 vs PC2 —
    the first set solid, the second dashed (both named in the legend), sample ``i`` in colour ``Ci`` in both; the
    start (o) and each end (*) marked. Every panel shares the same limits."""
    titles, linestyles = list(pairs), ("-", "--")
    fig = Figure(figsize=_panel_size(len(titles), ncols), layout="constrained")
    axes = _pc_axes(fig, titles, ncols, [a for pair in pairs.values() for a in pair])
    for ax, title in zip(axes, titles, strict=True):
        for paths, linestyle in zip(pairs[title], linestyles, strict=True):
            paths = np.asarray(paths, dtype=float)
            for i in range(paths.shape[1]):
                x, y = paths[:, i, 0], paths[:, i, 1]
                ax.plot(x, y, color=f"C{i}", linestyle=linestyle, linewidth=1.3, alpha=0.9)
                ax.scatter(x[-1:], y[-1:], marker="*", s=60, color=f"C{i}", edgecolors="black", linewidths=0.4)
                ax.scatter(x[:1], y[:1], marker="o", s=18, color="white", edgecolors="black", linewidths=0.5)
    handles = [Line2D([], [], color="0.3", linestyle=s, label=name) for name, s in zip(names, linestyles, strict=True)]
    if axes:
        fig.legend(handles=handles, loc="outside upper center", ncols=2, frameon=False)
    return fig


def divergence_panels(pairs: Mapping[str, tuple[np.ndarray, np.ndarray]], ncols: int = 4) -> Figure:
    """One panel per title: for trajectories ``(moved, base)``, each ``[S + 1, n, >= 2]`` from the same starts, an
    arrow at every step from the base position to the moved one (PC1 vs PC2, in data units), sample ``i`` in colour
    ``Ci``; the base paths are drawn thin grey for orientation. Every panel shares the same limits."""
    titles = list(pairs)
    fig = Figure(figsize=_panel_size(len(titles), ncols), layout="constrained")
    axes = _pc_axes(fig, titles, ncols, [a for pair in pairs.values() for a in pair])
    for ax, title in zip(axes, titles, strict=True):
        moved, base = (np.asarray(a, dtype=float)[..., :2] for a in pairs[title])
        delta = moved - base
        for i in range(base.shape[1]):
            ax.plot(base[:, i, 0], base[:, i, 1], color="0.7", linewidth=0.8)
            ax.quiver(
                base[:, i, 0],
                base[:, i, 1],
                delta[:, i, 0],
                delta[:, i, 1],
                color=f"C{i}",
                angles="xy",
                scale_units="xy",
                scale=1,
                width=0.006,
            )
    return fig


def add_error_bars(
    fig: Figure,
    curves: pd.DataFrame,
    x: str,
    metrics: Sequence[str],
    labels: Sequence[str],
    styles: Mapping[str, Mapping[str, object]] | None = None,
) -> None:
    """Draw the intervals of ``curves`` (long: ``label``, ``x``, ``metric``, ``value``, ``low``, ``high``) as error
    bars onto a :func:`line_panels` figure drawn with the same ``metrics`` and ``labels`` (its axes are in metric
    order, its colours from ``styles``); points without both ends of an interval get none."""
    styles = styles or {label: {"color": color} for label, color in label_colors(labels).items()}
    for ax, metric in zip(fig.axes, metrics, strict=False):
        rows = curves[(curves["metric"] == metric) & curves["low"].notna() & curves["high"].notna()]
        for label in labels:
            points = rows[rows["label"] == label]
            if len(points):
                below = (points["value"] - points["low"]).clip(lower=0)
                above = (points["high"] - points["value"]).clip(lower=0)
                color = styles.get(label, {}).get("color")
                ax.errorbar(points[x], points["value"], yerr=[below, above], fmt="none", ecolor=color, capsize=2)


def tradeoff_panels(
    points: pd.DataFrame,
    pairs: Sequence[tuple[str, str]],
    labels: Sequence[str],
    annotate: str,
    styles: Mapping[str, Mapping[str, object]] | None = None,
) -> Figure:
    """One panel per ``(x, y)`` pair of columns of ``points`` (wide: ``label``, ``annotate`` and the metric
    columns): each label's points joined in ``annotate`` order, every point written with its ``annotate`` value
    (``:g``), one shared legend. E.g. accuracy vs diversity, one line per guidance method, points named by scale."""
    styles = styles or {label: {"color": color} for label, color in label_colors(labels).items()}
    fig = Figure(figsize=(4.4 * max(1, len(pairs)), 3.8), layout="constrained")
    axes = fig.subplots(1, max(1, len(pairs)), squeeze=False)[0]
    for ax, (x, y) in zip(axes, pairs, strict=False):
        for label in labels:
            line = points[points["label"] == label].dropna(subset=[x, y]).sort_values(annotate)
            if not len(line):
                continue
            style = {"marker": "o", "markersize": 4, "linewidth": 1.4, **styles.get(label, {})}
            ax.plot(line[x], line[y], label=label, **style)
            for px, py, text in zip(line[x], line[y], line[annotate], strict=True):
                ax.annotate(_tick_label(text), (px, py), xytext=(3, 3), textcoords="offset points", fontsize=7)
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.grid(alpha=0.3)
    _shared_legend(fig, list(axes), max_cols=len(labels))
    return fig


# --- samplers: Pareto fronts, 2-D point sets ------------------------------------------------------------------


def pareto_panels(
    points: pd.DataFrame,
    x: str,
    metrics: Sequence[str],
    labels: Sequence[str],
    styles: Mapping[str, Mapping[str, object]] | None = None,
    annotate: str | None = None,
    log_x: bool = True,
    log_y: Sequence[str] = (),
    ncols: int = 3,
) -> Figure:
    """One panel per metric: ``value`` vs column ``x`` as points, one colour and marker per label (``styles``: its
    ``color`` and ``marker``), each label's points joined thinly in ``x`` order; the points whose ``front`` column
    is true are ringed in black and joined by a black step line, the Pareto front (one shared legend).

    ``points`` is long-form with columns ``label``, ``x``, ``metric``, ``value``, ``front`` (bool) and, when given,
    ``annotate`` (each point written with it, ``:g``). ``log_x``: logarithmic x axis (values must be positive);
    metrics in ``log_y`` get a logarithmic y axis."""
    styles = styles or {label: {"color": color} for label, color in label_colors(labels).items()}
    ncols = max(1, min(ncols, len(metrics)))
    nrows = max(1, math.ceil(len(metrics) / ncols))
    fig = Figure(figsize=(4.4 * ncols, 3.4 * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, metric in zip(axes.flat, metrics, strict=False):
        rows = points[(points["metric"] == metric) & points[x].notna() & points["value"].notna()]
        for label in labels:
            line = rows[rows["label"] == label].sort_values(x)
            if not len(line):
                continue
            style = styles.get(label, {})
            color, marker = style.get("color"), style.get("marker", "o")
            ax.plot(line[x], line["value"], color=color, linewidth=0.8, alpha=0.5, linestyle=style.get("linestyle"))
            ax.scatter(line[x], line["value"], color=color, marker=marker, s=28, label=label, zorder=3)
            if annotate is not None:
                for px, py, text in zip(line[x], line["value"], line[annotate], strict=True):
                    ax.annotate(_tick_label(text), (px, py), xytext=(3, 3), textcoords="offset points", fontsize=6)
        front = rows[rows["front"].astype(bool)].sort_values(x)
        if len(front):
            ax.scatter(
                front[x],
                front["value"],
                s=90,
                facecolors="none",
                edgecolors="black",
                linewidths=1.2,
                zorder=4,
                label="Pareto front",
            )
            ax.step(front[x], front["value"], where="post", color="black", linewidth=1.0, linestyle="--", zorder=2)
        ax.set_xscale("log" if log_x else "linear")
        if metric in log_y:
            ax.set_yscale("log")
        ax.set_title(metric + (" (log)" if metric in log_y else ""), fontsize=10)
        ax.set_xlabel(x)
        ax.grid(alpha=0.3, which="both")
    for ax in list(axes.flat)[len(metrics) :]:
        ax.set_visible(False)
    _shared_legend(fig, list(axes.flat), max_cols=min(8, max(4, len(labels) + 1)))
    return fig


def point_panels(
    samples: Mapping[str, np.ndarray],
    ncols: int = 5,
    colors: Mapping[str, object] | None = None,
    lim: float | None = None,
) -> Figure:
    """Small multiples of 2-D point sets: one panel per title, its points ``[n, >= 2]`` (first two coordinates)
    scattered with equal aspect; every panel has the same limits ``[-lim, lim]``, so spreads compare across panels.
    The default ``lim`` is 1.15 x the largest 99th percentile of |coordinate| over the sets, but at most 3 x their
    median, so one diverging set does not shrink the others; a panel with points outside the limits says how many
    in its title. ``colors`` maps a title to its colour."""
    titles = list(samples)
    colors = colors or {}
    arrays = [np.asarray(samples[t], dtype=float)[:, :2] for t in titles]
    finite = [a[np.isfinite(a).all(axis=1)] for a in arrays]
    if lim is None:
        spreads = [float(np.percentile(np.abs(a), 99)) for a in finite if len(a)]
        lim = 1.15 * min(max(spreads), 3 * float(np.median(spreads))) if spreads else 1.0
        lim = lim if lim > 0 else 1.0
    ncols = max(1, min(ncols, len(titles)))
    nrows = max(1, math.ceil(len(titles) / ncols))
    fig = Figure(figsize=(2.6 * ncols, 2.7 * nrows + 0.2), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for ax, title, points in zip(axes.flat, titles, finite, strict=False):
        ax.scatter(points[:, 0], points[:, 1], s=2, alpha=0.5, color=colors.get(title, "C0"), rasterized=True)
        outside = int((np.abs(points) > lim).any(axis=1).sum())
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=6)
        ax.set_title(title + (f" ({outside} outside)" if outside else ""), fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(titles) :]:
        ax.set_visible(False)
    return fig


# --- snr_paths: grouped bars, heatmaps on a log-spaced grid with paths -----------------------------------------


def grouped_bars(
    table: pd.DataFrame,
    ylabel: str = "",
    colors: Mapping[str, object] | None = None,
    fmt: str = "{:.3g}",
) -> Figure:
    """A grouped bar chart of a wide ``table``: one group per index label (left to right), one bar per column
    inside every group (one shared legend, ``colors`` maps a column name to its colour), each bar written with its
    value (``fmt``); a NaN leaves a gap."""
    groups, series = list(table.index), [str(c) for c in table.columns]
    colors = colors or label_colors(series)
    values = table.to_numpy(dtype=float)
    width = 0.8 / max(1, len(series))
    fig = Figure(figsize=(max(4.5, 0.45 * len(groups) * max(1, len(series)) + 2.0), 3.8), layout="constrained")
    ax = fig.add_subplot()
    x = np.arange(len(groups))
    for k, name in enumerate(series):
        column = values[:, k]
        drawn = np.isfinite(column)
        offset = (k - (len(series) - 1) / 2) * width
        bars = ax.bar(x[drawn] + offset, column[drawn], width, label=name, color=colors.get(name))
        ax.bar_label(bars, labels=[fmt.format(v) for v in column[drawn]], fontsize=6, padding=1)
    ax.set_xticks(x, labels=[_tick_label(g) for g in groups], fontsize=8)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    _shared_legend(fig, [ax], max_cols=max(1, len(series)))
    return fig


def _log_edges(centers: np.ndarray) -> np.ndarray:
    """Cell edges around positive, increasing ``centers`` at their geometric midpoints (half a step beyond the
    ends), so a cell is centred on its grid point on a log axis."""
    logs = np.log(centers)
    step = np.diff(logs) if len(logs) > 1 else np.array([1.0])
    inner = (logs[:-1] + logs[1:]) / 2
    return np.exp(np.concatenate([[logs[0] - step[0] / 2], inner, [logs[-1] + step[-1] / 2]]))


def log_grid_heatmaps(
    panels: Mapping[str, np.ndarray],
    x: Sequence[float],
    y: Sequence[float],
    paths: Mapping[str, tuple[Sequence[float], Sequence[float]]] | None = None,
    styles: Mapping[str, Mapping[str, object]] | None = None,
    xlabel: str = "",
    ylabel: str = "",
    cmap: str = "magma",
    ncols: int = 3,
) -> Figure:
    """One heatmap per title over a grid of positive, increasing ``x`` (columns) and ``y`` (rows): ``panels[title]``
    is ``[len(y), len(x)]`` (row i at ``y[i]``, column j at ``x[j]``), drawn on log axes with every cell centred on
    its grid point and a logarithmic colour scale (``LogNorm``; a colour bar per panel); non-positive or
    non-finite cells stay blank. The axes are labelled with the grid values (``.3g``, thinned where they would
    overlap). ``paths`` maps a label to ``(x values, y values)``, drawn on every panel with ``styles[label]``
    (``Axes.plot`` keyword arguments); one shared legend."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    for name, grid in (("x", x), ("y", y)):
        if len(grid) == 0 or (grid <= 0).any() or (np.diff(grid) <= 0).any():
            raise ValueError(f"{name} must be positive and increasing, got {grid.tolist()}")
    paths, styles = paths or {}, styles or {}
    titles = list(panels)
    ncols = max(1, min(ncols, len(titles)))
    nrows = max(1, math.ceil(len(titles) / ncols))
    fig = Figure(figsize=(4.3 * ncols, 3.9 * nrows + 0.5), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False)
    x_edges, y_edges = _log_edges(x), _log_edges(y)
    for ax, title in zip(axes.flat, titles, strict=False):
        values = np.asarray(panels[title], dtype=float)
        if values.shape != (len(y), len(x)):
            raise ValueError(f"panel {title!r} must be [{len(y)}, {len(x)}], got {list(values.shape)}")
        shown = np.ma.masked_where(~(np.isfinite(values) & (values > 0)), values)
        positive = shown.compressed()
        low, high = (float(positive.min()), float(positive.max())) if len(positive) else (1.0, 10.0)
        if high <= low:
            low, high = low / 1.5, high * 1.5
        mesh = ax.pcolormesh(x_edges, y_edges, shown, cmap=cmap, norm=matplotlib.colors.LogNorm(low, high))
        for label, (px, py) in paths.items():
            ax.plot(px, py, label=label, **{"linewidth": 1.6, "markersize": 3, **styles.get(label, {})})
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlim(x_edges[0], x_edges[-1])
        ax.set_ylim(y_edges[0], y_edges[-1])
        xticks, yticks = spaced_ticks(list(x)), spaced_ticks(list(y))
        ax.set_xticks(xticks, labels=[f"{v:.3g}" for v in xticks], fontsize=6, rotation=90)
        ax.set_yticks(yticks, labels=[f"{v:.3g}" for v in yticks], fontsize=6)
        ax.xaxis.set_minor_locator(NullLocator())
        ax.yaxis.set_minor_locator(NullLocator())
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.set_title(title, fontsize=9)
        fig.colorbar(mesh, ax=ax, shrink=0.9).ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(titles) :]:
        ax.set_visible(False)
    _shared_legend(fig, list(axes.flat)[:1], max_cols=max(1, len(paths)))
    return fig


# --- size_factors: attention-map grids, joint embeddings -------------------------------------------------------


def map_grid(
    maps: Mapping[str, Sequence[np.ndarray]],
    columns: Sequence[str],
    mark: tuple[float, float] | None = None,
) -> Figure:
    """A grid of 2-D maps: one row per label (``maps[label][j]`` ``[H, W]`` in column ``j``), column titles
    ``columns``; each panel has its own colour scale (attention rows are distributions whose peaks differ by orders
    of magnitude across layers and times). ``mark = (row, column)`` as fractions of the map draws a red ``x`` on the
    cell holding that position in every panel (the query a map belongs to), at each map's own resolution."""
    labels = list(maps)
    ncols = max(1, len(columns))
    fig = Figure(figsize=(1.6 * ncols + 1.4, 1.5 * max(1, len(labels)) + 0.4), layout="constrained")
    axes = fig.subplots(max(1, len(labels)), ncols, squeeze=False)
    for i, label in enumerate(labels):
        for j in range(ncols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < len(maps[label]) and maps[label][j] is not None:
                image = np.asarray(maps[label][j], dtype=float)
                ax.imshow(image, cmap="viridis", interpolation="nearest")
                if mark is not None:
                    h, w = image.shape
                    ax.plot(math.floor(mark[1] * w), math.floor(mark[0] * h), "rx", markersize=6, mew=1.5)
            if i == 0:
                ax.set_title(columns[j], fontsize=9)
            if j == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    return fig


def embedding_panels(
    points: pd.DataFrame,
    colour_by: Sequence[str],
    colors: Mapping[str, Mapping[object, object]] | None = None,
    markers: Mapping[object, str] | None = None,
) -> Figure:
    """Scatter panels of one 2-D embedding (columns ``x``, ``y``), the same points in every panel, coloured by
    one column each. A column with ``colors[column]`` (value -> colour) is categorical, with a legend in that
    order; one without is numeric (``viridis`` with a colour bar, e.g. the sampling step). ``markers`` maps a
    value of the first column to its marker (e.g. one per training mode)."""
    colors, markers = colors or {}, markers or {}
    fig = Figure(figsize=(4.6 * len(colour_by) + 1.0, 4.2), layout="constrained")
    axes = fig.subplots(1, len(colour_by), squeeze=False)[0]
    for ax, column in zip(axes, colour_by, strict=True):
        if column in colors:
            for value, colour in colors[column].items():
                chosen = points[points[column] == value]
                if len(chosen):
                    marker = markers.get(value, "o") if column == colour_by[0] else "o"
                    ax.scatter(chosen["x"], chosen["y"], s=9, alpha=0.7, color=colour, marker=marker, label=str(value))
            ax.legend(fontsize=6, markerscale=1.5, loc="best", ncols=1 + len(colors[column]) // 12, frameon=False)
        else:
            drawn = ax.scatter(points["x"], points["y"], s=7, alpha=0.7, c=points[column], cmap="viridis")
            fig.colorbar(drawn, ax=ax, shrink=0.85, label=column)
        ax.set_title(f"coloured by {column}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    return fig
