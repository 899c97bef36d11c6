"""Size-factor selection from the command line: parsing, range filtering, and errors naming the value."""

import pytest

from diffbench.selection import parse_size_factors, parse_size_range, select_size_factors

DEFAULTS = (0.01, 0.1, 0.5, 1.0)


def test_explicit_factors_replace_the_defaults_and_keep_order():
    assert select_size_factors(DEFAULTS, "1.0,0.1,0.1") == (1.0, 0.1)


def test_range_filters_inclusively():
    assert select_size_factors(DEFAULTS, None, "0.1-0.5") == (0.1, 0.5)
    assert select_size_factors(DEFAULTS, "0.1,0.5,1.0", "0.5-1") == (0.5, 1.0)


@pytest.mark.parametrize("text, bad", [("0.1,1.5", "1.5"), ("0,0.5", "0"), ("-0.2", "-0.2"), ("0.1,abc", "'abc'")])
def test_values_outside_the_unit_interval_are_named(text, bad):
    with pytest.raises(ValueError, match=rf"size factor must be .*in \(0, 1\], got {bad}"):
        parse_size_factors(text)


@pytest.mark.parametrize("text", ["0.5", "a-b", "0.5-0.1", "0.1-2"])
def test_malformed_ranges_are_rejected(text):
    with pytest.raises(ValueError):
        parse_size_range(text)


def test_an_empty_selection_is_an_error():
    with pytest.raises(ValueError, match="no size factor selected"):
        select_size_factors(DEFAULTS, "0.1", "0.5-1.0")
