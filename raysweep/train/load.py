"""What a spec's `task` names, loaded without torch unless the task needs it: a user's training
function runs as a trial without raysweep importing torch into it."""
from __future__ import annotations

import importlib
import sys


def _task_class():
    """raysweep's Task, if anything imported it yet (an object cannot be a Task otherwise); () matches
    nothing in isinstance and issubclass."""
    base = sys.modules.get("raysweep.train.tasks.base")
    return base.Task if base else ()


def load_task(ref: str, search_dirs: tuple = ()):
    """A built-in Task by name, or `package.module:object` looked up on sys.path and then in search_dirs
    (the spec file's folder, so a task can sit beside its spec). The object is a Task (subclass or
    instance), or a plain function: a Ray Train training function `f(config)` that raysweep runs as
    each trial."""
    if ":" not in ref:
        from .tasks import BUILTIN

        if ref in BUILTIN:
            return BUILTIN[ref]()
    module_name, _, attr = ref.partition(":")
    for directory in search_dirs:
        if directory not in sys.path:
            sys.path.append(directory)
    obj = getattr(importlib.import_module(module_name), attr)
    if isinstance(obj, type) and issubclass(obj, _task_class()):
        return obj()
    if isinstance(obj, _task_class()) or is_function(obj):
        return obj
    raise TypeError(f"{ref} is a {type(obj).__name__}, neither a raysweep.train.Task nor a training function")


def is_function(obj) -> bool:
    return callable(obj) and not isinstance(obj, (type, _task_class()))
