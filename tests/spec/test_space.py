"""Property tests of sampling: bounds, log spread, conditionals, constraints, derived values, and the
HyperOpt and Tune spaces against raysweep's own sampler."""
import math
from collections import Counter

import hyperopt.pyll.stochastic
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raysweep.spec import Space, load_spec
from raysweep.sweep.hyperopt_space import from_hyperopt, hyperopt_space
from tests.support import ROOT, make_spec, numeric_params

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def inside(p, v) -> bool:
    tol = 1e-9 * max(1.0, abs(p.max))
    return p.min - tol <= v <= p.max + tol


@FAST
@given(st.dictionaries(st.sampled_from("abcdefgh"), numeric_params(), min_size=1, max_size=5), st.integers(0, 2**31))
def test_every_sample_is_inside_its_bounds(params, seed):
    space = Space(make_spec(params))
    rng = np.random.default_rng(seed)
    for _ in range(50):
        config = space.sample(rng)
        assert config.keys() == params.keys()
        for name, value in config.items():
            p = space.params[name]
            assert inside(p, value), (p, value)
            if p.distribution in ("int", "logint"):
                assert type(value) is int
            if p.q is not None:
                assert math.isclose(value / p.q, round(value / p.q), abs_tol=1e-6)


def log_spread_error(samples, lo, hi) -> float:
    """Largest gap between the empirical CDF of log(samples) and the CDF of a log-uniform (a KS distance)."""
    logs = np.sort(np.log(samples))
    expected = (logs - math.log(lo)) / (math.log(hi) - math.log(lo))
    empirical = np.arange(1, len(logs) + 1) / len(logs)
    return float(np.max(np.abs(empirical - expected)))


@FAST
@given(st.floats(-8, 0), st.floats(2, 6), st.integers(0, 2**31))
def test_log_scale_parameters_spread_evenly_in_log_space(lo_exp, decades, seed):
    lo, hi = 10.0 ** lo_exp, 10.0 ** (lo_exp + decades)
    space = Space(make_spec({"lr": {"distribution": "loguniform", "min": lo, "max": hi}}))
    rng = np.random.default_rng(seed)
    samples = [space.sample(rng)["lr"] for _ in range(2000)]
    # KS critical value at alpha=1e-4 for n=2000 is ~0.047: sampling is log-uniform
    assert log_spread_error(samples, lo, hi) < 0.047
    # and the same check rejects linear sampling over the same range, so it can fail
    linear = rng.uniform(lo, hi, 2000)
    assert log_spread_error(linear, lo, hi) > 0.3


@st.composite
def conditional_trees(draw):
    """A random tree of choice parameters up to depth 3, each branch with its own children."""
    params, frontier = {}, [None]
    counter = iter(range(100))
    for _depth in range(3):
        next_frontier = []
        for parent in frontier:
            for _ in range(draw(st.integers(1 if parent is None else 0, 2))):
                name = f"p{next(counter)}"
                values = [f"{name}v{i}" for i in range(draw(st.integers(1, 3)))]
                param = {"values": values}
                if parent is not None:
                    pvals = params[parent]["values"]
                    chosen = draw(st.lists(st.sampled_from(pvals), min_size=1, max_size=len(pvals), unique=True))
                    param["when"] = {parent: chosen if len(chosen) > 1 else chosen[0]}
                params[name] = param
                next_frontier.append(name)
        frontier = next_frontier
    # a numeric leaf under the root choice
    root = next(iter(params))
    params["x"] = {"distribution": "uniform", "min": 0, "max": 1, "when": {root: params[root]["values"][0]}}
    return params


def expected_keys(space, config) -> set:
    keys = set()
    for name, p in space.params.items():  # parents first
        if p.parent is None or (p.parent in keys and config[p.parent] in p.parent_values):
            keys.add(name)
    return keys


@FAST
@given(conditional_trees(), st.integers(0, 2**31))
def test_conditional_parameters_appear_exactly_when_their_condition_holds(params, seed):
    space = Space(make_spec(params, search={"method": "random"}))
    rng = np.random.default_rng(seed)
    hp_space = hyperopt_space(space)
    for _ in range(30):
        for config in (space.sample(rng), from_hyperopt(space, hyperopt.pyll.stochastic.sample(hp_space, rng=rng))):
            assert set(config) == expected_keys(space, config)


