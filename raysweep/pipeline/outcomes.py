"""What each finished stage of the pipeline hands on: one frozen type per kind of stage. They are
saved in state.json (a rerun reads them back), given to the caller's hook, and read by the CLI and
best_config.yaml, always by attribute."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields


@dataclass(frozen=True)
class LrTestOutcome:
    file: str                         # lr_range.json: the curves and suggestions
    param: str = "lr"                 # the parameter whose range it set
    range: tuple | None = None        # (low, high) for the coarse stage, or None: the spec's range
    note: str = ""


@dataclass(frozen=True)
class SearchOutcome:
    path: str                         # the stage's Tune folder (results.json)
    trials: int
    best: float
    best_config: dict
    parameters: dict = field(default_factory=dict)  # the space it searched, as spec data


@dataclass(frozen=True)
class SeedsOutcome:
    file: str                         # seeds.json: every config's per-seed values and statistics
    winner: int
    stable: bool                      # the winner was best on every seed
    mean: float | None
    std: float | None
    ci95: tuple | None
    chosen: dict = field(default_factory=dict)  # the winner's parameters and its best seed
    path: str | None = None
    checkpoint: str | None = None     # the chosen run's last, with its best epoch's weights: the final stage tests it


BASELINE_KEY = "raysweep_baseline"  # marks the final stage's untuned trial in its config


@dataclass(frozen=True)
class FinalOutcome:
    path: str
    best_config: str                  # best_config.yaml
    config: dict
    value: float
    test: dict                        # test_* metrics
    baseline_value: float | None = None  # the untuned baseline's, trained beside it (none: not run)
    baseline_status: str | None = None
    baseline_test: dict = field(default_factory=dict)

    def versus(self, metric: str, mode: str) -> str:
        """What tuning bought: the untuned baseline against the chosen config, on the test split."""
        key = "test_" + metric.removeprefix("val_")
        tuned, untuned = self.test.get(key), self.baseline_test.get(key)
        line = f"untuned baseline ({self.baseline_status}, the same seed): {metric} " + (
            "none" if self.baseline_value is None else f"{self.baseline_value:.4g}")
        if tuned is None or untuned is None or not math.isfinite(untuned):
            return line
        gain = (untuned - tuned if mode == "min" else tuned - untuned) / abs(untuned) if untuned else 0.0
        return (f"{line}, {key} {untuned:.4g}; tuned {tuned:.4g}, "
                f"{abs(gain):.1%} {'better' if gain >= 0 else 'worse'}")


Outcome = LrTestOutcome | SearchOutcome | SeedsOutcome | FinalOutcome
KINDS = {"lr_range_test": LrTestOutcome, "coarse": SearchOutcome, "fine": SearchOutcome, "seeds": SeedsOutcome,
         "final": FinalOutcome}


def to_state(outcome: Outcome) -> dict:
    return asdict(outcome)


def from_state(stage: str, data: dict) -> Outcome:
    kind = KINDS[stage]
    names = {f.name for f in fields(kind)}
    data = {k: tuple(v) if k in ("range", "ci95") and v is not None else v for k, v in data.items() if k in names}
    return kind(**data)
