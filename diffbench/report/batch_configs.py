"""The batch_configs family's report (seed 002): does 10x batch with a scaled LR converge like the baseline?

Learning curves of every configuration overlaid, their final samples over the true GMM, and a table of final
values, convergence epochs and stability. Rows come from :mod:`diffbench.families.batch_configs`: each checkpoint
row has ``param.config`` and ``param.epoch``; timing rows (``epoch_seconds``) have a config and no epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from diffbench.metrics import registry
from diffbench.report import figures
from diffbench.report.sections import PARAM_PREFIX, FigureRef, Note, Section, Table, format_value, sort_key

if TYPE_CHECKING:
    from diffbench.data import GMMSpec

CONVERGENCE_METRICS = ("mmd_rbf", "wasserstein")
STABILITY_WINDOW = 5


def convergence_epoch(epochs: Sequence[float], values: Sequence[float], rel: float = 0.1) -> int | None:
    """First checkpoint epoch whose value is within ``rel`` of the final value.

    Checkpoints are taken in epoch order; the final value ``v_final`` is the value at the last epoch. The
    result is the smallest epoch ``e`` with ``|v_e - v_final| <= rel * |v_final|`` (it need not stay there
    afterwards). Non-finite values never qualify; ``None`` when there are no checkpoints or ``v_final`` is not
    finite. Example: epochs ``[1, 2, 3]``, values ``[10, 5.4, 5]`` -> ``2`` (``|5.4 - 5| = 0.4 <= 0.5``).
    """
    order = np.argsort(np.asarray(epochs, dtype=float), kind="stable")
    e = np.asarray(epochs, dtype=float)[order]
    v = np.asarray(values, dtype=float)[order]
    if len(v) == 0 or not math.isfinite(v[-1]):
        return None
    within = np.isfinite(v) & (np.abs(v - v[-1]) <= rel * abs(v[-1]))
    return int(e[np.argmax(within)])  # v[-1] itself always qualifies, so argmax finds a True


def coefficient_of_variation(values: Sequence[float]) -> float:
    """Coefficient of variation ``std / |mean|`` (population std, ``ddof = 0``): scale-free spread, so
    ``0`` is perfectly stable. NaN for an empty input, a non-finite value, or a zero mean.
    Example: ``[1, 3]`` -> ``1 / 2 = 0.5``."""
    v = np.asarray(values, dtype=float)
    if len(v) == 0 or not np.isfinite(v).all() or v.mean() == 0:
        return float("nan")
    return float(v.std() / abs(v.mean()))


def _with_labels(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``label`` (the config id; with rows from several runs the run id is appended, since the same config
    may appear in each) and make sure ``param.epoch`` exists (a timing-only report has none)."""
    labels = (df["param.config"] if "param.config" in df else df["cell"]).astype(str)
    if df["run_id"].nunique() > 1:
        labels = labels + " (" + df["run_id"].astype(str) + ")"
    df = df.assign(label=labels)
    return df if "param.epoch" in df else df.assign(**{"param.epoch": np.nan})


def _ordered_labels(df: pd.DataFrame) -> list[str]:
    """Labels ordered by batch size, then effective learning rate, then name (the baseline batch first)."""
    firsts = df.drop_duplicates("label")
    order = [c for c in ("param.batch_size", "param.effective_lr") if c in firsts] + ["label"]
    return list(firsts.sort_values(order, key=sort_key, kind="stable")["label"])


def _metric_series(group: pd.DataFrame, metric: str) -> pd.Series:
    """``metric`` of one config as a Series indexed by epoch (repeated seeds averaged), in epoch order."""
    rows = group[group["metric"] == metric]
    return rows.groupby("param.epoch")["value"].mean().sort_index()


