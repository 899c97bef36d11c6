"""The snr_paths family's report (seed 003): a dual-scale ("lift") model, its discretization-error heatmap over the
two scales' SNRs, DP paths through it and the quality of sampling along them, then the same error estimator turned
on a single-scale teacher to build DP-optimal timestep schedules.

Rows come from :mod:`diffbench.families.snr_paths` (only the rows are read here):

- MSE tests (t = 500, held-out images): ``eps_mse`` with ``model`` (``lift``, ``baseline``), ``test``
  (``both_noisy``, ``clean_small``, ``clean_large``, ``single_scale``), ``scale`` (``large``, ``small``,
  ``total``) and ``t``.
- The heatmap: an ``error_heatmap`` array ``[3, M, M]`` (index 0 the large-scale error, 1 the small-scale error,
  2 their sum; row i the i-th γ0 = SNR of the large scale, column j the j-th γ1 = SNR of the small scale, both on
  ``np.geomspace(snr_min, snr_max, M)``) per ``convention``, the chain-rule factor from x_t to z space: ``seed``
  = 1/(γ(1+γ)) as seed 003 writes it, ``derived`` = 1/(1+γ), which follows from x_t = z / sqrt(1+γ) for
  z = sqrt(γ) x0 + ε.
- Paths through it: ``snr_path`` rows (value γ1 at the point, params ``convention``, ``path`` (``diagonal``,
  ``dp_total``, ``dp_large``), ``snr_large`` = γ0 and ``i``), and ``path_error`` rows (the path's cumulative
  error, ``error`` = ``total`` or ``large``).
- Generation along a path: ``fid`` with ``fid_ci_low`` / ``fid_ci_high`` (its interval at this n), FID-infinity,
  ``kid``, ``kid_std``, ``params`` (the parameter count) and a ``samples`` array ``[G, C, H, W]`` in ``[-1, 1]``, per
  ``model`` and ``path`` (``single_scale`` for the baseline) and ``convention`` (DP paths only); a LIFT path adds
  ``fid_delta`` with its paired interval (``reference`` = ``baseline``: FID(path) - FID(baseline), both sampled
  from the same noise).
- The teacher: ``error_density`` per ``convention`` and timestep ``t`` (with its ``snr``); per schedule
  ``spacing`` (``uniform``, ``quadratic``, ``snr``, ``dp``, ``dp_seed``) and ``steps``: quality metrics,
  ``schedule_cost`` (the DP objective, derived factor, on that grid), ``network_evaluations``, the grid as
  ``schedule_timestep`` rows (one per step index ``k``) and a ``samples`` array (sample i of class i mod 10).
- Timing (may be absent, a serial pass): ``vhv_seconds`` per ``method`` (``vmap``, ``loop``), ``probes`` and
  ``n``; ``vhv_speedup`` (loop / vmap) per ``probes`` and ``n``.

The functions that shape rows and write verdicts are pure; :func:`sections` loads the arrays and saves the figures,
per run when the rows hold several, each part replaced by a note saying what is missing when its rows are absent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from diffbench.report import figures
from diffbench.report.parts import (
    DELTA_CAPTION,
    DELTA_HIGHER,
    DELTA_LOWER,
    DELTA_NOT_MEASURED,
    DELTA_TIED,
    FID_CAPTION,
    FID_DELTA_METRICS,
    FID_INFINITY_INTERVAL,
    FID_INFINITY_METRICS,
    FID_INTERVAL,
    FID_KID_METRICS,
    MEASURED_WITH,
    NUM_CLASSES,
    Out,
    image_index,
    intervals_overlap,
    is_image_batch,
    latest_artifacts,
    load_array,
    numeric_param,
    paired_delta,
    param,
    per_run_sections,
    quality_curves,
    quality_figure,
    wide_metrics,
    with_fid_interval,
)
from diffbench.report.sections import FigureRef, Note, Section, Table, format_value

LIFT, BASELINE, TEACHER = "lift", "baseline", "teacher"
SEED, DERIVED = "seed", "derived"
CONVENTION_ORDER = (SEED, DERIVED)  # other conventions follow by name
CONVENTION_WORDS = {
    SEED: "seed 003's chain-rule factor 1/(γ(1+γ)) (from its x_t = z / sqrt(γ(1+γ)))",
    DERIVED: "the derived chain-rule factor 1/(1+γ) (x_t = z / sqrt(1+γ) for z = sqrt(γ) x0 + ε)",
}

MSE_METRIC = "eps_mse"
SINGLE_SCALE = "single_scale"
TEST_ORDER = ("both_noisy", "clean_small", "clean_large", SINGLE_SCALE)  # other tests follow by name
TEST_DESCRIPTIONS = {
    "both_noisy": "Both scales noisy (t=500)",
    "clean_small": "Clean small + noisy large",
    "clean_large": "Clean large + noisy small",
    SINGLE_SCALE: "Single-scale baseline, noisy (t=500)",
}
SCALES = ("large", "small", "total")

HEATMAP_METRIC, PATH_METRIC, PATH_ERROR_METRIC = "error_heatmap", "snr_path", "path_error"
HEATMAP_TITLES = ("large-scale error", "small-scale error", "total error (large + small)")  # the array's index 0-2
DIAGONAL, DP_TOTAL, DP_LARGE = "diagonal", "dp_total", "dp_large"
PATH_ORDER = (DIAGONAL, DP_TOTAL, DP_LARGE)  # other paths follow by name
PATH_DESCRIPTIONS = {
    SINGLE_SCALE: "Single-scale baseline (same parameters)",
    DP_LARGE: "LIFT, DP on large-scale error only",
    DP_TOTAL: "LIFT, DP on total error (large + small)",
    DIAGONAL: "LIFT, diagonal (γ1 = γ0)",
}
PATH_STYLES = {  # drawn over a dark-to-bright colour map
    DIAGONAL: {"color": "lime", "linestyle": "--", "marker": None},
    DP_TOTAL: {"color": "tab:red", "linestyle": "-", "marker": "o"},
    DP_LARGE: {"color": "tab:cyan", "linestyle": ":", "marker": "s", "linewidth": 2.0},
}
ERRORS = ("total", "large")  # the path_error rows' ``error`` values
EARLY = 0.25  # DP total "jumps early": reaches the largest γ1 within this fraction of the γ0 grid

QUALITY_METRICS = ("params", "fid", "fid_ci_low", "fid_ci_high", "kid", "kid_std", *FID_INFINITY_METRICS)
KID_TEXT = "kid ± std"
DELTA_TEXT = "fid_delta [ci] vs baseline"  # FID(path) - FID(baseline), paired
GRID_IMAGES = 12  # samples drawn per path

DENSITY_METRIC = "error_density"
SPACING_ORDER = ("uniform", "quadratic", "snr", "dp", "dp_seed")  # other spacings follow by name
SPACING_LABELS = {
    "uniform": "uniform in t",
    "quadratic": "quadratic (DDIM)",
    "snr": "uniform in log-SNR",
    "dp": "DP-optimal (derived factor)",
    "dp_seed": "DP-optimal (seed factor)",
}
SPACING_STYLES = {
    "uniform": {"color": "C0", "linestyle": "-", "marker": "o"},
    "quadratic": {"color": "C1", "linestyle": "-", "marker": "^"},
    "snr": {"color": "C2", "linestyle": "-", "marker": "v"},
    "dp": {"color": "C3", "linestyle": "-", "marker": "s", "linewidth": 2.0},
    "dp_seed": {"color": "C4", "linestyle": "--", "marker": "D"},
}
SCHEDULE_METRICS = (
    *FID_KID_METRICS,
    "class_accuracy",
    "class_diversity",
    "schedule_cost",
    "network_evaluations",
    *FID_INFINITY_METRICS,
)
SCHEDULE_TIMESTEP = "schedule_timestep"
VERDICT_STEPS = 10
DP, RIVALS = "dp", ("uniform", "snr")  # the schedule verdict: does dp beat these at VERDICT_STEPS

TIMING_METRIC, SPEEDUP_METRIC = "vhv_seconds", "vhv_speedup"

# Verdicts of one FID against another (:func:`fid_verdict`).
BEATS, TIED, LOSES = "beats", "indistinguishable at this n", "loses"
UNJUDGED, NOT_MEASURED = "not judged (an interval is missing)", "not measured"
SCHEDULE_VERBS = {
    BEATS: "beats",
    TIED: "is indistinguishable at this n from",
    LOSES: "loses to",
    UNJUDGED: "is not judged (an interval is missing) against",
}


# --- small helpers (pure) ---------------------------------------------------------------------------------


def _text(rows: pd.DataFrame, name: str) -> pd.Series:
    """Parameter ``name`` as text, blank where absent."""
    values = param(rows, name).astype(object)
    return values.where(values.notna(), "").astype(str)


def _ordered(values: Sequence[str], order: Sequence[str]) -> list[str]:
    present = set(values)
    return [v for v in order if v in present] + sorted(present - set(order))


def _rank(column: pd.Series, order: Sequence[str]) -> pd.Series:
    return column.map({v: i for i, v in enumerate(_ordered(list(column), order))})


def path_label(path: str, convention: str = "") -> str:
    """``dp_total (seed)``; a path without a convention (diagonal, single_scale) is its name alone."""
    return f"{path} ({convention})" if convention else path


def spacing_label(spacing: str) -> str:
    """``uniform in t``, ``DP-optimal (derived factor)``, ...; an unknown spacing is its own name."""
    return SPACING_LABELS.get(spacing, spacing)


def fid_verdict(a: Mapping[str, float], b: Mapping[str, float]) -> str:
    """How FID line ``a`` fares against ``b`` (each with ``fid``, ``fid_ci_low``, ``fid_ci_high``): ``beats``
    (lower and the two intervals at this n do not overlap), ``indistinguishable at this n`` (they overlap),
    ``loses`` (higher, no overlap), ``not judged`` (an interval is missing) or ``not measured`` (a FID is)."""

    def get(line: Mapping[str, float], key: str) -> float:
        value = line.get(key, np.nan)
        return float(value) if value is not None and pd.notna(value) else np.nan

    if not np.isfinite([get(a, "fid"), get(b, "fid")]).all():
        return NOT_MEASURED
    overlap = intervals_overlap(
        (get(a, "fid_ci_low"), get(a, "fid_ci_high")), (get(b, "fid_ci_low"), get(b, "fid_ci_high"))
    )
    if overlap is None:
        return UNJUDGED
    if overlap:
        return TIED
    return BEATS if get(a, "fid") < get(b, "fid") else LOSES


def _fid_text(line: Mapping[str, object]) -> str:
    text = line.get(FID_INTERVAL)
    return str(text) if isinstance(text, str) and text else format_value(line.get("fid"))


# --- MSE tests (pure) -------------------------------------------------------------------------------------


def mse_table(df: pd.DataFrame) -> pd.DataFrame:
    """Seed 003's "Detailed Results": one line per test (both_noisy, clean_small, clean_large, others by name, the
    single-scale baseline last) with ``test, description, large, small, total`` (the ``eps_mse`` of each scale,
    blank where the test does not measure it; seeds averaged)."""
    rows = df[df["metric"] == MSE_METRIC]
    columns = ["test", "description", *SCALES]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(test=_text(rows, "test"), scale=_text(rows, "scale"))
    wide = rows.groupby(["test", "scale"])["value"].mean().unstack("scale").reindex(columns=list(SCALES))
    order = [t for t in _ordered(list(wide.index), TEST_ORDER) if t != SINGLE_SCALE]
    order += [SINGLE_SCALE] if SINGLE_SCALE in wide.index else []
    wide = wide.loc[order].reset_index()
    wide.insert(1, "description", [TEST_DESCRIPTIONS.get(t, t) for t in wide["test"]])
    return wide[columns].rename_axis(columns=None)


def mse_note(table: pd.DataFrame) -> str:
    """The seed's conditioning questions with the numbers: does a clean small scale lower the large scale's MSE
    (clean_small vs both_noisy), a clean large scale the small scale's (clean_large vs both_noisy), and how the
    large-scale MSE compares with the single-scale baseline's."""
    wide = table.set_index("test") if len(table) else pd.DataFrame()

    def get(test: str, scale: str) -> float:
        return float(wide.at[test, scale]) if test in wide.index and pd.notna(wide.at[test, scale]) else np.nan

    def compare(name: str, test: str, scale: str, reference: str, question: str) -> str:
        value, base = get(test, scale), get(reference, scale)
        if not np.isfinite([value, base]).all():
            return f"{question} not measured ({scale}-scale MSE of {test} or {reference} missing)."
        change = value / base - 1 if base else np.nan
        verdict = "lower" if value < base else "not lower"
        return (
            f"{question} {name} {scale}-scale MSE {format_value(value)} vs {format_value(base)} for {reference} "
            f"({change:+.1%}): {verdict}."
        )

    return " ".join(
        [
            compare("clean_small", "clean_small", "large", "both_noisy", "Does a clean small scale help the large?"),
            compare("clean_large", "clean_large", "small", "both_noisy", "Does a clean large scale help the small?"),
            compare("single_scale", SINGLE_SCALE, "large", "both_noisy", "Baseline vs LIFT (both noisy):"),
        ]
    )


