"""W&B sweep files as W&B defines them, each with a training function as its task: every one validates,
and every parameter samples inside the range W&B itself would draw from (its own definitions, computed
here from the W&B file, not from raysweep's conversion)."""
import math

import hyperopt
import numpy as np
import pytest
import yaml

from raysweep.spec import Space, load_spec
from raysweep.sweep.hyperopt_space import from_hyperopt, hyperopt_space
from tests.support import ROOT, run_cli

CORPUS = sorted((ROOT / "tests/spec/wandb_corpus").glob("*.yaml"))


def test_every_file_validates_and_w_and_b_launch_keys_are_named_once_each_file():
    result = run_cli("validate", *[p.relative_to(ROOT) for p in CORPUS])
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok: task user_fn:train") == len(CORPUS)
    notes = [line for line in result.stderr.splitlines() if "not used" in line]
    assert notes == ["raysweep: tests/spec/wandb_corpus/all_distributions.yaml: W&B's program, command, entity "
                     "not used: raysweep runs task user_fn:train itself"]


def flat_wandb_params(params: dict, prefix: str = "") -> dict:
    out = {}
    for name, p in params.items():
        if "parameters" in p:
            out.update(flat_wandb_params(p["parameters"], f"{prefix}{name}."))
        else:
            out[prefix + name] = p
    return out


def inside_wandbs_range(p: dict, value) -> bool:
    """W&B's definition of each distribution (sweep configuration docs), with its inference rules."""
    dist = p.get("distribution") or ("constant" if "value" in p else "categorical" if "values" in p else
                                     "int_uniform" if isinstance(p["min"], int) and isinstance(p["max"], int)
                                     else "uniform")
    q = p.get("q", 1)
    on_grid = abs(value / q - round(value / q)) < 1e-9 if dist.startswith("q_") else True
    if dist == "constant":
        return value == p["value"] and type(value) is type(p["value"])
    if dist == "categorical":
        return any(v == value and type(v) is type(value) for v in p["values"])
    if dist == "int_uniform":
        return isinstance(value, int) and p["min"] <= value <= p["max"]
    if dist in ("uniform", "log_uniform_values"):
        return p["min"] <= value <= p["max"]
    if dist == "log_uniform":
        return math.exp(p["min"]) <= value <= math.exp(p["max"]) * (1 + 1e-12)
    if dist in ("q_uniform", "q_log_uniform_values"):  # round(x / q) * q, x in [min, max]
        return on_grid and round(p["min"] / q) * q - 1e-9 <= value <= round(p["max"] / q) * q + 1e-9
    if dist == "q_log_uniform":
        return on_grid and round(math.exp(p["min"]) / q) * q - 1e-9 <= value <= round(math.exp(p["max"]) / q) * q + 1e-9
    if dist in ("normal", "q_normal"):
        return on_grid and math.isfinite(value)
    raise AssertionError(dist)


@pytest.mark.parametrize("path", CORPUS, ids=lambda p: p.stem)
def test_every_sample_is_one_w_and_b_could_draw(path):
    wandb_params = flat_wandb_params(yaml.safe_load(path.read_text())["parameters"])
    space = Space(load_spec(path))
    assert set(space.params) == set(wandb_params)
    rng = np.random.default_rng(0)
    hp_space = hyperopt_space(space)
    samples = [space.sample(rng) for _ in range(300)]  # random and grid
    samples += [from_hyperopt(space, hyperopt.pyll.stochastic.sample(hp_space, rng=rng)) for _ in range(300)]  # bayes
    for config in samples:
        assert config.keys() == wandb_params.keys()
        for name, value in config.items():
            assert inside_wandbs_range(wandb_params[name], value), (name, value, wandb_params[name])
    for name, p in wandb_params.items():  # every value of a choice is drawn, dict and list values intact
        if "values" in p:
            drawn = [c[name] for c in samples]
            assert all(any(d == v and type(d) is type(v) for d in drawn) for v in p["values"]), name


def test_early_terminate_forms_become_asha_counted_in_reports():
    forms = {p.stem: load_spec(p).scheduler for p in CORPUS if p.stem.startswith("early_")}
    assert {k: (s.type, s.grace_period, s.reduction_factor, s.max_t) for k, s in forms.items()} == {
        "early_min_iter": ("asha", 3, 3, None),
        "early_max_iter_s": ("asha", 3, 3, 27),   # W&B: max_iter 27, s 2 -> brackets 9, 3
        "early_both": ("asha", 2, 2, 12),         # both given: neither is dropped
    }
    assert load_spec(ROOT / "tests/spec/wandb_corpus/early_both.yaml").stopping.max_epochs == 12


def test_a_min_iter_beyond_the_epochs_names_the_users_key(write_spec):
    result = run_cli("validate", write_spec("method: random\ntask: digits_mlp\nmetric: {name: val_loss}\n"
                                            "early_terminate: {type: hyperband, min_iter: 27}\n"
                                            "parameters: {lr: {min: 0.001, max: 0.1}}\n"))
    assert result.returncode == 2 and "grace_period" not in result.stderr
    assert "early_terminate.min_iter: min_iter 27 exceeds the 20 epochs a trial runs" in result.stderr


def test_an_epochs_parameter_of_a_task_points_at_the_epoch_budget(write_spec):
    result = run_cli("validate", write_spec("method: random\ntask: digits_mlp\nmetric: {name: val_loss}\n"
                                            "parameters: {epochs: {values: [5, 10]}}\n"))
    assert result.returncode == 2 and "did you mean" not in result.stderr
    assert "set stopping.max_epochs" in result.stderr
