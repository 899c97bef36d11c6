"""One declaration per metric: which way is better, what kind of number it is, how the gate compares it.

Every metric a benchmark records is declared exactly once, next to the code that computes it
(``declare(Metric(...))`` at module level in ``metrics/distribution.py``, ``metrics/trajectory.py``,
``metrics/fid.py`` and in each family module for the family's own bookkeeping). Readers (``diffbench compare``,
radar normalisation, report tables and curves) ask :func:`get`; an undeclared name raises, so a new metric
cannot reach a report or the regression gate with a guessed meaning.

This module is a leaf: it imports nothing of diffbench and nothing heavy, so ``diffbench compare`` stays fast and
no import circle can run through it. :func:`load_declarations` imports the declaring modules by name on first
use (the metrics modules and every family found by ``diffbench.families.discover``).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

LOWER, HIGHER, NEITHER = "lower", "higher", "neither"
DIRECTIONS = (LOWER, HIGHER, NEITHER)

QUALITY, TIMING, BOOKKEEPING, ARRAY = "quality", "timing", "bookkeeping", "array"
KINDS = (QUALITY, TIMING, BOOKKEEPING, ARRAY)

# How the regression gate compares a metric (diffbench.report.compare):
#   default  - one-sided in its worse direction (two-sided when NEITHER) at the run's --tolerance;
#   timing   - one-sided, and loose: machines and their load differ, a timing is never "changed" two-sided;
#   exact    - any change fails (parameter counts, FLOPs: a change there is a different model);
#   info     - shown, never fails (interval ends, spreads: they move with their estimate).
TOLERANCE_CLASSES = ("default", "timing", "exact", "info")
TIMING_TOLERANCE = 1.0  # a timing may double before it counts as a regression


@dataclass(frozen=True)
class Metric:
    """What a recorded number means.

    ``direction``: which way is better (``"lower"``, ``"higher"``, or ``"neither"`` for descriptive numbers);
    ``kind``: ``quality`` (what the benchmark is about), ``timing`` (seconds), ``bookkeeping`` (counts,
    parameters, interval ends) or ``array`` (a row pointing at a saved array); ``estimates``: one sentence on
    what the value estimates; ``log_scale``: plot on a log axis (spans orders of magnitude);
    ``tolerance``: the gate's class (see ``TOLERANCE_CLASSES``).
    """

    name: str
    direction: str
    kind: str
    estimates: str
    log_scale: bool = False
    tolerance: str = "default"

    def __post_init__(self) -> None:
        if self.direction not in DIRECTIONS:
            raise ValueError(f"metric {self.name!r}: direction must be one of {DIRECTIONS}, got {self.direction!r}")
        if self.kind not in KINDS:
            raise ValueError(f"metric {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.tolerance not in TOLERANCE_CLASSES:
            raise ValueError(
                f"metric {self.name!r}: tolerance must be one of {TOLERANCE_CLASSES}, got {self.tolerance!r}"
            )
        if self.kind == TIMING and (self.direction != LOWER or self.tolerance != "timing"):
            raise ValueError(f"timing metric {self.name!r} must be lower-is-better with the 'timing' tolerance")


METRICS: dict[str, Metric] = {}

# Modules whose import declares metrics; family modules are found by diffbench.families.discover().
DECLARING_MODULES = (
    "diffbench.metrics.distribution",
    "diffbench.metrics.trajectory",
    "diffbench.metrics.fid",
    "diffbench.metrics.conditional",
    "diffbench.metrics.noise_scale",
    "diffbench.metrics.manifold",
    "diffbench.metrics.embedding",
    "diffbench.attention",
    "diffbench.determinism",
)
FAMILIES_PACKAGE = "diffbench.families"
_loaded = False


def declare(*metrics: Metric) -> tuple[Metric, ...]:
    """Register ``metrics``. Declaring a name twice with a different meaning is an error (each idea in one
    place); an identical re-declaration (a module imported twice) is a no-op."""
    for metric in metrics:
        known = METRICS.get(metric.name)
        if known is not None and known != metric:
            raise ValueError(f"metric {metric.name!r} is declared twice with different meanings: {known} vs {metric}")
        METRICS[metric.name] = metric
    return metrics


def load_declarations() -> dict[str, Metric]:
    """Import every declaring module (metrics and families) once; returns the registry."""
    global _loaded
    if not _loaded:
        for module in DECLARING_MODULES:
            importlib.import_module(module)
        importlib.import_module(FAMILIES_PACKAGE).discover()
        _loaded = True
    return METRICS


def get(name: str) -> Metric:
    """The declaration of ``name``; ``KeyError`` naming the fix when it has none."""
    if name not in METRICS:
        load_declarations()
    if name not in METRICS:
        raise KeyError(
            f"metric {name!r} is not declared; declare it with diffbench.metrics.registry.declare(Metric(...)) "
            "next to the code that computes it"
        )
    return METRICS[name]


def find(name: str) -> Metric | None:
    """Like :func:`get`, but ``None`` for an undeclared name (e.g. rows of an old baseline)."""
    try:
        return get(name)
    except KeyError:
        return None


def by_kind(kind: str) -> list[str]:
    """Declared names of one kind, sorted."""
    return sorted(name for name, metric in load_declarations().items() if metric.kind == kind)
