"""Matrix families: one module per family owns its specs, model ids, options, metric vocabulary and cells.

A family module (``diffbench/families/<name>.py``) defines ``FAMILY = Family(...)``: its name (also its pytest
marker), the question it answers, its command-line options, and the builder of its report sections (which
imports the family's report module only when a report is built, so workers never load the plotting stack). Its
functions compute a cell and return :class:`Measurements`; ``benchmarks/bench_<name>.py`` only parametrizes,
records and asserts. The pytest plugin finds families with :func:`discover`: adding a family is one module here,
one report module and one bench module, and nothing else names it.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

    from diffbench.profiles import Profile
    from diffbench.report.sections import Section

# Option values as the plugin hands them over: {dest: value} for every option any family declared.
OptionValues = Mapping[str, Any]
SectionBuilder = Callable[["pd.DataFrame", Path], list["Section"]]


@dataclass(frozen=True)
class Option:
    """A command-line option of a family (``--size-factors``). ``check`` validates a given value and raises
    ``ValueError`` naming it (the plugin turns that into a usage error, exit code 4)."""

    flag: str
    help: str
    metavar: str | None = None
    check: Callable[[str], object] | None = None

    @property
    def dest(self) -> str:
        return self.flag.lstrip("-").replace("-", "_")


@dataclass(frozen=True)
class Family:
    """A matrix family as the plugin and the report see it.

    ``validate(options, profile)`` checks option combinations that need the profile (e.g. a size range that
    leaves nothing) and raises ``ValueError``; ``sections(df, run_dir)`` builds the family's report sections.
    Options are shared by identity: a family reusing another's option lists the same ``Option`` object.
    ``shard_group(nodeid)`` names the trained artifact a cell needs, so ``diffbench submit`` puts the cells that
    share one on the same cluster shard (which builds it once); cells of one key stay together, keys may be
    shared across families. It gets the node id without its ``--seeds`` id (each seed is a group of its own).
    ``None``: every cell is its own group. ``two_sided``: ``(param, value)`` pairs marking rows that
    ``diffbench compare`` gates two-sided whatever their metric's direction (rows where closer is not better).
    """

    name: str
    question: str
    seeds: tuple[str, ...] = ()
    options: tuple[Option, ...] = ()
    validate: Callable[[OptionValues, Profile], None] | None = None
    sections: SectionBuilder | None = None
    shard_group: Callable[[str], str] | None = None
    two_sided: tuple[tuple[str, Any], ...] = ()


@dataclass
class Measurements:
    """The rows of one cell: metrics under the cell's ``params``, points of a series (extra params such as
    ``t=...``), arrays, and non-key ``context`` (e.g. a feature extractor's weight fingerprint) that describes a
    measurement without becoming part of its identity in compare."""

    params: dict[str, Any]
    rows: list[tuple[str, float, dict[str, Any], dict[str, Any] | None]] = field(default_factory=list)
    arrays: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)

    def add(self, metric: str, value: float, *, context: dict[str, Any] | None = None, **extra: Any) -> None:
        self.rows.append((metric, float(value), {**self.params, **extra}, context))

    def update(self, metrics: Mapping[str, float], *, context: dict[str, Any] | None = None, **extra: Any) -> None:
        for name, value in metrics.items():
            self.add(name, value, context=context, **extra)

    def array(self, name: str, array: Any, **extra: Any) -> None:
        self.arrays.append((name, array, {**self.params, **extra}))

    def __getitem__(self, metric: str) -> float:
        """The value of ``metric`` recorded under the cell's own params (not a series point)."""
        for name, value, params, _ in self.rows:
            if name == metric and params == self.params:
                return value
        raise KeyError(f"no scalar {metric!r} in this cell; recorded: {sorted({r[0] for r in self.rows})}")

    def series(self, metric: str) -> list[float]:
        """Every value recorded for ``metric`` (a series' points in recording order)."""
        return [value for name, value, _, _ in self.rows if name == metric]

    def __iter__(self) -> Iterator[tuple[str, float, dict[str, Any], dict[str, Any] | None]]:
        return iter(self.rows)


_FAMILIES: dict[str, Family] = {}


def discover() -> dict[str, Family]:
    """Every family module of this package (those defining ``FAMILY``), by name, in name order."""
    if not _FAMILIES:
        found = {}
        for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            family = getattr(importlib.import_module(f"{__name__}.{info.name}"), "FAMILY", None)
            if isinstance(family, Family):
                found[family.name] = family
        _FAMILIES.update(found)
    return dict(_FAMILIES)


def get_family(name: str) -> Family:
    families = discover()
    if name not in families:
        raise ValueError(f"unknown family {name!r}; available: {', '.join(families)}")
    return families[name]


def all_options() -> list[Option]:
    """The distinct options of every family, in family order (an option shared by two families once)."""
    seen: dict[str, Option] = {}
    for family in discover().values():
        for option in family.options:
            known = seen.setdefault(option.flag, option)
            if known is not option:
                raise ValueError(f"option {option.flag} is declared by two families differently; share the object")
    return list(seen.values())


def _declare_shared() -> None:
    from diffbench.metrics.registry import ARRAY, NEITHER, Metric, declare

    declare(Metric("samples", NEITHER, ARRAY, "a model's final samples, kept as an array beside the report"))


_declare_shared()
