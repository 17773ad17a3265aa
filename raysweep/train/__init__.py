"""Training: the loop a trial runs, optimizers, schedules, devices, checkpoints and tasks.
No Ray and no MLflow in here: the loop reports through a callable it is given."""
from .loop import ConfigError, Result, Run, evaluate, train
from .tasks import Splits, Task, get_task

__all__ = ["train", "Run", "Result", "ConfigError", "evaluate", "Task", "Splits", "get_task"]