def batch_config_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per batch configuration: its hyperparameters, the final-checkpoint value of every metric,
    ``converged_epoch_<m>`` (:func:`convergence_epoch`, rel 0.1) and ``cv_last5_<m>``
    (:func:`coefficient_of_variation` over the last 5 checkpoints) for ``m`` in mmd_rbf and wasserstein, and
    mean ``epoch_seconds`` / ``step_seconds`` when the timing pass recorded them.

    ``df`` is the family's rows as built by :func:`rows_to_frame` (with ``param.config`` and ``param.epoch``).
    """
    df = _with_labels(df)
    has_epoch = df["param.epoch"].notna()
    checkpoints = df[has_epoch & df["artifact"].isna()]
    timing = df[~has_epoch & df["metric"].map(_is_timing)]
    lines = []
    for label in _ordered_labels(df):
        group = checkpoints[checkpoints["label"] == label]
        first = df[df["label"] == label].iloc[0]
        line: dict[str, object] = {"config": label}
        for name in ("batch_size", "lr_rule", "lr", "effective_lr"):
            line[name] = first.get(PARAM_PREFIX + name)
        line["final_epoch"] = int(group["param.epoch"].max()) if len(group) else None
        for metric in CONVERGENCE_METRICS:
            series = _metric_series(group, metric)
            line[f"converged_epoch_{metric}"] = convergence_epoch(series.index, series.to_numpy())
            line[f"cv_last{STABILITY_WINDOW}_{metric}"] = coefficient_of_variation(series.iloc[-STABILITY_WINDOW:])
        for metric in sorted(timing["metric"].unique()):
            times = timing[(timing["label"] == label) & (timing["metric"] == metric)]["value"]
            if len(times):
                line[metric] = times.mean()
        for metric in _ordered_metrics(group["metric"].unique()):
            line[metric] = _metric_series(group, metric).iloc[-1]  # the value at the final checkpoint
        lines.append(line)
    return pd.DataFrame(lines)


def _ordered_metrics(metrics: Iterable[str]) -> list[str]:
    """Declared metrics in their declaration order (distances, losses, spread, modes), then others by name."""
    declared = list(registry.load_declarations())
    metrics = set(metrics)
    return [m for m in declared if m in metrics] + sorted(metrics - set(declared))


def _is_timing(metric: str) -> bool:
    declared = registry.find(metric)
    return declared is not None and declared.kind == registry.TIMING


def sections(df: pd.DataFrame, run_dir: Path) -> list[Section]:
    """Learning curves of the four configurations, their final samples over the true GMM, and the
    convergence table."""
    from diffbench.data import GMM  # imports torch: only when this family is reported

    df = _with_labels(df)
    labels = _ordered_labels(df)
    curves = df[df["param.epoch"].notna() & df["artifact"].isna()]
    curves = curves.rename(columns={"param.epoch": "epoch"})[["label", "epoch", "metric", "value"]]
    curves = curves.astype({"epoch": int})
    curves = curves.groupby(["label", "epoch", "metric"], as_index=False)["value"].mean()
    items: list[Note | Table | FigureRef] = []

    metrics = _ordered_metrics(curves["metric"].unique())
    if metrics:
        references = {"radius_mean": GMM.radius, "modes_covered": float(GMM.num_components)}
        log_scale = [
            m for m in metrics if registry.get(m).log_scale and (curves.loc[curves["metric"] == m, "value"] > 0).all()
        ]
        fig = figures.learning_curves(curves, metrics, labels, references, log_scale)
        wide = curves.pivot_table(index=["label", "epoch"], columns="metric", values="value", dropna=False)
        data = wide[metrics].reset_index().rename(columns={"label": "config"})
        path = figures.save_figure(fig, run_dir, "batch_configs_learning_curves", data)
        caption = (
            "Learning curves: each metric vs checkpoint epoch, configurations overlaid (dashed: the true GMM's value)."
        )
        if log_scale:
            caption += f" Log y axis: {', '.join(log_scale)}."
        items.append(FigureRef(path, caption))

    items += _gmm_scatter(df[df["metric"] == "samples"], labels, run_dir, GMM)

    table = batch_config_table(df)
    items.append(
        Table(
            f"Per configuration: final-checkpoint metric values; converged_epoch_* = first checkpoint within 10% of "
            f"the final value; cv_last{STABILITY_WINDOW}_* = std/|mean| over the last {STABILITY_WINDOW} checkpoints.",
            table,
            name="batch_configs_summary",
        )
    )
    return [Section("Large-batch convergence", items)]


def _gmm_scatter(samples_rows: pd.DataFrame, labels: list[str], run_dir: Path, gmm: GMMSpec) -> list[Note | FigureRef]:
    """The final checkpoint's samples of each config over 2,000 points of the true GMM (seed 0)."""
    import torch

    samples, titles, missing, records = {}, {}, [], []
    for label in labels:
        rows = samples_rows[(samples_rows["label"] == label) & samples_rows["artifact"].notna()]
        if rows.empty:
            continue
        final = rows.sort_values("param.epoch", na_position="first").iloc[-1]
        path = Path(run_dir) / str(final["artifact"])
        if not path.is_file():
            missing.append(f"{label}: {final['artifact']}")
            continue
        points = np.load(path).reshape(-1, 2)
        samples[label] = points
        epoch = final.get("param.epoch")
        titles[label] = f"{label}\nepoch {format_value(epoch)}, n={len(points)}"
        records.append(pd.DataFrame({"source": label, "epoch": epoch, "x": points[:, 0], "y": points[:, 1]}))
    items: list[Note | FigureRef] = []
    if missing:
        items.append(Note("Sample arrays not found (scatter skipped for these): " + "; ".join(missing)))
    if not samples:
        return items
    reference = gmm.sample(2000, torch.Generator().manual_seed(0))[0].numpy()
    means = gmm.means.numpy()
    # Same limits for every panel: the true data's extent, widened (to at most 3x the radius) for strays.
    coords = np.abs(np.concatenate(list(samples.values())))
    coords = coords[np.isfinite(coords)]
    spread = np.quantile(coords, 0.99) if len(coords) else 0.0
    lim = float(min(max(gmm.radius + 4 * gmm.std, spread), 3 * gmm.radius)) * 1.1
    for label, points in samples.items():
        outside = int((~(np.abs(points) <= lim)).any(axis=1).sum())  # non-finite points count as outside
        if outside:
            titles[label] += f", {outside} outside"
    fig = figures.scatter_over_reference(samples, reference, means, titles, lim)
    true = pd.DataFrame({"source": "true_gmm", "epoch": None, "x": reference[:, 0], "y": reference[:, 1]})
    path = figures.save_figure(fig, run_dir, "batch_configs_samples", pd.concat([true, *records]))
    return [
        *items,
        FigureRef(
            path,
            "Samples at each configuration's final checkpoint (colour) over the true "
            "GMM (grey; x = component means); same axes in every panel.",
        ),
    ]
