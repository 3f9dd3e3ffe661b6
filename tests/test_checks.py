"""The shared validators in bbjax._checks."""

import math

import pytest

from bbjax import _checks
from bbjax.errors import DataError, InvalidArgument


@pytest.mark.parametrize("value", [0, -1, 1.5, True, "3", None, math.nan])
def test_check_count_refuses(value):
    with pytest.raises(DataError, match="n must be an integer >= 1"):
        _checks.check_count("n", value, error=DataError)


def test_check_count_upper_and_conversion():
    assert _checks.check_count("n", 3, upper=3) == 3
    with pytest.raises(InvalidArgument, match="at most 3"):
        _checks.check_count("n", 4, upper=3)


@pytest.mark.parametrize("check,good,bad", [
    (_checks.check_positive, [1e-9, 2], [0, -1, math.inf, math.nan, True, "1"]),
    (_checks.check_nonnegative, [0, 2.5], [-1e-9, math.inf, math.nan, False]),
    (_checks.check_open_unit, [0.5], [0, 1, math.nan, True]),
    (_checks.check_closed_unit, [0, 1, 0.3], [-0.1, 1.1, math.nan]),
])
def test_real_checks(check, good, bad):
    for value in good:
        assert check("p", value) == float(value)
    for value in bad:
        with pytest.raises(InvalidArgument, match="p must be"):
            check("p", value)
