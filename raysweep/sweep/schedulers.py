"""Schedulers: whether a running trial goes on. One builder per type, registered by name."""
from __future__ import annotations

from ray.tune.schedulers import (
    ASHAScheduler,
    FIFOScheduler,
    HyperBandScheduler,
    MedianStoppingRule,
    PopulationBasedTraining,
    TrialScheduler,
)

from ..spec import Spec

# ASHA's rungs and the median rule count a trial's epochs, not its reports (Tune's training_iteration): a
# trial that goes on from an earlier stage's checkpoint (the fine stage continuing a coarse trial at
# epoch 3) is judged against the others' epoch 3. Synchronous HyperBand reads its time from every result,
# a watchdog's report before any epoch included, so it keeps Tune's count and gets no warm starts.
EPOCH = "epoch"
WARM_STARTS = ("fifo", "asha", "median")


def build_fifo(spec: Spec, epochs: int):
    return FIFOScheduler()


def build_asha(spec: Spec, epochs: int):
    s = spec.scheduler
    return ASHAScheduler(time_attr=EPOCH, max_t=min(s.max_t or epochs, epochs),
                         grace_period=min(s.grace_period, epochs), reduction_factor=s.reduction_factor,
                         brackets=s.brackets)


def build_hyperband(spec: Spec, epochs: int):
    s = spec.scheduler
    return HyperBandScheduler(time_attr="training_iteration", max_t=min(s.max_t or epochs, epochs),
                              reduction_factor=s.reduction_factor)


class MedianStopping(MedianStoppingRule):
    """Tune's rule, except that a trial it cannot judge yet (too few others have reached its epoch) goes
    on. Tune's pauses it whenever trials are pending; a trial paused between its checkpoints started over
    from its first epoch, and its record ended at the epoch it reached the second time."""

    def _on_insufficient_samples(self, tune_controller, trial, time):
        return TrialScheduler.CONTINUE


def build_median(spec: Spec, epochs: int):
    s = spec.scheduler
    return MedianStopping(time_attr=EPOCH, grace_period=s.grace_period,
                          min_samples_required=s.min_samples_required)


class FeasibleExplore:
    """PBT's explore step, kept inside the spec's constraints: a perturbed config that breaks one has
    its mutated keys re-drawn from their mutation distributions."""

    TRIES = 200

    def __init__(self, spec: Spec):
        self.payload = spec.payload()

    def __call__(self, config: dict) -> dict:
        import numpy as np

        from ..spec import Space
        from .trainable import suggestion

        spec = Spec.model_validate(self.payload)
        space, rng = Space(spec), np.random.default_rng()
        for _ in range(self.TRIES):
            flat = suggestion(config, space, False)
            if space.violated({k: v for k, v in flat.items() if k in space.params}) is None:
                return config
            for name, p in spec.scheduler.mutations.items():
                config[name] = p.family.sample(p, rng)
        return config


def build_pbt(spec: Spec, epochs: int):
    s = spec.scheduler
    mutations = {name: p.family.tune(p) for name, p in s.mutations.items()}
    return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=s.perturbation_interval,
                                   hyperparam_mutations=mutations, resample_probability=s.resample_probability,
                                   quantile_fraction=s.quantile_fraction, custom_explore_fn=FeasibleExplore(spec))


SCHEDULERS = {"fifo": build_fifo, "asha": build_asha, "hyperband": build_hyperband, "median": build_median,
              "pbt": build_pbt}


def build_scheduler(spec: Spec, epochs: int):
    return SCHEDULERS[spec.scheduler.type](spec, epochs)
