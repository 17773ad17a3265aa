"""Schedulers: whether a running trial goes on. One builder per type, registered by name."""
from __future__ import annotations

from ray.tune.schedulers import (ASHAScheduler, FIFOScheduler, HyperBandScheduler, MedianStoppingRule,
                                 PopulationBasedTraining)

from ..spec import Spec
from ..spec.space import tune_domain


def build_fifo(spec: Spec, epochs: int):
    return FIFOScheduler()


def build_asha(spec: Spec, epochs: int):
    s = spec.scheduler
    return ASHAScheduler(time_attr="training_iteration", max_t=min(s.max_t or epochs, epochs),
                         grace_period=min(s.grace_period, epochs), reduction_factor=s.reduction_factor,
                         brackets=s.brackets)


def build_hyperband(spec: Spec, epochs: int):
    s = spec.scheduler
    return HyperBandScheduler(time_attr="training_iteration", max_t=min(s.max_t or epochs, epochs),
                              reduction_factor=s.reduction_factor)


def build_median(spec: Spec, epochs: int):
    s = spec.scheduler
    return MedianStoppingRule(time_attr="training_iteration", grace_period=s.grace_period,
                              min_samples_required=s.min_samples_required)


def build_pbt(spec: Spec, epochs: int):
    s = spec.scheduler
    mutations = {name: (p.values if p.is_categorical else tune_domain(p)) for name, p in s.mutations.items()}
    return PopulationBasedTraining(time_attr="training_iteration", perturbation_interval=s.perturbation_interval,
                                   hyperparam_mutations=mutations, resample_probability=s.resample_probability,
                                   quantile_fraction=s.quantile_fraction)


SCHEDULERS = {"fifo": build_fifo, "asha": build_asha, "hyperband": build_hyperband, "median": build_median,
              "pbt": build_pbt}


def build_scheduler(spec: Spec, epochs: int):
    return SCHEDULERS[spec.scheduler.type](spec, epochs)