# --- heatmaps and paths (pure) ----------------------------------------------------------------------------


def heatmap_grid(snr_min: float, snr_max: float, num_points: int) -> np.ndarray:
    """The heatmap's SNR grid ``[M]``: ``np.geomspace(snr_min, snr_max, num_points)``."""
    if not (np.isfinite([snr_min, snr_max]).all() and 0 < snr_min < snr_max):
        raise ValueError(f"need 0 < snr_min < snr_max, got snr_min={snr_min}, snr_max={snr_max}")
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}")
    return np.geomspace(snr_min, snr_max, int(num_points))


def is_heatmap(array: np.ndarray) -> bool:
    """A heatmap ``[3, M, M]``: large, small and total error over (γ0, γ1)."""
    return array.ndim == 3 and array.shape[0] == 3 and array.shape[1] == array.shape[2] >= 2


def heatmap_long(heatmap: np.ndarray, grid: np.ndarray, convention: str) -> pd.DataFrame:
    """Long ``convention, scale, snr_large, snr_small, value`` of a heatmap ``[3, M, M]`` on ``grid`` ``[M]``:
    ``value`` of ``scale`` (large, small, total) at (γ0 = ``grid[i]``, γ1 = ``grid[j]``) = ``heatmap[s, i, j]``."""
    m = len(grid)
    i, j = np.meshgrid(np.arange(m), np.arange(m), indexing="ij")
    parts = [
        pd.DataFrame(
            {
                "convention": convention,
                "scale": scale,
                "snr_large": grid[i.ravel()],
                "snr_small": grid[j.ravel()],
                "value": np.asarray(heatmap[s], dtype=float).ravel(),
            }
        )
        for s, scale in enumerate(SCALES)
    ]
    return pd.concat(parts, ignore_index=True)


