"""One voice: results on stdout, diagnostics only with -v (on stderr), nothing else."""
from tests.support import run_cli


def test_diagnostics_are_quiet_by_default_and_shown_with_v():
    quiet = run_cli("validate", "search_spaces/digits_mlp.yaml")
    loud = run_cli("-v", "validate", "search_spaces/digits_mlp.yaml")
    assert quiet.returncode == loud.returncode == 0
    assert quiet.stdout == loud.stdout and quiet.stdout.startswith("search_spaces/digits_mlp.yaml: ok:")
    assert quiet.stderr == ""
    assert "raysweep.spec.load: search_spaces/digits_mlp.yaml: 10 parameters" in loud.stderr
