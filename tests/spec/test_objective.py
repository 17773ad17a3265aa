"""One comparator for "better" under min and max: the sign conventions every ranking relies on."""
import math

from raysweep.spec.objective import best, better, gain, ranked


def test_better_gain_best_and_ranked_agree_under_both_modes():
    assert better(0.1, 0.2, "min") and not better(0.1, 0.2, "max")
    assert better(0.9, 0.8, "max") and not better(0.9, 0.8, "max", by=0.1 + 1e-12)
    assert gain(0.5, 0.4, "min") > 0 > gain(0.5, 0.4, "max")
    assert best([3, 1, 2], "min") == 1 and best([3, 1, 2], "max") == 3
    values = [0.3, None, math.nan, 0.1, 0.2, math.inf]
    assert ranked(values, "min") == [0.1, 0.2, 0.3]  # unscored and non-finite values are left out
    assert ranked(values, "max") == [0.3, 0.2, 0.1]
