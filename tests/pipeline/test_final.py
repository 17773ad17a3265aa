"""The final stage's untuned baseline: which config it trains, and how its line reads."""
import pytest

from raysweep.pipeline.outcomes import BASELINE_KEY, FinalOutcome
from raysweep.pipeline.runner import Pipeline
from raysweep.spec import Space, load_spec
from raysweep.spec.settings import TrainSettings
from raysweep.sweep.trainable import trial_config
from tests.support import ROOT


def baseline(tmp_path, file, *sets):
    spec = load_spec(ROOT / "search_spaces" / file, list(sets))
    return spec, Pipeline(spec, str(tmp_path), str(tmp_path), run_stage=None).baseline({"base_lr": 0.02, "seed": 3})


def test_the_baseline_is_the_specs_fixed_settings_with_the_defaults_on_the_chosen_seed(tmp_path):
    spec, config = baseline(tmp_path, "digits_mlp.yaml")
    # searched trainer settings at their defaults (conditional ones such as beta2 left out), nothing else
    assert config == {"optimizer": "adamw", "weight_decay": 0.0, "batch_size": 32, "seed": 3, BASELINE_KEY: True}
    seen = trial_config(Space(spec), config)  # what the trainer is given
    assert "lr" not in seen and "base_lr" not in seen and "hidden" not in seen  # the derived lr needs base_lr
    settings = TrainSettings.model_validate(seen)
    assert (settings.optimizer, settings.lr, settings.weight_decay, settings.batch_size) == ("adamw", 1e-3, 0.0, 32)
    assert settings.schedule == "cosine" and settings.seed == 3  # the spec's fixed settings still apply


def test_a_mapping_sets_the_baseline_and_false_or_a_function_task_turns_it_off(tmp_path):
    spec, config = baseline(tmp_path, "digits_mlp.yaml", "stages.final.baseline={optimizer: sgd, base_lr: 0.1}")
    assert config == {"optimizer": "sgd", "weight_decay": 0.0, "batch_size": 32, "base_lr": 0.1, "seed": 3,
                      BASELINE_KEY: True}
    assert trial_config(Space(spec), config)["lr"] == pytest.approx(0.1)  # base_lr * batch_size / 32, batch 32
    assert baseline(tmp_path, "digits_mlp.yaml", "stages.final.baseline=false")[1] is None
    assert baseline(tmp_path, "wine_train_fn.yaml")[1] is None  # raysweep does not know a function's defaults
    assert baseline(tmp_path, "wine_train_fn.yaml", "stages.final.baseline={lr: 0.01}")[1][BASELINE_KEY]


@pytest.mark.parametrize("mode, tuned, untuned, words", [
    ("min", 2.4, 3.0, "tuned 2.4, 20.0% better"), ("max", 0.9, 0.75, "tuned 0.9, 20.0% better"),
    ("max", 0.7, 0.8, "tuned 0.7, 12.5% worse")])
def test_the_line_compares_the_test_metric_in_the_metrics_direction(mode, tuned, untuned, words):
    metric = "val_loss" if mode == "min" else "val_accuracy"
    key = metric.replace("val_", "test_")
    outcome = FinalOutcome("p", "b", {}, 1.0, {key: tuned}, 1.1, "completed", {key: untuned})
    line = f"untuned baseline (completed, the same seed): {metric} 1.1, {key} {untuned:.4g}; {words}"
    assert outcome.versus(metric, mode) == line
    diverged = FinalOutcome("p", "b", {}, 1.0, {key: tuned}, None, "diverged", {key: float("nan")})
    assert diverged.versus(metric, mode) == f"untuned baseline (diverged, the same seed): {metric} none"
