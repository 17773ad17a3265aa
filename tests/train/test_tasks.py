"""The built-in tasks' data: digits read from the user's cache after the first time, equal to
scikit-learn's, with scikit-learn no longer imported by the trial processes that read it."""
import json
import subprocess
import sys

from tests.support import ROOT

LOAD = """
import json, sys
from raysweep.train.tasks.digits import _splits
(x, y), _, _ = _splits()
print(json.dumps({"sklearn": "sklearn" in sys.modules, "sum": float(x.sum()), "labels": y[:50].tolist()}))
"""


def test_digits_come_from_the_cache_after_the_first_load(tmp_path):
    def load():
        out = subprocess.run([sys.executable, "-c", LOAD], cwd=ROOT, env={"XDG_CACHE_HOME": str(tmp_path),
                             "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, check=True).stdout
        return json.loads(out.splitlines()[-1])

    first, again = load(), load()
    assert (tmp_path / "raysweep" / "digits-v1.npz").exists()
    assert first["sklearn"] and not again["sklearn"]  # the second process never imported scikit-learn
    assert (first["sum"], first["labels"]) == (again["sum"], again["labels"])  # the same split, the same values


def test_the_driver_names_and_checks_the_built_in_tasks_without_importing_torch():
    # torch cost every command 0.8 s of its start (each restart of an interrupted pipeline too)
    code = ("import sys; from raysweep.cli import load_checked; import raysweep.session, raysweep.pipeline.runner, "
            "raysweep.pipeline.lr_test, raysweep.report; "
            "[load_checked(f) for f in ('search_spaces/digits_mlp.yaml', 'search_spaces/char_lm.yaml')]; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "False", out.stdout + out.stderr
