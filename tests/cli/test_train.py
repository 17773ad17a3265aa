"""`raysweep train`: one config of a spec, trained as a trial would be, reproducible from its values."""
import re

from raysweep.train import checkpoint as ckpt
from tests.support import run_cli

SETS = ["--set", "optimizer=adamw", "--set", "base_lr=3e-3", "--set", "batch_size=64", "--set", "dropout=0.2"]


def epoch_lines(stdout):
    # everything but the wall-clock field
    return [re.sub(r" epoch_seconds \S+", "", line) for line in stdout.splitlines() if line.startswith("epoch ")]


def test_train_reproduces_a_trial(tmp_path):
    first = run_cli("train", "search_spaces/digits_mlp.yaml", *SETS, "--epochs", "3", "--test", "--out", tmp_path / "a")
    assert first.returncode == 0, first.stderr
    config_line = first.stdout.splitlines()[0]
    assert config_line.startswith("config: ") and "lr: 0.006" in config_line  # derived: 3e-3 * 64 / 32
    lines = epoch_lines(first.stdout)
    assert [line.split()[1] for line in lines] == ["1", "2", "3"]
    assert "status completed" in lines[-1] and "test_accuracy" in lines[-1]
    assert ckpt.load(tmp_path / "a")["config"]["lr"] == 0.006
    again = run_cli("train", "search_spaces/digits_mlp.yaml", *SETS, "--epochs", "3", "--test", "--out", tmp_path / "b")
    assert epoch_lines(again.stdout) == lines and again.stdout.splitlines()[0] == config_line


def test_train_rejects_bad_values_in_one_line():
    cases = [(["--set", "optimizer=adamm"], "--set optimizer: 'adamm' is not a valid optimizer (did you mean 'adam'?)"),
             (["--set", "hiddn=3"], "--set hiddn: not a parameter or setting (did you mean 'hidden'?)"),
             (["--set", "base_lr=0.1", "--set", "batch_size=512"], "breaks the constraint `lr <= 0.5`"),
             (["--set", "batch_size=20", "--set", "grad_accum=3"], "use a multiple of 3")]
    for sets, needle in cases:
        result = run_cli("train", "search_spaces/digits_mlp.yaml", *sets, "--epochs", "1")
        assert result.returncode == 2, (sets, result.stderr)
        assert needle in result.stderr and len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_train_records_divergence_instead_of_crashing(tmp_path):
    result = run_cli("train", "search_spaces/digits_mlp.yaml", "--set", "optimizer=sgd", "--set", "momentum=0.99",
                     "--set", "lr=10", "--set", "batch_size=16", "--epochs", "2", "--out", tmp_path / "d")
    assert result.returncode == 0, result.stderr
    assert "status diverged" in result.stdout and "diverged: loss" in result.stdout
