"""Searchers: where a trial's config comes from. One builder per method, registered by name."""
from __future__ import annotations

import math

import numpy as np
from ray.tune.search import Searcher
from ray.tune.search.hyperopt import HyperOptSearch

from ..spec import Space, Spec
from .hyperopt_space import from_hyperopt, hyperopt_point, hyperopt_space


class ListSearcher(Searcher):
    """Random and grid search: configs drawn up front from the spec's space with Tune's own domains,
    infeasible draws re-drawn, so every trial satisfies the constraints. Resumable (pickled state)."""

    def __init__(self, configs: list[dict], metric: str, mode: str):
        super().__init__(metric=metric, mode=mode)
        self.configs, self.next = list(configs), 0

    def suggest(self, trial_id):
        if self.next >= len(self.configs):
            return Searcher.FINISHED
        self.next += 1
        return dict(self.configs[self.next - 1])

    def on_trial_complete(self, trial_id, result=None, error=False):
        pass

    def get_state(self):
        return {"configs": self.configs, "next": self.next}

    def set_state(self, state):
        self.configs, self.next = state["configs"], state["next"]

    def save(self, checkpoint_path):
        import cloudpickle

        with open(checkpoint_path, "wb") as f:
            cloudpickle.dump(self.get_state(), f)

    def restore(self, checkpoint_path):
        import cloudpickle

        with open(checkpoint_path, "rb") as f:
            self.set_state(cloudpickle.load(f))


class ConstrainedHyperOpt(HyperOptSearch):
    """HyperOpt TPE over the native (nested, conditional) space. A suggestion that breaks a constraint
    is told to TPE as a bad result at once and re-drawn, so it never costs a trial; diverged trials
    (non-finite metric) count as bad results too. `evaluated` seeds TPE with known (config, metric)
    pairs from an earlier stage without re-running them."""

    MAX_REDRAWS = 1000

    def __init__(self, space: Space, metric: str, mode: str, seed: int, n_initial_points: int,
                 points_to_evaluate: list[dict] = (), evaluated: list[tuple[dict, float]] = ()):
        super().__init__(space=hyperopt_space(space), metric=metric, mode=mode, random_state_seed=seed,
                         n_initial_points=n_initial_points)
        self.rs_space = space
        self.rejected = 0
        self._seed_trials(list(points_to_evaluate), list(evaluated))

    def _seed_trials(self, points, evaluated):
        if not points and not evaluated:
            return
        from hyperopt import JOB_STATE_DONE
        from hyperopt.fmin import generate_trials_to_calculate

        # Tune hands out initial points from the front of the list, last first: reverse them so they
        # run in the given order; results already known go after them, marked done
        vals = [hyperopt_point(self.rs_space, c) for c in reversed(points)] + \
               [hyperopt_point(self.rs_space, c) for c, _ in evaluated]
        self._hpopt_trials = generate_trials_to_calculate(vals)
        for trial in self._hpopt_trials._dynamic_trials:
            # TPE reads every label of the space from every trial; a point lacks those of the branches it
            # did not take (another optimizer's knobs), which HyperOpt's own trials hold as empty
            for label in self.domain.params:
                trial["misc"]["idxs"].setdefault(label, [])
                trial["misc"]["vals"].setdefault(label, [])
        for trial, (_, value) in zip(self._hpopt_trials._dynamic_trials[len(points):], evaluated, strict=False):  # .trials copies
            trial["state"] = JOB_STATE_DONE
            trial["result"] = self._to_hyperopt_result({self.metric: value})
        self._hpopt_trials.refresh()
        self._points_to_evaluate = len(points)

    def _to_hyperopt_result(self, result):
        value = result.get(self.metric)
        if value is None or not math.isfinite(value):
            return {"loss": self._penalty(), "status": "ok"}
        return super()._to_hyperopt_result(result)

    def _penalty(self) -> float:
        losses = [x for x in self._hpopt_trials.losses() if x is not None and math.isfinite(x)]
        return (max(losses) + abs(max(losses)) + 1.0) if losses else 1e9

    def suggest(self, trial_id):
        for _ in range(self.MAX_REDRAWS):
            config = super().suggest(trial_id)
            if config is None or config == Searcher.FINISHED:
                return config
            if self.rs_space.violated(from_hyperopt(self.rs_space, config)) is None:
                return config
            self.rejected += 1
            self._process_result(trial_id, {self.metric: math.nan})  # tell TPE: bad region
            del self._live_trial_mapping[trial_id]
        raise RuntimeError(f"HyperOpt proposed {self.MAX_REDRAWS} infeasible configs in a row")


def build_list(spec: Spec, space: Space, num_samples: int, points=(), evaluated=()) -> Searcher:
    """Given points first, then draws; points count towards num_samples (a grid runs every point)."""
    sampled = space.configs(num_samples, spec.search.seed)
    if not space.grid_names:
        sampled = sampled[:max(num_samples - len(points), 0)]
    return ListSearcher([dict(p) for p in points] + sampled, spec.metric.name, spec.metric.mode)


def build_hyperopt(spec: Spec, space: Space, num_samples: int, points=(), evaluated=()) -> Searcher:
    return ConstrainedHyperOpt(space, spec.metric.name, spec.metric.mode, spec.search.seed,
                               spec.search.n_initial_points, points, evaluated)


def starting_points(spec: Spec, space: Space, points=()) -> list[dict]:
    """The spec's search.points_to_evaluate, then the stage's own points. A point may give only some
    parameters (`{optimizer: adamw, lr: 0.001}`): the rest are drawn, seeded, as Ray's
    BasicVariantGenerator does, inside the constraints (validation made sure they can be)."""
    rng = np.random.default_rng(spec.search.seed)
    given = [space.sample_feasible(rng, point) or space.sample(rng, point) for point in spec.search.points_to_evaluate]
    return [*given, *(dict(p) for p in points)]


SEARCHERS = {"random": build_list, "grid": build_list, "hyperopt": build_hyperopt}


def build_searcher(spec: Spec, space: Space, num_samples: int, points=(), evaluated=()) -> Searcher:
    return SEARCHERS[spec.search.method](spec, space, num_samples, points, evaluated)


def trial_count(searcher: Searcher, num_samples: int, points=()) -> int:
    """Trials Tune should ask for: every listed config, or num_samples TPE suggestions."""
    if isinstance(searcher, ListSearcher):
        return len(searcher.configs)
    return max(num_samples, len(points))
