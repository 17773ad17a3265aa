"""Searchers against toy objectives, driven through Tune's Searcher interface (no cluster needed)."""
import math

import numpy as np

from raysweep.spec import Space, Spec
from raysweep.sweep.hyperopt_space import from_hyperopt
from raysweep.sweep.searchers import ConstrainedHyperOpt, build_list, build_searcher, starting_points

HEAD = {"name": "t", "task": "digits_mlp", "metric": {"name": "val_loss", "mode": "min"}}


def spec(parameters, **extra):
    return Spec.model_validate({**HEAD, "parameters": parameters, **extra})


def drive(searcher, space, objective, n):
    """Ask for n trials one by one, report objective(config), return the flat configs in order."""
    seen = []
    for i in range(n):
        config = from_hyperopt(space, searcher.suggest(f"t{i}"))
        seen.append(config)
        searcher.on_trial_complete(f"t{i}", {"val_loss": objective(config)})
    return seen


def test_tpe_concentrates_on_the_good_region():
    # optimum at lr = 1e-3, the middle of six decades: random search's distance to it is uniform on [0, 3]
    s = spec({"lr": {"distribution": "loguniform", "min": 1e-6, "max": 1.0},
              "x": {"distribution": "uniform", "min": -5, "max": 5}}, search={"method": "random", "seed": 2})
    space = Space(s)
    objective = lambda c: (math.log10(c["lr"]) + 3) ** 2 + c["x"] ** 2  # noqa: E731
    distance = lambda c: abs(math.log10(c["lr"]) + 3)  # noqa: E731
    tpe = drive(ConstrainedHyperOpt(space, "val_loss", "min", 2, 10), space, objective, 80)
    random = build_list(s, space, 80).configs
    assert np.median([distance(c) for c in tpe[-30:]]) < 1.0
    assert np.median([distance(c) for c in random[-30:]]) > 1.0  # the same check fails for random search
    assert min(objective(c) for c in tpe) < min(objective(c) for c in random)


def test_tpe_never_runs_an_infeasible_config_and_learns_from_rejections():
    s = spec({"a": {"distribution": "uniform", "min": 0, "max": 1}, "b": {"distribution": "uniform", "min": 0, "max": 1}},
             constraints=["a + b < 0.5"])
    space = Space(s)
    searcher = ConstrainedHyperOpt(space, "val_loss", "min", 0, 5)
    configs = drive(searcher, space, lambda c: c["a"] + c["b"], 30)
    assert all(c["a"] + c["b"] < 0.5 for c in configs)
    assert searcher.rejected > 0  # infeasible proposals were answered inside the searcher, not run
    assert len(searcher._hpopt_trials.trials) == 30 + searcher.rejected


def test_tpe_takes_starting_points_and_earlier_results():
    s = spec({"opt": {"values": ["sgd", "adam"]},
              "momentum": {"distribution": "uniform", "min": 0.8, "max": 0.99, "when": {"opt": "sgd"}},
              "lr": {"distribution": "loguniform", "min": 1e-4, "max": 1e-1}})
    space = Space(s)
    points = [{"opt": "sgd", "momentum": 0.9, "lr": 0.01}, {"opt": "adam", "lr": 0.001}]
    earlier = [({"opt": "adam", "lr": 0.002}, 0.1), ({"opt": "sgd", "momentum": 0.95, "lr": 0.05}, 0.5)]
    searcher = ConstrainedHyperOpt(space, "val_loss", "min", 0, 5, points, earlier)
    first = [from_hyperopt(space, searcher.suggest(f"p{i}")) for i in range(2)]
    assert first == points  # starting points run first, in order, with their conditional values
    losses = sorted(x for x in searcher._hpopt_trials.losses() if x is not None)
    assert losses == [0.1, 0.5]  # earlier results are known to TPE without being re-run
    for i, config in enumerate(first):
        searcher.on_trial_complete(f"p{i}", {"val_loss": config["lr"]})
    # past n_initial_points TPE proper reads every label from every trial, the seeded ones included
    # (each lacks the other optimizer's branch)
    later = drive(searcher, space, lambda c: c["lr"], 8)
    assert len(later) == 8 and all(("momentum" in c) == (c["opt"] == "sgd") for c in later)


