"""Matrix selections given on the command line (the seeds' ``--compare_specific_sizes`` / ``--focus_size_range``).

Pure parsing and filtering; the pytest plugin turns ``ValueError`` into a usage error.
"""

from __future__ import annotations

from collections.abc import Sequence


def check_size_factor(value: float) -> float:
    if not 0 < value <= 1:
        raise ValueError(f"size factor must be in (0, 1], got {value:g}")
    return value


def parse_size_factors(text: str) -> tuple[float, ...]:
    """``"0.1,0.5,1.0"`` -> ``(0.1, 0.5, 1.0)``; every value must lie in (0, 1]."""
    values = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"size factor must be a number in (0, 1], got {part!r}") from None
        values.append(check_size_factor(value))
    if not values:
        raise ValueError(f"no size factors in {text!r}")
    return tuple(dict.fromkeys(values))


def parse_size_range(text: str) -> tuple[float, float]:
    """``"0.1-0.5"`` -> ``(0.1, 0.5)``, both ends inclusive and in (0, 1]."""
    low, sep, high = text.partition("-")
    try:
        bounds = (float(low), float(high)) if sep else None
    except ValueError:
        bounds = None
    if bounds is None:
        raise ValueError(f"size range must look like 0.1-0.5, got {text!r}")
    low_f, high_f = (check_size_factor(v) for v in bounds)
    if low_f > high_f:
        raise ValueError(f"size range must be increasing, got {text!r}")
    return low_f, high_f


def select_size_factors(
    defaults: Sequence[float], factors: str | None = None, size_range: str | None = None
) -> tuple[float, ...]:
    """The size factors to run: ``factors`` if given (else ``defaults``), kept within ``size_range`` if given.
    An empty result is an error naming what was asked for."""
    chosen = parse_size_factors(factors) if factors else tuple(defaults)
    if size_range:
        low, high = parse_size_range(size_range)
        chosen = tuple(s for s in chosen if low <= s <= high)
    if not chosen:
        raise ValueError(
            f"no size factor selected: --size-factors {factors or ','.join(map(str, defaults))} "
            f"--size-range {size_range} leaves nothing"
        )
    return chosen