def path_points(df: pd.DataFrame) -> pd.DataFrame:
    """``convention, path, i, snr_large, snr_small``: every path's points (γ0, γ1), by convention (seed, derived,
    others), path (diagonal, dp_total, dp_large, others) and index; a point's seeds averaged."""
    rows = df[df["metric"] == PATH_METRIC]
    columns = ["convention", "path", "i", "snr_large", "snr_small"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(
        convention=_text(rows, "convention"),
        path=_text(rows, "path"),
        i=numeric_param(rows, "i"),
        snr_large=numeric_param(rows, "snr_large"),
        snr_small=rows["value"],
    )
    keys = ["convention", "path", "i"]  # a point recorded at several seeds (--seeds): their mean
    rows = rows.groupby(keys, as_index=False, sort=False, dropna=False).agg(
        snr_large=("snr_large", "first"), snr_small=("value", "mean")
    )
    rows = rows.assign(_c=_rank(rows["convention"], CONVENTION_ORDER), _p=_rank(rows["path"], PATH_ORDER))
    return rows.sort_values(["_c", "_p", "i"], kind="stable")[columns].reset_index(drop=True)


def path_errors(df: pd.DataFrame) -> pd.DataFrame:
    """``convention, path, error_total, error_large``: each path's recorded cumulative error (seeds averaged)."""
    rows = df[df["metric"] == PATH_ERROR_METRIC]
    columns = ["convention", "path", *(f"error_{e}" for e in ERRORS)]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(convention=_text(rows, "convention"), path=_text(rows, "path"), error=_text(rows, "error"))
    wide = rows.groupby(["convention", "path", "error"])["value"].mean().unstack("error")
    wide = wide.reindex(columns=list(ERRORS)).add_prefix("error_").reset_index().rename_axis(columns=None)
    wide = wide.assign(_c=_rank(wide["convention"], CONVENTION_ORDER), _p=_rank(wide["path"], PATH_ORDER))
    return wide.sort_values(["_c", "_p"], kind="stable")[columns].reset_index(drop=True)


def snr_column(snr: float) -> str:
    """A path table's column name for the point at γ0 = ``snr``: ``γ0=0.0193``."""
    return f"γ0={snr:.3g}"


def path_table(points: pd.DataFrame, errors: pd.DataFrame) -> pd.DataFrame:
    """One line per (convention, path): ``convention, path, description, error_total, error_large`` (the recorded
    path errors, blank where absent), then γ1 at every γ0 (one column per γ0, ascending, named by
    :func:`snr_column`). ``points`` from :func:`path_points`, ``errors`` from :func:`path_errors`."""
    keys = ["convention", "path"]
    if points.empty:
        return pd.DataFrame(columns=[*keys, "description", "error_total", "error_large"])
    wide = points.pivot_table(index=keys, columns="snr_large", values="snr_small", aggfunc="mean", sort=True)
    wide.columns = [snr_column(c) for c in wide.columns]
    wide = wide.reset_index()
    wide = (
        wide.merge(errors, on=keys, how="left") if len(errors) else wide.assign(error_total=np.nan, error_large=np.nan)
    )
    wide.insert(2, "description", [PATH_DESCRIPTIONS.get(p, p) for p in wide["path"]])
    wide = wide.assign(_c=_rank(wide["convention"], CONVENTION_ORDER), _p=_rank(wide["path"], PATH_ORDER))
    wide = wide.sort_values(["_c", "_p"], kind="stable").drop(columns=["_c", "_p"])
    snr_columns = [c for c in wide.columns if c.startswith("γ0=")]
    return wide[[*keys, "description", "error_total", "error_large", *snr_columns]].reset_index(drop=True)


def convention_differences(points: pd.DataFrame, rtol: float = 1e-9) -> pd.DataFrame:
    """Per path recorded under both the seed and the derived convention: ``path, compared`` (γ0 points present in
    both, matched by index ``i``), ``differ`` (points where γ1 differs beyond ``rtol``) and ``at_snr_large`` (their
    γ0 values, text)."""
    columns = ["path", "compared", "differ", "at_snr_large"]
    lines = []
    for path in _ordered(list(points["path"]), PATH_ORDER):
        one = points[points["path"] == path]
        seed, derived = (one[one["convention"] == c].set_index("i") for c in (SEED, DERIVED))
        if seed.empty or derived.empty:
            continue
        both = seed.merge(derived, left_index=True, right_index=True, suffixes=("_seed", "_derived"))
        differ = ~np.isclose(both["snr_small_seed"], both["snr_small_derived"], rtol=rtol, atol=0.0)
        where = ", ".join(f"{v:.3g}" for v in both.loc[differ, "snr_large_seed"])
        lines.append({"path": path, "compared": len(both), "differ": int(differ.sum()), "at_snr_large": where})
    return pd.DataFrame(lines, columns=columns)


def convention_note(differences: pd.DataFrame) -> str:
    """Whether each path is the same under both chain-rule factors, with the count of γ0 points where they differ.
    ``differences`` from :func:`convention_differences`."""
    if differences.empty:
        return "No path is recorded under both the seed and the derived convention: the factors cannot be compared."
    parts = []
    for line in differences.itertuples(index=False):
        if line.differ == 0:
            parts.append(f"{line.path} is the same under both factors (0 of {line.compared} γ0 points differ)")
        else:
            parts.append(
                f"{line.path} differs at {line.differ} of {line.compared} γ0 points (γ0 = {line.at_snr_large})"
            )
    return "Seed vs derived chain-rule factor: " + "; ".join(parts) + "."


def path_claims_note(points: pd.DataFrame) -> str:
    """Seed 003's two claims about the DP paths, checked per convention with the numbers: DP total jumps γ1 to the
    grid's largest SNR early (the first γ0 index where it reaches it; "early" = within the first
    :data:`EARLY` of the grid), and DP large-only keeps γ1 low (its γ1 range; "low" = never at the largest SNR and
    below the diagonal γ1 < γ0 at half the points or more). The grid's largest SNR is the path's last γ0."""
    sentences = []
    for convention in _ordered(list(points["convention"]), CONVENTION_ORDER):
        one = points[points["convention"] == convention]
        paths = {p: one[one["path"] == p].sort_values("i") for p in (DP_TOTAL, DP_LARGE)}
        top = float(one["snr_large"].max())

        def at_top(values: np.ndarray, top: float = top) -> np.ndarray:
            return np.isclose(values, top, rtol=1e-6)

        dp_total = paths[DP_TOTAL]
        if dp_total.empty:
            sentences.append(f"{convention}: no dp_total path recorded.")
        else:
            m = len(dp_total)
            reached = np.flatnonzero(at_top(dp_total["snr_small"].to_numpy(dtype=float)))
            if len(reached):
                k = int(reached[0])
                early = k <= EARLY * (m - 1)
                sentences.append(
                    f"{convention}: DP total first reaches the largest γ1 ({top:.3g}) at γ0 index {k} of 0-{m - 1} "
                    f"(γ0 = {dp_total['snr_large'].iloc[k]:.3g}): "
                    + ("early, as seed 003 reports." if early else f"not early (after the first {EARLY:.0%}).")
                )
            else:
                sentences.append(
                    f"{convention}: DP total never reaches the largest γ1 ({top:.3g}); its largest γ1 is "
                    f"{dp_total['snr_small'].max():.3g}, so it does not jump to the maximum as seed 003 reports."
                )
        dp_large = paths[DP_LARGE]
        if dp_large.empty:
            sentences.append(f"{convention}: no dp_large path recorded.")
        else:
            small, large = dp_large["snr_small"].to_numpy(dtype=float), dp_large["snr_large"].to_numpy(dtype=float)
            below = int((small < large * (1 - 1e-9)).sum())
            low = not at_top(small).any() and below >= len(small) / 2
            sentences.append(
                f"{convention}: DP large-only keeps γ1 in [{small.min():.3g}, {small.max():.3g}] (grid up to "
                f"{top:.3g}), below the diagonal at {below} of {len(small)} points: "
                + ("it keeps γ1 low, as seed 003 reports." if low else "it does not keep γ1 low.")
            )
    return " ".join(sentences) if sentences else "No paths recorded."


def optimality_note(errors: pd.DataFrame) -> str:
    """Per convention, whether each DP path has the lowest error of its own objective among the recorded paths
    (dp_total the lowest ``error_total``, dp_large the lowest ``error_large``), as a DP must when the other paths
    satisfy its constraints (the diagonal does: γ1 rises with γ0). ``errors`` from :func:`path_errors`."""
    sentences = []
    for convention in _ordered(list(errors["convention"]), CONVENTION_ORDER):
        one = errors[errors["convention"] == convention].set_index("path")
        for path, error in ((DP_TOTAL, "total"), (DP_LARGE, "large")):
            column = f"error_{error}"
            values = one[column].dropna()
            if path not in values.index:
                sentences.append(f"{convention}: no {error} error of {path} recorded.")
                continue
            others = values.drop(path)
            listed = ", ".join(f"{p} {format_value(v)}" for p, v in others.items()) or "no other path"
            lowest = bool((values[path] <= others * (1 + 1e-9)).all())
            sentences.append(
                f"{convention}: {path} {error} error {format_value(values[path])} vs {listed}: "
                + ("the lowest, as the DP's minimum must be." if lowest else "NOT the lowest: the DP did not minimise.")
            )
    return " ".join(sentences) if sentences else "No path_error rows."


def path_error_from_heatmap(
    heatmap: np.ndarray, grid: np.ndarray, snr_large: Sequence[float], snr_small: Sequence[float]
) -> dict[str, float]:
    """A path's cumulative error recomputed from a heatmap ``[3, M, M]`` on ``grid`` ``[M]``: the plain sum over
    its points (γ0, γ1) of the heatmap at the nearest grid point in log-SNR, per scale (large, small, total)."""
    logs = np.log(np.asarray(grid, dtype=float))

    def nearest(values: Sequence[float]) -> np.ndarray:
        return np.abs(np.log(np.asarray(values, dtype=float))[:, None] - logs[None, :]).argmin(axis=1)

    i, j = nearest(snr_large), nearest(snr_small)
    return {scale: float(np.asarray(heatmap[s], dtype=float)[i, j].sum()) for s, scale in enumerate(SCALES)}


# --- generation quality (pure) ----------------------------------------------------------------------------


def quality_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows of sampling along a path (lift or baseline, with a ``path``; not the path or path-error rows)
    with plain ``model``, ``path``, ``convention`` (blank when absent) and ``label`` (:func:`path_label`)."""
    rows = df[
        param(df, "path").notna()
        & param(df, "model").isin([LIFT, BASELINE])
        & ~df["metric"].isin([PATH_METRIC, PATH_ERROR_METRIC])
    ]
    rows = rows.assign(model=_text(rows, "model"), path=_text(rows, "path"), convention=_text(rows, "convention"))
    labels = [path_label(p, c) for p, c in zip(rows["path"], rows["convention"], strict=True)]
    return rows.assign(label=pd.Series(labels, index=rows.index, dtype=object))


def error_column(error: str, convention: str) -> str:
    """The quality table's column of a path error: ``error_total (seed)``."""
    return f"error_{error} ({convention})"


def quality_table(rows: pd.DataFrame, errors: pd.DataFrame) -> pd.DataFrame:
    """Seed 003's fair comparison: one line per (model, path, convention) with ``label, path, convention,
    description, model, params, fid, fid [ci], fid_inf [ci], fid_delta [ci] vs baseline`` (FID(path) -
    FID(baseline), paired; blank for the baseline and for rows without it), ``fid_ci_low, fid_ci_high, kid, kid_std,
    kid ± std``, the theoretical path errors per convention recorded (``error_total (seed)``, ``error_large
    (seed)``, ...: a DP path's under its own convention, the diagonal's under every convention, the baseline's
    blank), ``n, n_real, extractor``, then the FID-infinity and ``fid_delta`` columns; sorted by FID (blank last).
    ``rows`` from :func:`quality_rows`, ``errors`` from :func:`path_errors`."""
    keys = ["model", "path", "convention"]
    metrics = (*QUALITY_METRICS, *FID_DELTA_METRICS)
    wide = wide_metrics(rows[rows["metric"].isin(metrics)], keys, metrics)
    wide = with_fid_interval(wide)
    wide[DELTA_TEXT] = pd.Series([paired_delta(line)[0] for _, line in wide.iterrows()], index=wide.index, dtype=object)
    kid = [
        f"{format_value(k)} ± {format_value(s)}" if pd.notna(k) and pd.notna(s) else format_value(k)
        for k, s in zip(wide["kid"], wide["kid_std"], strict=True)
    ]
    labels = [path_label(p, c) for p, c in zip(wide["path"], wide["convention"], strict=True)]
    wide = wide.assign(**{KID_TEXT: kid}, label=labels, description=[PATH_DESCRIPTIONS.get(p, p) for p in wide["path"]])
    error_columns = []
    for convention in _ordered(list(errors["convention"]), CONVENTION_ORDER):
        recorded = errors[errors["convention"] == convention].set_index("path")
        for error in ERRORS:
            column = error_column(error, convention)
            error_columns.append(column)
            values = [
                float(recorded.at[p, f"error_{error}"]) if p in recorded.index and c in ("", convention) else np.nan
                for p, c in zip(wide["path"], wide["convention"], strict=True)
            ]
            wide[column] = pd.Series(values, index=wide.index, dtype=float)
    columns = ["label", "path", "convention", "description", "model", "params", "fid", FID_INTERVAL]
    columns += [FID_INFINITY_INTERVAL, DELTA_TEXT, "fid_ci_low", "fid_ci_high", "kid", "kid_std", KID_TEXT]
    columns += [*error_columns, *MEASURED_WITH, *FID_INFINITY_METRICS, *FID_DELTA_METRICS]
    wide = wide.sort_values("fid", na_position="last", kind="stable").reset_index(drop=True)
    return wide.reindex(columns=columns)


def findings_note(table: pd.DataFrame) -> str:
    """Seed 003's findings checked with the numbers: does the single-scale baseline beat the best LIFT path at
    equal parameters (by the paired difference FID(path) - FID(baseline) where recorded: does its interval exclude
    0; else by whether the two FID intervals overlap), with every recorded paired difference against the baseline;
    which LIFT path is best (and whether its FID interval stands clear of the runner-up's); does DP total hurt
    (dp_total vs diagonal by their FID intervals, no paired difference between the two being recorded, with each
    one's paired difference against the baseline). "not measured" where rows are absent. ``table`` from
    :func:`quality_table`."""
    measured = table[table["fid"].notna()]
    lift = measured[measured["model"] == LIFT]
    base = measured[measured["model"] == BASELINE]
    sentences = []

    def line_text(line: pd.Series) -> str:
        return f"{line['label']} FID {_fid_text(line)}"

    def delta_of(line: pd.Series) -> str:
        text, verdict = paired_delta(line)
        return f"{line['label']} Δ {text} ({verdict})"

    # 1. Baseline vs the best LIFT path.
    question = "Does the single-scale baseline beat the best LIFT path at equal parameters?"
    best = lift.iloc[0] if len(lift) else None
    best_delta = paired_delta(best) if best is not None else ("", DELTA_NOT_MEASURED)
    if best is None or (base.empty and best_delta[1] == DELTA_NOT_MEASURED):
        missing = "LIFT" if best is None else "baseline"
        sentences.append(f"{question} not measured (no {missing} FID).")
    else:
        b = base.iloc[0] if len(base) else pd.Series(dtype=object)
        if best_delta[1] != DELTA_NOT_MEASURED:
            answer = {
                DELTA_HIGHER: "yes: the paired difference excludes 0 (the baseline's FID is lower)",
                DELTA_LOWER: "no: the paired difference excludes 0 with the best LIFT path's FID lower",
                DELTA_TIED: "not clearly: the paired difference includes 0 (indistinguishable at this n)",
            }.get(best_delta[1], "not judged: the paired difference's interval is missing")
            evidence = f"Δ = FID({best['label']}) - FID(baseline) = {best_delta[0]}, paired"
        else:
            answer = {
                BEATS: "yes: its FID is lower and the intervals do not overlap",
                TIED: "not clearly: the intervals overlap (indistinguishable at this n)",
                LOSES: "no: the best LIFT path has the lower FID and the intervals do not overlap",
                UNJUDGED: f"FID {'lower' if b['fid'] < best['fid'] else 'not lower'}, but an interval is missing",
            }[fid_verdict(b, best)]
            evidence = "no paired difference recorded: separate FID intervals compared"
        pb, pl = b.get("params", np.nan), best.get("params", np.nan)
        if pd.isna(pb) or pd.isna(pl):
            size = "parameter counts not recorded"
        elif pb == pl:
            size = f"equal parameters ({format_value(pb)})"
        else:
            size = f"parameters differ: {format_value(pb)} vs {format_value(pl)} ({pb / pl - 1:+.1%})"
        versus = f"{line_text(b)} vs {line_text(best)}" if len(base) else f"{line_text(best)}; no baseline FID row"
        sentences.append(f"{question} {answer} ({versus}; {size}; {evidence}).")
        others = [line for _, line in lift.iloc[1:].iterrows() if pd.notna(line.get("fid_delta", np.nan))]
        if others:
            listed = "; ".join(delta_of(line) for line in others)
            sentences.append(f"The other LIFT paths vs the baseline (paired, FID(path) - FID(baseline)): {listed}.")

    # 2. The best LIFT path.
    if lift.empty:
        sentences.append("Best LIFT path: not measured.")
    elif len(lift) == 1:
        sentences.append(f"Best LIFT path: {line_text(lift.iloc[0])} (the only LIFT path measured).")
    else:
        best, second = lift.iloc[0], lift.iloc[1]
        verdict = fid_verdict(best, second)
        clear = {
            BEATS: "clear of the runner-up (the intervals do not overlap)",
            TIED: "indistinguishable at this n from the runner-up (the intervals overlap)",
            UNJUDGED: "ahead of the runner-up, but an interval is missing",
        }.get(verdict, "")
        sentences.append(f"Best LIFT path: {line_text(best)}, {clear}: runner-up {line_text(second)}.")

    # 3. Does DP total hurt? No paired dp_total - diagonal difference is recorded: their intervals, and each one's
    # paired difference against the baseline.
    diagonal = lift[lift["path"] == DIAGONAL]
    dp_total = lift[lift["path"] == DP_TOTAL]
    if diagonal.empty or dp_total.empty:
        missing = "diagonal" if diagonal.empty else "dp_total"
        sentences.append(f"Does DP total hurt? not measured (no {missing} FID).")
    else:
        diag = diagonal.iloc[0]
        for _, line in dp_total.iterrows():
            verdict = fid_verdict(line, diag)
            answer = {
                LOSES: "yes: its FID is higher than the diagonal's and the intervals do not overlap",
                TIED: "not clearly: the intervals overlap (indistinguishable at this n)",
                BEATS: "no: it improves on the diagonal, the intervals do not overlap",
                UNJUDGED: "an interval is missing, so not judged",
            }[verdict]
            paired = [delta_of(x) for x in (line, diag) if pd.notna(x.get("fid_delta", np.nan))]
            against = f"; vs the baseline (paired): {', '.join(paired)}" if paired else ""
            sentences.append(
                f"Does DP total hurt ({line['convention'] or 'no convention'})? {answer} "
                f"({line_text(line)} vs {line_text(diag)}{against})."
            )
    return " ".join(sentences)


# --- the single-scale teacher (pure) ----------------------------------------------------------------------


def density_curves(df: pd.DataFrame) -> pd.DataFrame:
    """``convention, t, snr, value``: the teacher's error density per convention and timestep (seeds averaged),
    by convention then ``t``."""
    rows = df[df["metric"] == DENSITY_METRIC]
    columns = ["convention", "t", "snr", "value"]
    if rows.empty:
        return pd.DataFrame(columns=columns)
    rows = rows.assign(convention=_text(rows, "convention"), t=numeric_param(rows, "t"), snr=numeric_param(rows, "snr"))
    curves = rows.groupby(["convention", "t"], as_index=False).agg(snr=("snr", "first"), value=("value", "mean"))
    curves = curves.assign(_c=_rank(curves["convention"], CONVENTION_ORDER))
    return curves.sort_values(["_c", "t"], kind="stable")[columns].reset_index(drop=True)


def density_note(curves: pd.DataFrame) -> str:
    """Per convention, where the error density is largest and how far it spans: the DP schedule spends its steps
    where ``E`` is large and the log-SNR moves fast, so this says where it will put them."""
    sentences = []
    for convention in _ordered(list(curves["convention"].unique()), CONVENTION_ORDER):
        curve = curves[(curves["convention"] == convention) & np.isfinite(curves["value"])]
        if curve.empty:
            continue
        peak, low = curve.loc[curve["value"].idxmax()], curve.loc[curve["value"].idxmin()]
        sentences.append(
            f"{convention}: E(t) is largest at t = {format_value(peak['t'])} (SNR {format_value(peak['snr'])}, "
            f"E = {format_value(peak['value'])}) and smallest at t = {format_value(low['t'])} (SNR "
            f"{format_value(low['snr'])}, E = {format_value(low['value'])}), a ratio of "
            f"{format_value(peak['value'] / low['value']) if low['value'] > 0 else 'inf'} over {len(curve)} timesteps."
        )
    return " ".join(sentences) if sentences else "No finite error density recorded."


def schedule_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The teacher's schedule rows (with a ``spacing``) with plain ``spacing``, ``label`` (:func:`spacing_label`),
    ``steps`` and ``k`` columns."""
    rows = df[(param(df, "model") == TEACHER) & param(df, "spacing").notna()]
    rows = rows.assign(spacing=_text(rows, "spacing"), steps=numeric_param(rows, "steps"), k=numeric_param(rows, "k"))
    return rows.assign(label=rows["spacing"].map(spacing_label))


def schedule_grids(rows: pd.DataFrame) -> pd.DataFrame:
    """``steps, spacing, label, k, t``: every schedule's timesteps by step index (seeds averaged), by steps,
    spacing (uniform, quadratic, snr, dp, dp_seed, others) and ``k``. ``rows`` from :func:`schedule_rows`."""
    chosen = rows[rows["metric"] == SCHEDULE_TIMESTEP]
    columns = ["steps", "spacing", "label", "k", "t"]
    if chosen.empty:
        return pd.DataFrame(columns=columns)
    keys = ["steps", "spacing", "k"]  # a grid recorded at several seeds (--seeds): their mean timestep
    chosen = chosen.groupby(keys, as_index=False, sort=False, dropna=False).agg(
        label=("label", "first"), t=("value", "mean")
    )
    chosen = chosen.assign(_s=_rank(chosen["spacing"], SPACING_ORDER))
    return chosen.sort_values(["steps", "_s", "k"], kind="stable")[columns].reset_index(drop=True)


def schedule_table(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (steps, spacing): ``steps, spacing, label``, the metrics of :data:`SCHEDULE_METRICS` (``fid
    [ci]`` and ``fid_inf [ci]`` after ``fid``) and ``n, n_real, extractor``; by steps then spacing order; seeds
    averaged. ``rows`` from :func:`schedule_rows`."""
    wide = wide_metrics(rows, ["steps", "spacing"], SCHEDULE_METRICS)
    wide = wide.assign(label=wide["spacing"].map(spacing_label), _s=_rank(wide["spacing"], SPACING_ORDER))
    wide = wide.sort_values(["steps", "_s"], kind="stable").reset_index(drop=True)
    return with_fid_interval(wide[["steps", "spacing", "label", *SCHEDULE_METRICS, *MEASURED_WITH]])


def schedule_deltas(rows: pd.DataFrame) -> pd.DataFrame:
    """``steps, spacing, reference, fid_delta, fid_delta_ci_low, fid_delta_ci_high``: each grid's paired FID
    difference with a reference grid at the same step count (seeds averaged). ``rows`` from :func:`schedule_rows`."""
    rows = rows.assign(reference=_text(rows, "reference"))
    rows = rows[(rows["reference"] != "") & rows["reference"].notna()]
    wide = wide_metrics(rows, ["steps", "spacing", "reference"], FID_DELTA_METRICS)
    return wide.drop(columns=list(MEASURED_WITH), errors="ignore")


def schedule_note(table: pd.DataFrame, steps: int = VERDICT_STEPS, deltas: pd.DataFrame | None = None) -> str:
    """At ``steps`` steps, does the DP grid (derived factor) beat uniform-in-t and uniform-in-log-SNR, with the
    numbers: by the paired difference's interval where ``deltas`` (:func:`schedule_deltas`) has it (excludes 0 =
    a difference at this n), else by the two separate intervals (apart = beats or loses, overlapping =
    indistinguishable at this n); and does the DP grid have the lowest ``schedule_cost`` (its own objective) at
    every step count, as it must. ``table`` from :func:`schedule_table`."""
    at = table[table["steps"] == steps].set_index("spacing")
    paired = {}
    if deltas is not None and len(deltas):
        mine = deltas[(deltas["steps"] == steps) & (deltas["spacing"] == DP)]
        paired = {line["reference"]: line for _, line in mine.iterrows()}
    sentences = []
    if DP not in at.index or pd.isna(at.at[DP, "fid"]):
        sentences.append(f"At {steps} steps: dp {NOT_MEASURED}, so not compared.")
    else:
        dp = at.loc[DP]
        parts = []
        for rival in RIVALS:
            if rival not in at.index or pd.isna(at.at[rival, "fid"]):
                parts.append(f"{rival}: {NOT_MEASURED}")
                continue
            other = at.loc[rival]
            numbers = f"FID {_fid_text(dp)} vs {_fid_text(other)}"
            if rival in paired:
                text, verdict = paired_delta(paired[rival])
                parts.append(f"dp - {rival} = {text} (paired, same noise): {verdict} ({numbers})")
            else:
                parts.append(f"dp {SCHEDULE_VERBS[fid_verdict(dp, other)]} {rival} ({numbers}; separate intervals)")
        sentences.append(f"At {steps} steps: " + "; ".join(parts) + ".")
    costs = table.dropna(subset=["schedule_cost"])
    if costs.empty:
        sentences.append("No schedule_cost recorded: the DP grid's optimality not checked.")
        return " ".join(sentences)
    failures, ties, missing = [], [], []
    counts = sorted(costs["steps"].unique())
    for count in counts:
        one = costs[costs["steps"] == count].set_index("spacing")["schedule_cost"]
        if DP not in one.index:
            missing.append(f"{count:g}")
            continue
        others = one.drop(DP)
        lower = others[others < one[DP] * (1 - 1e-9)]
        failures += [f"at {count:g} steps {s} {format_value(v)} < dp {format_value(one[DP])}" for s, v in lower.items()]
        ties += [f"{s} at {count:g} steps" for s, v in others.items() if np.isclose(v, one[DP], rtol=1e-9)]
    listed = ", ".join(f"{c:g}" for c in counts)
    if failures:
        sentences.append(
            "The dp grid does NOT have the lowest schedule_cost everywhere: "
            + "; ".join(failures)
            + " (the DP did not minimise its own objective there)."
        )
    else:
        checked = [f"{c:g}" for c in counts if f"{c:g}" not in missing]
        if checked:
            sentences.append(
                f"The dp grid has the lowest schedule_cost at every step count checked ({', '.join(checked)})"
                + (f", tied with {', '.join(ties)}" if ties else "")
                + ", as the DP's minimiser must."
            )
    if missing:
        sentences.append(f"No dp schedule_cost at {', '.join(missing)} steps (step counts {listed}).")
    return " ".join(sentences)


def timing_table(df: pd.DataFrame) -> pd.DataFrame:
    """``method, probes, n, seconds, speedup``: the vHv estimator's mean seconds per method (vmap, loop) with the
    recorded loop / vmap speedup of the same probes and batch size."""
    columns = ["method", "probes", "n", "seconds", "speedup"]
    timed = df[df["metric"] == TIMING_METRIC]
    if timed.empty:
        return pd.DataFrame(columns=columns)
    timed = timed.assign(
        method=_text(timed, "method"), probes=numeric_param(timed, "probes"), n=numeric_param(timed, "n")
    )
    seconds = timed.groupby(["method", "probes", "n"], as_index=False)["value"].mean()
    seconds = seconds.rename(columns={"value": "seconds"})
    speed = df[df["metric"] == SPEEDUP_METRIC]
    speed = speed.assign(probes=numeric_param(speed, "probes"), n=numeric_param(speed, "n"))
    speed = speed.groupby(["probes", "n"], as_index=False)["value"].mean().rename(columns={"value": "speedup"})
    out = seconds.merge(speed, on=["probes", "n"], how="left")
    out = out.assign(_m=_rank(out["method"], ("vmap", "loop")))
    return out.sort_values(["probes", "n", "_m"], kind="stable")[columns].reset_index(drop=True)


# --- sections (load arrays, save figures) ---------------------------------------------------------------


def sections(df: pd.DataFrame, run_dir: Path) -> list[Section]:
    """The snr_paths report: the MSE tests, the discretization-error heatmaps with their paths, the DP paths,
    generation quality per path against the single-scale baseline, the teacher's error density and its schedules,
    and the estimator's timing."""
    return per_run_sections(df, Path(run_dir), "snr_paths", _run_sections)


def _run_sections(df: pd.DataFrame, out: Out, suffix: str) -> list[Section]:
    heatmaps, problems = _load_heatmaps(df, out.run_dir)
    points, errors = path_points(df), path_errors(df)
    parts = [
        ("MSE tests", _mse_items(df, out)),
        ("Discretization-error heatmaps", _heatmap_items(heatmaps, problems, points, out)),
        ("DP paths", _path_items(heatmaps, points, errors, out)),
        ("Generation quality", _quality_items(df, errors, out)),
        ("Single-scale error density", _density_items(df, out)),
        ("Single-scale schedules", _schedule_items(df, out)),
        ("Estimator timing", _timing_items(df, out)),
    ]
    return [Section(title + suffix, items) for title, items in parts]


def _mse_items(df: pd.DataFrame, out: Out) -> list[Note | Table | FigureRef]:
    table = mse_table(df)
    if table.empty:
        return [Note(f"No {MSE_METRIC} rows: the MSE tests were not recorded.")]
    caption = (
        "Noise-prediction MSE at t = 500 over the held-out images (seed 003's tests): per test the large- and "
        "small-scale MSE and their mean (total); blank where a test leaves that scale clean; the single-scale "
        "baseline last."
    )
    bars = table.set_index("test")[list(SCALES)]
    long = table.melt(id_vars=["test", "description"], value_vars=list(SCALES), var_name="scale").dropna()
    fig = figures.grouped_bars(bars, ylabel="eps MSE", colors={"large": "C0", "small": "C1", "total": "C7"})
    chart = out.figure(fig, "mse_tests", long, "MSE per test (x) and scale (bars), as in seed 003's mse_test_chart.")
    return [Table(caption, table, name=out.name("mse_tests")), chart, Note(mse_note(table))]


def _load_heatmaps(df: pd.DataFrame, run_dir: Path) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], list[str]]:
    """Per convention its heatmap ``[3, M, M]`` and grid ``[M]``; the problems met (missing file, bad shape, grid
    parameters absent or not matching the array)."""
    rows = df[df["metric"] == HEATMAP_METRIC]
    rows = rows.assign(convention=_text(rows, "convention"))
    artifacts = latest_artifacts(rows, HEATMAP_METRIC, ["convention"])
    artifacts = artifacts.assign(**{p: numeric_param(artifacts, p) for p in ("snr_min", "snr_max", "num_points")})
    loaded, problems = {}, []
    for convention in _ordered(list(artifacts["convention"]), CONVENTION_ORDER):
        line = artifacts[artifacts["convention"] == convention].iloc[0]
        array, problem = load_array(run_dir, line["artifact"], is_heatmap)
        if problem:
            problems.append(f"{convention}: {problem}")
            continue
        snr_min, snr_max, m = line["snr_min"], line["snr_max"], line["num_points"]
        if pd.isna(m) or int(m) != array.shape[1]:
            problems.append(f"{convention}: num_points {format_value(m)} vs array shape {list(array.shape)}")
            continue
        try:
            loaded[convention] = (array, heatmap_grid(snr_min, snr_max, int(m)))
        except ValueError as exc:
            problems.append(f"{convention}: {exc}")
    return loaded, problems


