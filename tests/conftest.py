import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def run_cli(*args, cwd=ROOT, timeout=120):
    """Run `raysweep ARGS` as a user would: a separate process, output captured."""
    return subprocess.run([sys.executable, "-m", "raysweep", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture
def write_spec(tmp_path):
    """Write a spec file from text and return its path."""
    def write(text: str, name: str = "spec.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text)
        return path
    return write
