"""The sweep file: loading, validation, and the search spaces built from it. No Ray cluster needed."""
from .errors import SpecError
from .expr import Expr, ExprError
from .load import load_raw, load_spec
from .model import Param, Spec
from .settings import TRAIN_KEYS, TrainSettings
from .space import Space

__all__ = ["SpecError", "Expr", "ExprError", "load_raw", "load_spec", "Param", "Spec", "Space",
           "TrainSettings", "TRAIN_KEYS"]