def _heatmap_items(heatmaps: dict, problems: list[str], points: pd.DataFrame, out: Out) -> list[Note | FigureRef]:
    items: list[Note | FigureRef] = []
    if problems:
        items.append(Note("Heatmaps skipped: " + "; ".join(problems)))
    if not heatmaps:
        return [*items, Note(f"No usable {HEATMAP_METRIC} array: heatmap figures skipped.")]
    for convention, (heatmap, grid) in heatmaps.items():
        drawn = points[points["convention"] == convention]
        paths = {}
        for path in _ordered(list(drawn["path"]), PATH_ORDER):
            line = drawn[drawn["path"] == path]
            paths[path] = (line["snr_small"].to_numpy(dtype=float), line["snr_large"].to_numpy(dtype=float))
        panels = dict(zip(HEATMAP_TITLES, heatmap, strict=True))
        fig = figures.log_grid_heatmaps(
            panels,
            grid,
            grid,
            paths,
            PATH_STYLES,
            xlabel="γ1 (SNR of the small scale)",
            ylabel="γ0 (SNR of the large scale)",
        )
        data = pd.concat(
            [heatmap_long(heatmap, grid, convention).assign(kind="heatmap"), drawn.assign(kind="path")],
            ignore_index=True,
        ).reindex(columns=["kind", "convention", "scale", "path", "i", "snr_large", "snr_small", "value"])
        missing = [p for p in PATH_ORDER if p not in paths]
        caption = (
            f"Discretization error over (γ0, γ1) with {CONVENTION_WORDS.get(convention, convention)}: large-scale, "
            "small-scale and total error; colour on a log scale (LogNorm; blank: non-positive), both axes log-SNR "
            "labelled with the grid's SNR values; lines: the paths (dashed green diagonal γ1 = γ0, red DP on the "
            "total error, cyan dotted DP on the large-scale error only)"
            + (f"; not recorded: {', '.join(missing)}" if missing else "")
            + "."
        )
        items.append(out.figure(fig, f"heatmap_{convention}", data, caption))
    return items


