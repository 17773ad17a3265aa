"""MLflow: run hierarchy, batched writes, resume-safe logging. Handed to the sweep as callbacks."""
import os

from .mlflow_callback import MlflowTracker, find_or_create_run, get_experiment
from .writer import BatchWriter


def tracking_uri(spec, runs_dir: str) -> str:
    """The spec's URI, else MLFLOW_TRACKING_URI, else an sqlite file under the run directory."""
    return spec.tracking.uri or os.environ.get("MLFLOW_TRACKING_URI") or \
        f"sqlite:///{os.path.abspath(os.path.join(runs_dir, 'mlflow.db'))}"


__all__ = ["MlflowTracker", "BatchWriter", "tracking_uri", "find_or_create_run", "get_experiment"]