@FAST
@given(st.integers(1, 12), st.integers(13, 64), st.integers(0, 2**31))
def test_constraints_always_hold_and_derived_values_are_computed(lo, hi, seed):
    spec = make_spec({"model_dim": {"distribution": "int", "min": lo, "max": hi},
                      "num_heads": {"values": [1, 2, 4]},
                      "base_lr": {"distribution": "loguniform", "min": 1e-4, "max": 1e-1},
                      "batch_size": {"values": [16, 64, 256]}},
                     constraints=["model_dim % num_heads == 0", "lr < 0.2"],
                     derived={"lr": "base_lr * batch_size / 32", "head_dim": "model_dim // num_heads",
                              "lr_sqrt": "base_lr * sqrt(batch_size / 32)"},
                     search={"method": "random", "seed": seed})
    space = Space(spec)
    configs = space.configs(num_samples=40, seed=seed)
    assert len(configs) == 40
    for config in configs:
        full = space.with_derived(config)
        assert full["model_dim"] % full["num_heads"] == 0
        assert math.isclose(full["lr"], full["base_lr"] * full["batch_size"] / 32)
        assert full["lr"] < 0.2
        assert full["head_dim"] == full["model_dim"] // full["num_heads"]
        assert math.isclose(full["lr_sqrt"], full["base_lr"] * math.sqrt(full["batch_size"] / 32))


def test_grid_enumerates_every_feasible_point_num_samples_times():
    spec = make_spec({"a": {"distribution": "grid", "values": [1, 2, 3]}, "b": {"distribution": "grid", "values": [2, 3]},
                      "c": {"distribution": "uniform", "min": 0, "max": 1}},
                     constraints=["a != b"], search={"method": "random"})
    configs = Space(spec).configs(num_samples=2, seed=0)
    pairs = Counter((c["a"], c["b"]) for c in configs)
    assert pairs == {(1, 2): 2, (1, 3): 2, (2, 3): 2, (3, 2): 2}


def test_method_grid_enumerates_choices_once_each():
    # nothing left to draw at a point: num_samples repeats would be the same seeded trial again
    spec = make_spec({"a": {"values": [1, 2]}, "b": {"values": ["x", "y", "z"]}}, search={"method": "grid"})
    configs = Space(spec).configs(num_samples=20, seed=0)
    assert sorted((c["a"], c["b"]) for c in configs) == [(a, b) for a in (1, 2) for b in "xyz"]


def test_same_seed_same_configs_other_seed_other_configs():
    space = Space(load_spec(ROOT / "search_spaces/digits_mlp.yaml"))
    assert space.configs(10, seed=3) == space.configs(10, seed=3)
    assert space.configs(10, seed=3) != space.configs(10, seed=4)


def support(samples, space):
    """What a sampler can produce: the set of key-sets, categorical values seen, numeric ranges."""
    keysets = {frozenset(s) for s in samples}
    values = {}
    for name, p in space.params.items():
        seen = [s[name] for s in samples if name in s]
        if p.is_categorical or p.distribution == "constant":
            values[name] = set(map(repr, seen))
        else:
            assert all(inside(p, v) for v in seen), name
            assert all(type(v) is int for v in seen) or p.distribution not in ("int", "logint"), name
            values[name] = "in bounds"
    return keysets, values


@pytest.mark.parametrize("file", ["digits_mlp.yaml", "char_lm.yaml", "digits_pbt.yaml", "digits_mlp_fine.yaml"])
def test_hyperopt_tune_and_raysweep_samplers_share_one_support(file):
    space = Space(load_spec(ROOT / "search_spaces" / file))
    rng = np.random.default_rng(0)
    n = 600
    ours = [space.sample(rng) for _ in range(n)]
    hp_space = hyperopt_space(space)
    hyperopt_samples = [from_hyperopt(space, hyperopt.pyll.stochastic.sample(hp_space, rng=rng)) for _ in range(n)]
    # each family's Tune domain (PBT resamples mutations from it), over the keys our draws have
    domains = {n: p.family.tune(p) for n, p in space.params.items()}
    draw = {n: (lambda d=d, p=p: p.family.clean(p, d.sample()) if hasattr(d, "sample")
                else d[int(rng.integers(len(d)))] if isinstance(d, list) else d) for (n, p), d in
            zip(space.params.items(), domains.values(), strict=True)}
    tune_samples = [{k: draw[k]() for k in config} for config in ours]
    reference = support(ours, space)
    assert support(hyperopt_samples, space) == reference
    assert support(tune_samples, space) == reference