def _path_items(heatmaps: dict, points: pd.DataFrame, errors: pd.DataFrame, out: Out) -> list[Note | Table]:
    if points.empty:
        return [Note(f"No {PATH_METRIC} rows: path tables skipped.")]
    table = path_table(points, errors)
    caption = (
        "Per convention and path: its recorded cumulative error (total and large-scale: the sum over γ0 of the "
        "heatmap at the path) and γ1 at every γ0 of the grid (columns)."
    )
    items: list[Note | Table] = [
        Table(caption, table, name=out.name("paths")),
        Note(convention_note(convention_differences(points))),
        Note(path_claims_note(points)),
    ]
    if len(errors):
        items.append(Note(optimality_note(errors)))
    checks = []
    for line in errors.itertuples(index=False):
        if line.convention not in heatmaps:
            continue
        path = points[(points["convention"] == line.convention) & (points["path"] == line.path)]
        if path.empty:
            continue
        heatmap, grid = heatmaps[line.convention]
        again = path_error_from_heatmap(heatmap, grid, path["snr_large"], path["snr_small"])
        for error in ERRORS:
            recorded = getattr(line, f"error_{error}")
            if pd.notna(recorded) and recorded:
                checks.append(abs(again[error] / recorded - 1))
    if checks:
        worst = max(checks)
        items.append(
            Note(
                f"Path errors recomputed from the heatmap (plain sum over the path's points): largest relative "
                f"difference from the recorded ones {worst:.2g} over {len(checks)} values"
                + (": they agree." if worst < 1e-6 else ": they do NOT agree.")
            )
        )
    return items


