"""Comparing two success rates: Newcombe's interval for their difference (chapters 8 and 9)."""
import pytest

from dfa_lib import stats


@pytest.mark.parametrize("k1,n1,k2,n2,expected", [
    (56, 70, 48, 80, (0.0524, 0.3339)),   # Newcombe (1998), Table II, example (a), method 10
    (9, 10, 3, 10, (0.1705, 0.8090)),     # the same table, example (c)
])
def test_difference_interval_matches_newcombe(k1, n1, k2, n2, expected):
    lower, upper = stats.difference_interval(k1, n1, k2, n2)
    assert lower == pytest.approx(expected[0], abs=5e-5)
    assert upper == pytest.approx(expected[1], abs=5e-5)


def test_difference_interval_is_antisymmetric():
    lower, upper = stats.difference_interval(30, 100, 45, 100)
    assert stats.difference_interval(45, 100, 30, 100) == pytest.approx((-upper, -lower))


def test_overlapping_wilson_intervals_are_not_enough_to_call_rates_equal():
    # 0.80 and 0.91 of 100 networks: the two Wilson intervals overlap, the difference's excludes 0
    assert stats.intervals_overlap(stats.wilson_interval(80, 100), stats.wilson_interval(91, 100))
    assert not stats.rates_consistent(80, 100, 91, 100)


@pytest.mark.parametrize("k1,k2", [(0, 0), (100, 100), (73, 65), (29, 35)])
def test_close_rates_are_consistent(k1, k2):
    assert stats.rates_consistent(k1, 100, k2, 100)


def test_bad_counts_are_named():
    with pytest.raises(ValueError, match="k must lie"):
        stats.difference_interval(11, 10, 3, 10)
