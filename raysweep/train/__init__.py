"""Training: the loop a trial runs, optimizers, schedules, devices, checkpoints and tasks.
No Ray and no MLflow in here: the loop reports through a callable it is given. Names load on first
use, so what needs no torch (Run, a user's training function) does not import it."""
from importlib import import_module

_WHERE = {"train": "loop", "Result": "loop", "ConfigError": "run", "evaluate": "loop", "Run": "run",
          "Task": "tasks", "Splits": "tasks", "get_task": "tasks"}
__all__ = list(_WHERE)


def __getattr__(name):
    if name in _WHERE:
        return getattr(import_module(f".{_WHERE[name]}", __name__), name)
    raise AttributeError(name)