def _quality_items(df: pd.DataFrame, errors: pd.DataFrame, out: Out) -> list[Note | Table | FigureRef]:
    rows = quality_rows(df)
    table = quality_table(rows, errors)
    items: list[Note | Table | FigureRef] = []
    if table.empty:
        items.append(Note("No generation-quality rows (fid, kid, params per path): quality table skipped."))
    else:
        caption = (
            "Sampling along each path (and the single-scale baseline with the same parameter count): domain FID "
            "and FID-infinity with their intervals, the paired difference FID(path) - FID(baseline) (same noise), "
            "KID ± std, the path's theoretical error per heatmap convention (blank for the baseline), the sample "
            f"counts and the feature extractor; sorted by FID. {FID_CAPTION} {DELTA_CAPTION}"
        )
        items += [Table(caption, table, name=out.name("quality")), Note(findings_note(table))]
    items += _sample_items(rows, list(table["label"]), out)
    return items


def _sample_items(rows: pd.DataFrame, order: list[str], out: Out) -> list[Note | FigureRef]:
    artifacts = latest_artifacts(rows, "samples", ["label"])
    if artifacts.empty:
        return [Note("No samples arrays per path: sample grids skipped.")]
    rank = {label: i for i, label in enumerate(order)}
    artifacts = artifacts.assign(_r=artifacts["label"].map(rank).fillna(len(rank))).sort_values(["_r", "label"])
    entries = [
        (line.label, line.artifact, {"path": line.path, "convention": line.convention})
        for line in artifacts.itertuples(index=False)
    ]
    caption = (
        f"The first {GRID_IMAGES} unconditional samples per path (best FID first), the baseline's beside the "
        "LIFT paths'; [-1, 1] shown as [0, 1]."
    )
    return _image_grid(entries, GRID_IMAGES, out, "samples", caption)


