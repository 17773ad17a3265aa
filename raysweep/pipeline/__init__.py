"""The staged pipeline: LR range test -> coarse -> fine (narrowed) -> multi-seed re-runs -> final."""
from .narrow import narrow_param, narrow_spec
from .runner import STAGES, Pipeline, PipelineError
from .seeds import summarize

__all__ = ["Pipeline", "PipelineError", "STAGES", "narrow_spec", "narrow_param", "summarize"]
