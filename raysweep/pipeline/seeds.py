"""Multi-seed re-runs (README, "How raysweep tunes": seed statistics): the same configs under several seeds, judged
by their mean, with a 95 % interval and a check that the ranking holds seed by seed."""
from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

from ..spec.objective import score


@dataclass
class ConfigStats:
    config_id: int
    config: dict          # parameter values (no seed)
    values: dict          # seed -> the run's best metric value (None if it diverged)
    mean: float | None
    std: float | None     # sample standard deviation (n - 1)
    ci95: tuple | None    # Student-t interval of the mean
    diverged: int

    def to_dict(self) -> dict:
        return asdict(self)


def interval(values: list[float], level: float = 0.95) -> tuple[float, float, float]:
    """(mean, sample std, half-width of the Student-t interval) of at least two values."""
    from scipy.stats import t

    n = len(values)
    mean, std = statistics.fmean(values), statistics.stdev(values)
    return mean, std, t.ppf((1 + level) / 2, n - 1) * std / math.sqrt(n)


def summarize(configs: list[dict], runs: list[tuple[int, int, float | None]], mode: str) -> dict:
    """`runs` = (config index, seed, value). Configs ranked by mean (any diverged seed ranks a config
    last); `stable` when the winner is also the best config on every seed."""
    stats = []
    for i, config in enumerate(configs):
        values = {seed: v for c, seed, v in runs if c == i}
        finite = [v for v in values.values() if v is not None and math.isfinite(v)]
        mean = std = ci = None
        if len(finite) >= 2:
            mean, std, half = interval(finite)
            ci = (mean - half, mean + half)
        elif finite:
            mean = finite[0]
        stats.append(ConfigStats(i, config, values, mean, std, ci, len(values) - len(finite)))
    ranked = sorted(stats, key=lambda s: (s.diverged > 0, s.mean is None, -score(s.mean or 0, mode)))
    winner = ranked[0]
    seeds = sorted({seed for _, seed, _ in runs})
    wins = 0
    for seed in seeds:
        on_seed = [(-score(s.values[seed], mode), s.config_id) for s in stats
                   if s.values.get(seed) is not None and math.isfinite(s.values[seed])]
        wins += bool(on_seed) and min(on_seed)[1] == winner.config_id
    overlap = [s.config_id for s in ranked[1:] if s.ci95 and winner.ci95 and
               s.ci95[0] <= winner.ci95[1] and winner.ci95[0] <= s.ci95[1]]
    return {"mode": mode, "ranked": [s.to_dict() for s in ranked], "winner": winner.config_id,
            "winner_seed_wins": wins, "seeds": seeds, "stable": wins == len(seeds) and winner.diverged == 0,
            "overlapping": overlap}


def warning(summary: dict) -> str | None:
    """One line when the ranking is not to be trusted, else None."""
    if summary["stable"]:
        return None
    n, wins = len(summary["seeds"]), summary["winner_seed_wins"]
    text = f"ranking not stable across seeds: the winner (config {summary['winner']}) is best on {wins} of {n} seeds"
    if summary["overlapping"]:
        text += f"; its 95% interval overlaps config(s) {', '.join(map(str, summary['overlapping']))}"
    return text + "; consider more seeds (stages.seeds.num_seeds)"
