"""The Ray side: resources, trials as in-process loops or DDP jobs, searchers, schedulers, Tuner."""
from .stage import StageResult, TrialRecord, check_resources, run_stage

__all__ = ["run_stage", "check_resources", "StageResult", "TrialRecord"]
