"""The Ray side: resources, trials as in-process loops or DDP jobs, searchers, schedulers, Tuner."""

__all__ = ["run_stage", "retry_failed", "stage_dir", "check_resources", "StageResult", "TrialRecord"]


def __getattr__(name):  # Ray loads with the stage, not with `raysweep validate`'s error types
    if name in __all__:
        from . import stage

        return getattr(stage, name)
    raise AttributeError(name)
