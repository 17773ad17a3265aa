import math

import pytest

from raysweep.spec import SpecError, load_raw, load_spec
from tests.support import ROOT

HEAD = "name: t\ntask: digits_mlp\nmetric: {name: val_loss, mode: min}\n"


def test_scientific_notation_without_dot_is_a_number(write_spec):
    spec = load_spec(write_spec(HEAD + "parameters:\n  lr: {distribution: loguniform, min: 1e-5, max: 1E-1}\n"))
    assert spec.parameters["lr"].min == 1e-5 and spec.parameters["lr"].max == 0.1


def test_shorthands(write_spec):
    spec = load_spec(write_spec(HEAD + "parameters:\n  act: [relu, gelu]\n  depth: 3\n  w: {min: 1, max: 8}\n"
                                       "  p: {min: 0.0, max: 1}\n"))
    p = spec.parameters
    assert (p["act"].distribution, p["depth"].distribution, p["w"].distribution, p["p"].distribution) == (
        "choice", "constant", "int", "uniform")


def test_extends_merges_sections_and_replaces_parameters():
    spec = load_spec(ROOT / "search_spaces/digits_mlp_fine.yaml")
    base = load_spec(ROOT / "search_spaces/digits_mlp.yaml")
    assert spec.name == "digits_mlp_fine"
    assert spec.search.num_samples == 20 and spec.search.max_concurrent == base.search.max_concurrent == 4
    assert spec.stopping.max_epochs == 30 and spec.stopping.early_stopping == base.stopping.early_stopping
    assert "momentum" not in spec.parameters and "nesterov" not in spec.parameters  # removed with null
    assert spec.parameters["optimizer"].values == ["adam", "adamw"]
    assert spec.parameters["dropout"] == base.parameters["dropout"]  # inherited whole
    assert spec.derived == base.derived and spec.fixed == base.fixed


def test_error_in_base_file_points_into_the_base(write_spec, tmp_path):
    write_spec(HEAD + "parameters:\n  lr: {distribution: loguniform, min: 0.1, max: 0.01}\n", "base.yaml")
    child = write_spec("extends: base.yaml\nname: child\n", "child.yaml")
    with pytest.raises(SpecError) as e:
        load_spec(child)
    assert (e.value.file, e.value.line, e.value.path) == (str(tmp_path / "base.yaml"), 5, "parameters.lr.max")


def test_overrides_are_parsed_as_yaml(write_spec):
    spec = load_spec(write_spec(HEAD), ["search.num_samples=7", "fixed.lr=3e-4", "search.method=random"])
    assert spec.search.num_samples == 7 and spec.fixed["lr"] == 3e-4 and spec.search.method == "random"


def test_method_alias_and_goal(write_spec):
    spec = load_spec(write_spec("name: t\ntask: digits_mlp\nmethod: random\nsearch: {num_samples: 3}\n"
                                "metric: {name: acc, goal: maximize}\n"))
    assert spec.search.method == "random" and spec.metric.mode == "max"


def test_wandb_file_maps_every_key():
    spec = load_spec(ROOT / "search_spaces/wandb_digits.yaml")
    assert spec.name == "wandb-digits"
    assert spec.search.method == "hyperopt" and spec.search.num_samples == 12
    assert spec.metric.name == "val_loss" and spec.metric.mode == "min"
    assert (spec.scheduler.type, spec.scheduler.grace_period, spec.scheduler.reduction_factor) == ("asha", 2, 3)
    lr = spec.parameters["lr"]
    assert (lr.distribution, lr.min, lr.max) == ("loguniform", 0.0001, 0.1)
    assert spec.parameters["hidden"].distribution == "int"


def test_wandb_log_uniform_bounds_are_exponents(write_spec):
    raw, _ = load_raw(write_spec("method: random\ntask: digits_mlp\nproject: p\nmetric: {name: loss, target: 0.1}\n"
                                 "early_terminate: {type: hyperband, max_iter: 27, s: 2}\n"
                                 "parameters:\n  lr: {distribution: log_uniform, min: -9.21, max: -2.3}\n"))
    lr = raw["parameters"]["lr"]
    assert lr["distribution"] == "loguniform"
    assert math.isclose(lr["min"], math.exp(-9.21)) and math.isclose(lr["max"], math.exp(-2.3))
    assert raw["tracking"] == {"experiment": "p"} and raw["stopping"] == {"target": 0.1, "max_epochs": 27}
    assert raw["metric"]["goal"] == "minimize"  # W&B's default goal
    assert raw["scheduler"] == {"type": "asha", "grace_period": 3, "reduction_factor": 3, "max_t": 27}


def test_every_example_round_trips_through_its_payload():
    from raysweep.spec import Spec

    for file in sorted((ROOT / "search_spaces").glob("*.yaml")):
        spec = load_spec(file)
        assert Spec.model_validate(spec.payload()) == spec, file.name


def test_pbt_checkpoints_at_every_perturbation_unless_told_otherwise(write_spec):
    base = ("name: p\ntask: digits_mlp\nmetric: {name: val_loss, mode: min}\n"
            "parameters:\n  lr: {distribution: loguniform, min: 0.001, max: 0.1}\n")
    pbt = ("scheduler:\n  type: pbt\n  perturbation_interval: 3\n"
           "  mutations:\n    lr: {distribution: loguniform, min: 0.001, max: 0.1}\n")
    assert load_spec(write_spec(base + pbt)).fixed["checkpoint_every"] == 3
    assert load_spec(write_spec(base + pbt + "fixed: {checkpoint_every: 1}\n")).fixed["checkpoint_every"] == 1
    assert "checkpoint_every" not in load_spec(write_spec(base)).fixed  # other schedulers: time-based only


def test_set_null_removes_a_key_and_a_refusal_names_the_set_that_fixes_it():
    from raysweep.spec import SpecError

    file = ROOT / "search_spaces" / "digits_mlp.yaml"
    with pytest.raises(SpecError) as refused:
        load_spec(file, ["scheduler.type=fifo"])
    assert str(refused.value).endswith("'grace_period' does not apply to scheduler 'fifo' (it is for: asha, median); "
                                       "remove it, or add --set scheduler.grace_period=null")
    spec = load_spec(file, ["scheduler.type=fifo", "scheduler.grace_period=null", "scheduler.reduction_factor=null"])
    assert spec.scheduler.type == "fifo" and "grace_period" not in spec.scheduler.model_fields_set