def _image_grid(
    entries: Sequence[tuple[str, str, dict]], take: int, out: Out, name: str, caption: str
) -> list[Note | FigureRef]:
    """One row of images per ``(label, artifact, sources)`` entry (the first ``take`` of each saved batch), with
    a note naming the arrays that are missing or not ``[B, 1|3, H, W]``."""
    loaded, sources, problems = {}, {}, []
    for label, artifact, source in entries:
        array, problem = load_array(out.run_dir, artifact, is_image_batch)
        if problem:
            problems.append(problem)
            continue
        loaded[label], sources[label] = array[:take], {**source, "artifact": artifact}
    items: list[Note | FigureRef] = []
    if problems:
        items.append(Note(f"Sample arrays skipped (missing or not [B, 1|3, H, W]): {'; '.join(problems)}"))
    if loaded:
        items.append(out.figure(figures.image_rows(loaded, take), name, image_index(loaded, sources), caption))
    return items


def _density_items(df: pd.DataFrame, out: Out) -> list[Note | FigureRef]:
    curves = density_curves(df)
    if curves.empty:
        return [Note(f"No {DENSITY_METRIC} rows: the teacher's error density was not recorded.")]
    labels = _ordered(list(curves["convention"]), CONVENTION_ORDER)
    positive = bool((curves["value"] > 0).all())
    fig = figures.line_panels(
        curves.assign(label=curves["convention"], metric=DENSITY_METRIC),
        "t",
        [DENSITY_METRIC],
        labels,
        log_y=[DENSITY_METRIC] if positive else [],
        ncols=1,
    )
    words = "; ".join(f"{c}: {CONVENTION_WORDS.get(c, c)}" for c in labels)
    caption = (
        "The single-scale teacher's discretization-error density vs timestep t, one line per chain-rule factor "
        f"({words})" + ("; log y." if positive else "; linear y (some values are not positive).")
    )
    return [out.figure(fig, "error_density", curves, caption), Note(density_note(curves))]


