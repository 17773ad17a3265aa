"""Ray Tune's contract for a searcher (after its own test_searchers.py: invalid results, save/restore,
concurrency limiter, repeater, reproducibility, reports after the end), run on both of raysweep's
searchers built from a spec, through Tune's Searcher interface."""
import math

import pytest
from ray.tune.search import ConcurrencyLimiter, Repeater, Searcher

from raysweep.spec import Space, Spec
from raysweep.sweep.hyperopt_space import from_hyperopt
from raysweep.sweep.searchers import build_searcher

PARAMS = {"optimizer": {"values": ["sgd", "adamw"]},
          "momentum": {"distribution": "uniform", "min": 0.5, "max": 0.99, "when": {"optimizer": "sgd"}},
          "lr": {"distribution": "loguniform", "min": 1e-4, "max": 1e-1},
          "layers": {"distribution": "int", "min": 1, "max": 4}}


def make(method, seed=0, num_samples=12):
    spec = Spec.model_validate({"name": "c", "task": "digits_mlp", "metric": {"name": "val_loss", "mode": "min"},
                                "parameters": PARAMS, "constraints": ["lr < 0.05 or optimizer == 'sgd'"],
                                "search": {"method": method, "seed": seed, "num_samples": num_samples,
                                           "n_initial_points": 3}})
    space = Space(spec)
    return build_searcher(spec, space, num_samples), space


def flat(space, method, config):
    return from_hyperopt(space, config) if method == "hyperopt" else config


def objective(config):
    return abs(math.log10(config["lr"]) + 2.5) + 0.1 * config["layers"]


METHODS = ["random", "hyperopt"]


@pytest.mark.parametrize("method", METHODS)
def test_invalid_results_neither_break_it_nor_win(method):
    searcher, space = make(method)
    invalid = [math.nan, math.inf, -math.inf, None]
    seen = []
    for i in range(10):
        config = flat(space, method, searcher.suggest(f"t{i}"))
        assert space.contains(config)
        value = invalid[i] if i < len(invalid) else objective(config)
        searcher.on_trial_complete(f"t{i}", {} if value is None else {"val_loss": value})
        seen.append(config)
    assert len(seen) == 10
    if method == "hyperopt":  # TPE was told nan and +-inf are worse than every real result (a missing metric: failed)
        losses = [t["result"].get("loss") for t in searcher._hpopt_trials.trials]
        real = [x for x in losses if x is not None and x < 100]
        penalties = [x for x in losses if x is not None and x >= 100]
        assert len(real) == 6 and len(penalties) >= 3 and min(penalties) > max(real)


@pytest.mark.parametrize("method", METHODS)
def test_save_and_restore_continue_where_it_stopped(method, tmp_path):
    searcher, space = make(method)
    for i in range(4):
        config = flat(space, method, searcher.suggest(f"t{i}"))
        searcher.on_trial_complete(f"t{i}", {"val_loss": objective(config)})
    searcher.save(str(tmp_path / "searcher.pkl"))
    restored, _ = make(method)
    restored.restore(str(tmp_path / "searcher.pkl"))
    ahead = [flat(space, method, searcher.suggest(f"n{i}")) for i in range(3)]
    again = [flat(space, method, restored.suggest(f"n{i}")) for i in range(3)]
    assert again == ahead  # the same next configs: nothing re-run, nothing skipped


@pytest.mark.parametrize("method", METHODS)
def test_the_concurrency_limiter_holds_suggestions_until_a_trial_ends(method):
    searcher, space = make(method)
    limited = ConcurrencyLimiter(searcher, max_concurrent=2)
    a, b = limited.suggest("a"), limited.suggest("b")
    assert a is not None and b is not None and limited.suggest("c") is None
    limited.on_trial_complete("a", {"val_loss": objective(flat(space, method, a))})
    assert limited.suggest("c") is not None


@pytest.mark.parametrize("method", METHODS)
def test_the_repeater_runs_each_config_the_given_times(method):
    searcher, space = make(method)
    repeater = Repeater(searcher, repeat=3, set_index=False)
    configs = [flat(space, method, repeater.suggest(f"t{i}")) for i in range(3)]
    assert configs[0] == configs[1] == configs[2]
    for i, config in enumerate(configs):
        repeater.on_trial_complete(f"t{i}", {"val_loss": objective(config)})
    assert flat(space, method, repeater.suggest("t3")) != configs[0]


@pytest.mark.parametrize("method", METHODS)
def test_same_seed_same_configs_other_seed_other_configs(method):
    def run(seed):
        searcher, space = make(method, seed)
        out = []
        for i in range(6):
            config = flat(space, method, searcher.suggest(f"t{i}"))
            searcher.on_trial_complete(f"t{i}", {"val_loss": objective(config)})
            out.append(config)
        return out

    assert run(1) == run(1) and run(1) != run(2)


@pytest.mark.parametrize("method", METHODS)
def test_reports_after_a_trial_ended_and_the_end_of_the_list_are_harmless(method):
    searcher, space = make(method, num_samples=2)
    config = flat(space, method, searcher.suggest("t0"))
    searcher.on_trial_result("t0", {"val_loss": 1.0, "training_iteration": 1})
    searcher.on_trial_complete("t0", {"val_loss": objective(config)})
    searcher.on_trial_result("t0", {"val_loss": 0.5, "training_iteration": 2})  # too late: ignored
    searcher.suggest("t1")
    if method == "random":  # a list of num_samples configs: then finished
        assert searcher.suggest("t2") == Searcher.FINISHED
