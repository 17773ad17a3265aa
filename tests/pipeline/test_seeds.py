"""Multi-seed statistics: mean, sample std, Student-t 95 % interval, winner by mean, stability."""
import math

import numpy as np
from scipy import stats

from raysweep.pipeline.seeds import summarize, warning

CONFIGS = [{"lr": 1e-3}, {"lr": 3e-3}, {"lr": 1e-2}]


def test_stats_and_winner_by_mean_not_by_single_best_seed():
    runs = [(0, 1, 0.95), (0, 2, 0.96), (0, 3, 0.97),   # mean 0.96, steady
            (1, 1, 0.99), (1, 2, 0.90), (1, 3, 0.91),   # the single best run, lower mean
            (2, 1, 0.94), (2, 2, 0.95), (2, 3, 0.93)]
    s = summarize(CONFIGS, runs, "max")
    assert s["winner"] == 0 and [c["config_id"] for c in s["ranked"]] == [0, 2, 1]
    for c in s["ranked"]:
        values = np.array([v for i, _, v in runs if i == c["config_id"]])
        half = stats.t.ppf(0.975, 2) * values.std(ddof=1) / math.sqrt(3)
        assert math.isclose(c["mean"], values.mean()) and math.isclose(c["std"], values.std(ddof=1))
        assert np.allclose(c["ci95"], (values.mean() - half, values.mean() + half))
    assert not s["stable"] and s["winner_seed_wins"] == 2  # config 1 won seed 1
    assert "best on 2 of 3 seeds" in warning(s)


def test_minimising_and_a_diverged_seed_ranks_last():
    runs = [(0, 1, 0.10), (0, 2, None), (1, 1, 0.20), (1, 2, 0.21), (2, 1, 0.30), (2, 2, 0.31)]
    s = summarize(CONFIGS, runs, "min")
    assert [c["config_id"] for c in s["ranked"]] == [1, 2, 0]  # 0 has the lowest value but diverged once
    assert s["ranked"][-1]["diverged"] == 1
    assert s["winner"] == 1 and s["winner_seed_wins"] == 1 and not s["stable"]  # config 0 won seed 1


def test_stable_ranking_gives_no_warning():
    runs = [(i, seed, 0.9 - 0.1 * i + 0.001 * seed) for i in range(3) for seed in (1, 2, 3)]
    s = summarize(CONFIGS, runs, "max")
    assert s["winner"] == 0 and s["stable"] and warning(s) is None