def _schedule_items(df: pd.DataFrame, out: Out) -> list[Note | Table | FigureRef]:
    rows = schedule_rows(df)
    if rows.empty:
        return [Note("No schedule rows (teacher with a spacing): the single-scale schedules were not recorded.")]
    items: list[Note | Table | FigureRef] = []
    styles = {spacing_label(s): style for s, style in SPACING_STYLES.items()}
    grids = schedule_grids(rows)
    if grids.empty:
        items.append(Note(f"No {SCHEDULE_TIMESTEP} rows: schedule plot skipped."))
    else:
        labels = [spacing_label(s) for s in _ordered(list(grids["spacing"]), SPACING_ORDER)]
        panels = [f"{s:g} steps" for s in sorted(grids["steps"].unique())]
        curves = grids.assign(metric=[f"{s:g} steps" for s in grids["steps"]], value=grids["t"])
        fig = figures.line_panels(curves, "k", panels, labels, styles, ncols=3)
        caption = "Each schedule's timesteps t vs step index k, one panel per step count, one line per spacing."
        items.append(out.figure(fig, "schedules", grids, caption))
    table = schedule_table(rows)
    if table.empty:
        items.append(Note("No schedule quality rows: FID table skipped."))
        return items
    caption = (
        "Per step count and spacing: domain FID and FID-infinity with their intervals, KID, class accuracy and "
        "diversity, schedule_cost (the DP's objective with the derived factor, evaluated on that grid: lowest for "
        f"dp), network evaluations per sample, the sample counts and the feature extractor. {FID_CAPTION}"
    )
    items += [
        Table(caption, table, name=out.name("schedules")),
        Note(schedule_note(table, deltas=schedule_deltas(rows))),
    ]
    curves = quality_curves(table, "label", "steps")
    if len(curves):
        labels = [spacing_label(s) for s in _ordered(list(table["spacing"]), SPACING_ORDER)]
        fig = quality_figure(curves, "steps", labels, styles)
        caption = (
            "Class accuracy, class diversity and FID (bars: 95% interval at this n) vs steps, one line per spacing."
        )
        items.append(out.figure(fig, "schedule_quality", curves.rename(columns={"label": "spacing"}), caption))
    items += _schedule_sample_items(rows, out)
    return items


def _schedule_sample_items(rows: pd.DataFrame, out: Out) -> list[Note | FigureRef]:
    artifacts = latest_artifacts(rows, "samples", ["steps", "spacing"])
    if artifacts.empty:
        return [Note("No schedule samples arrays: sample grid skipped.")]
    artifacts = artifacts.assign(_s=_rank(artifacts["spacing"], SPACING_ORDER)).sort_values(["steps", "_s"])
    entries = [
        (f"{line.spacing}, {line.steps:g} steps", line.artifact, {"spacing": line.spacing, "steps": line.steps})
        for line in artifacts.itertuples(index=False)
    ]
    caption = (
        f"The first {NUM_CLASSES} samples (classes 0-{NUM_CLASSES - 1}) per step count and spacing, same noise "
        "in every row; [-1, 1] shown as [0, 1]."
    )
    return _image_grid(entries, NUM_CLASSES, out, "schedule_samples", caption)


def _timing_items(df: pd.DataFrame, out: Out) -> list[Note | Table]:
    table = timing_table(df)
    if table.empty:
        return [
            Note(f"No {TIMING_METRIC} rows: the estimator timing runs in a separate serial pass, not in these rows.")
        ]
    caption = (
        "Seconds per vHv estimate (Hutchinson, the given probes over a batch of n) with the probes batched by vmap "
        "or looped, and the recorded loop / vmap speedup."
    )
    return [Table(caption, table, name=out.name("timing"))]
