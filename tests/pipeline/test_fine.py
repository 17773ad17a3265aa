"""The fine stage's scheduler: its first cut comes no earlier than the epochs the coarse stage ranked at."""
import pytest

from raysweep.pipeline.runner import Pipeline
from raysweep.spec import load_spec
from raysweep.sweep.schedulers import build_asha
from raysweep.sweep.stage import TrialRecord
from tests.support import ROOT

COARSE_BEST = TrialRecord("a", {"model_dim": 64, "num_heads": 4, "num_layers": 2, "dropout": 0.1, "lr": 0.005,
                                "weight_decay": 0.01, "warmup_steps": 20}, "completed", 2.6, 2)


def fine(tmp_path, *sets, pool=(COARSE_BEST,)):
    spec = load_spec(ROOT / "search_spaces" / "char_lm_small.yaml", list(sets))  # ASHA, grace 1; coarse 2 of 4 epochs
    return Pipeline(spec, str(tmp_path), str(tmp_path), run_stage=None).fine_spec(spec, list(pool))


def rungs(spec) -> list[float]:
    return sorted(r[0] for r in build_asha(spec, spec.stopping.max_epochs)._brackets[0]._rungs)


def test_asha_in_the_fine_stage_first_cuts_after_the_coarse_stages_epochs(tmp_path):
    assert rungs(load_spec(ROOT / "search_spaces" / "char_lm_small.yaml")) == [1, 3]  # the spec's own ASHA
    spec = fine(tmp_path)
    assert spec.scheduler.grace_period == 2 and rungs(spec) == [2]
    assert fine(tmp_path, "stages.coarse.epochs=3").scheduler.grace_period == 3
    assert fine(tmp_path, "stages.coarse.epochs=3", "stages.fine.epochs=2").scheduler.grace_period == 2  # never past its end
    assert fine(tmp_path, "scheduler.grace_period=3").scheduler.grace_period == 3  # a later cut the spec asks for stays


@pytest.mark.parametrize("sets, pool, grace", [
    ([], (), 1),  # no coarse stage ranked anything: the spec's scheduler as it is
    (["scheduler={type: median, grace_period: 1}"], (COARSE_BEST,), 2),
])
def test_the_rule_needs_a_coarse_ranking_and_holds_for_median_stopping(tmp_path, sets, pool, grace):
    spec = fine(tmp_path, *sets, pool=pool)
    assert spec.scheduler.grace_period == grace


def test_other_schedulers_are_left_as_the_spec_has_them(tmp_path):
    spec = fine(tmp_path, "scheduler={type: fifo}")
    assert spec.scheduler.type == "fifo" and "grace_period" not in spec.scheduler.model_fields_set
