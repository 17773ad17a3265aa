"""The Ray side: resources, trials as in-process loops or DDP jobs, searchers, schedulers, Tuner."""
from .stage import StageResult, TrialRecord, check_resources, run_stage, stage_dir

__all__ = ["run_stage", "stage_dir", "check_resources", "StageResult", "TrialRecord"]
