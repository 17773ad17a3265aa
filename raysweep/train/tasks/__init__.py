from ..load import is_function, load_task
from .base import Splits, Task, get_task
from .char_lm import CharLM
from .digits import DigitsMLP

BUILTIN = {"digits_mlp": DigitsMLP, "char_lm": CharLM}

__all__ = ["Task", "Splits", "get_task", "load_task", "is_function", "BUILTIN", "DigitsMLP", "CharLM"]