def test_diverged_results_count_as_bad_for_tpe():
    s = spec({"lr": {"distribution": "loguniform", "min": 1e-4, "max": 1.0}})
    space = Space(s)
    searcher = ConstrainedHyperOpt(space, "val_loss", "min", 0, 3)
    searcher.suggest("a"), searcher.on_trial_complete("a", {"val_loss": 0.3})
    searcher.suggest("b"), searcher.on_trial_complete("b", {"val_loss": math.nan})
    losses = searcher._hpopt_trials.losses()
    assert losses[0] == 0.3 and math.isfinite(losses[1]) and losses[1] > 0.3


def test_list_searcher_runs_given_points_first_then_feasible_draws():
    s = spec({"a": {"distribution": "int", "min": 1, "max": 9}, "b": {"values": [2, 3]}},
             constraints=["a % b == 0"], search={"method": "random", "seed": 1})
    space = Space(s)
    searcher = build_list(s, space, 6, points=[{"a": 4, "b": 2}])
    configs = []
    while (c := searcher.suggest(str(len(configs)))) != "FINISHED":
        configs.append(c)
    assert len(configs) == 6 and configs[0] == {"a": 4, "b": 2}
    assert all(c["a"] % c["b"] == 0 for c in configs)
    assert len({tuple(sorted(c.items())) for c in configs[1:]}) == 5  # 7 feasible configs: no draw twice


def test_pbt_explore_keeps_perturbed_configs_feasible():
    from raysweep.sweep.schedulers import FeasibleExplore

    s = spec({"optimizer": {"values": ["sgd", "adamw"]}, "lr": {"distribution": "loguniform", "min": 1e-3, "max": 3e-2}},
             constraints=["lr < 0.02 or optimizer == 'sgd'"], search={"method": "random"},
             scheduler={"type": "pbt", "mutations": {"lr": {"distribution": "loguniform", "min": 1e-3, "max": 3e-2}}})
    explore = FeasibleExplore(s)
    for value in (0.025, 0.029, 0.021):
        config = explore({"__config": {"optimizer": "adamw", "lr": 0.01}, "lr": value})
        assert config["lr"] < 0.02 and config["__config"]["optimizer"] == "adamw"
    assert explore({"__config": {"optimizer": "sgd", "lr": 0.01}, "lr": 0.025})["lr"] == 0.025  # no constraint on sgd


def test_the_specs_points_run_first_completed_by_draws_under_either_searcher():
    params = {"optimizer": {"values": ["sgd", "adamw"]},
              "momentum": {"distribution": "uniform", "min": 0.8, "max": 0.99, "when": {"optimizer": "sgd"}},
              "lr": {"distribution": "loguniform", "min": 1e-4, "max": 1e-1},
              "dropout": {"distribution": "uniform", "min": 0.0, "max": 0.5}}
    given = [{"optimizer": "adamw", "lr": 0.001}, {"optimizer": "sgd", "momentum": 0.9}]
    for method in ("random", "hyperopt"):
        s = spec(params, search={"method": method, "seed": 3, "num_samples": 6, "points_to_evaluate": given},
                 constraints=["dropout < 0.4"])
        space = Space(s)
        points = starting_points(s, space, [{"optimizer": "adamw", "lr": 0.01, "dropout": 0.1}])
        assert len(points) == 3 and points[2] == {"optimizer": "adamw", "lr": 0.01, "dropout": 0.1}
        for want, got in zip(given, points, strict=False):
            assert got.items() >= want.items() and space.contains(got)  # the rest drawn, inside the constraints
        assert "momentum" in points[1] and "momentum" not in points[0]
        searcher = build_searcher(s, space, 6, points)
        first = [from_hyperopt(space, searcher.suggest(f"t{i}")) if method == "hyperopt" else searcher.suggest(f"t{i}")
                 for i in range(3)]
        assert first == points, method
